#!/usr/bin/env python3
"""Soak: mixed load on one `allot serve` for N minutes while its memory is
sampled, to show that nothing grows with traffic.

Starts `allot serve` on DATABASE_URL (mail to files, a 100-key-per-second
restock so orders keep being fulfilled), registers a local receiver as a
merchant endpoint for every event, and then, from THREADS threads until
the time is up, mixes:
  - coupon claims (new users on a coupon with a large stock, and repeats),
  - webhook orders (new order ids, and duplicates),
  - Stripe Checkout events (paid sessions, duplicates, refunds), signed,
  - payment events for any provider, signed per Standard Webhooks,
  - /v1/stats reads,
while merchant webhooks are delivered to the receiver. Every 10 s it reads
the server's resident set size (VmRSS) from /proc. At the end it prints one
JSON object: the RSS at start (after a one-minute warm-up), at the end, the
maximum, the slope per minute (least squares over the samples after the
warm-up) and that slope as a percentage of the start, with the request
counts and errors. No dependencies beyond Python's standard library.

    scripts/soak.py BINARY DATABASE_URL [MINUTES] [THREADS]
"""
import base64, hashlib, hmac, http.client, http.server, json, os, random
import subprocess, sys, tempfile, threading, time

binary, url = os.path.abspath(sys.argv[1]), sys.argv[2]
minutes = float(sys.argv[3]) if len(sys.argv) > 3 else 10
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 8
WARMUP = min(60.0, minutes * 60 / 5)

work = tempfile.mkdtemp(prefix="allot-soak-")
stripe_secret = "whsec_soak_stripe"
payment_key = os.urandom(32)
payment_secret = "whsec_" + base64.b64encode(payment_key).decode()
env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOT_")}
env.update(
    ALLOT_DATABASE_URL=url, ALLOT_LOG_FORMAT="json", ALLOT_LISTEN="127.0.0.1:0",
    ALLOT_WEBHOOK_TOKEN="soak-token", ALLOT_ADMIN_TOKEN="soak-admin",
    ALLOT_ADMIN_EMAIL="admin@soak.test", ALLOT_MAIL_DIR=os.path.join(work, "mail"),
    ALLOT_STRIPE_WEBHOOK_SECRET=stripe_secret, ALLOT_PAYMENT_WEBHOOK_SECRET=payment_secret,
    ALLOT_WORKER_POLL_INTERVAL="200ms", ALLOT_LOW_STOCK_THRESHOLD="0",
    RUST_LOG="info,sqlx=warn",
)

received = {"n": 0}


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        received["n"] += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()


def run(*args):
    return subprocess.run([binary, *args], env=env, cwd=work, check=True,
                          capture_output=True, text=True).stdout


def import_keys(n, sku="soak-101"):
    path = os.path.join(work, f"keys-{time.time_ns()}.txt")
    with open(path, "w") as f:
        f.write("\n".join(f"SOAK-{time.time_ns()}-{i}" for i in range(n)))
    run("keys", "import", path, "--sku", sku)


run("migrate")
import_keys(5000)
run("coupons", "create", "SOAK", "100000000")
run("endpoints", "add", f"http://127.0.0.1:{receiver.server_address[1]}/hook")
serve = subprocess.Popen([binary, "serve"], env=env, cwd=work, stderr=subprocess.PIPE, text=True)
addr = None
for line in serve.stderr:
    if json.loads(line).get("message") == "listening":
        addr = json.loads(line)["addr"]
        break
threading.Thread(target=lambda: [None for _ in serve.stderr], daemon=True).start()
host, port = addr.rsplit(":", 1)


def rss_kib():
    """VmRSS and its parts: anonymous memory (the heap: what could leak),
    file pages (the binary's code, faulted in as code paths first run) and
    shared memory (SQLite's write-ahead-log index)."""
    parts = {}
    with open(f"/proc/{serve.pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                parts[name] = int(value.split()[0])
    return parts


counts, errors, lock = {}, {}, threading.Lock()
deadline = time.time() + WARMUP + minutes * 60


def stripe_signature(body):
    t = int(time.time())
    sig = hmac.new(stripe_secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={sig}"


def standard_headers(msg_id, body):
    t = int(time.time())
    sig = base64.b64encode(hmac.new(payment_key, f"{msg_id}.{t}.".encode() + body,
                                    hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(t), "webhook-signature": f"v1,{sig}"}


def worker(n):
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    rng = random.Random(n)
    seq = 0
    while time.time() < deadline:
        seq += 1
        ident = f"{n}-{seq}"
        kind = rng.choice(["claim", "claim", "order", "order", "stripe", "payment", "stats"])
        headers = {"content-type": "application/json"}
        if kind == "claim":
            user = f"u{ident}" if rng.random() < 0.8 else f"u{n}-1"
            path, body = "/api/coupons/claim", {"user_id": user, "coupon_name": "SOAK"}
        elif kind == "order":
            oid = f"O-{ident}" if rng.random() < 0.9 else f"O-{n}-1"
            path = "/v1/webhooks/generic?token=soak-token&sku=soak-101"
            body = {"order_id": oid, "email": f"b{ident}@soak.test"}
        elif kind == "stripe":
            session = f"cs_{ident}"
            if rng.random() < 0.2:
                event = {"id": f"evt_r{ident}", "type": "charge.refunded", "data": {"object": {
                    "id": f"ch_{ident}", "payment_intent": f"pi_{n}-{max(1, seq - 1)}", "refunded": True}}}
            else:
                event = {"id": f"evt_{ident}", "type": "checkout.session.completed", "data": {"object": {
                    "id": session, "payment_status": "paid", "payment_intent": f"pi_{ident}",
                    "customer_details": {"email": f"s{ident}@soak.test"}, "metadata": {"sku": "soak-101"}}}}
            path, body = "/v1/webhooks/stripe", event
        elif kind == "payment":
            ptype = rng.choice(["payment.succeeded", "payment.succeeded", "payment.failed"])
            path = "/v1/webhooks/payments"
            body = {"id": f"evt_g{ident}", "type": ptype, "data": {
                "reference": f"P-{ident}", "amount": 1999, "currency": "EUR",
                "email": f"p{ident}@soak.test", "sku": "soak-101"}}
        else:
            path, body = "/v1/stats", None
        raw = json.dumps(body).encode() if body is not None else None
        if kind == "stripe":
            headers["stripe-signature"] = stripe_signature(raw)
        if kind == "payment":
            headers.update(standard_headers(f"msg_{ident}", raw))
        if kind == "stats":
            headers["authorization"] = "Bearer soak-admin"
        try:
            conn.request("GET" if raw is None else "POST", path, body=raw, headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except Exception as error:  # connection trouble: count it, reconnect
            status = type(error).__name__
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
        with lock:
            counts[kind] = counts.get(kind, 0) + 1
            if status not in (200, 201, 409):
                key = f"{kind}:{status}"
                errors[key] = errors.get(key, 0) + 1


def restock():
    while time.time() < deadline:
        time.sleep(10)
        try:
            import_keys(1000)
        except subprocess.CalledProcessError:
            pass


pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
for t in pool:
    t.start()
threading.Thread(target=restock, daemon=True).start()
started = time.time()
samples = []
while time.time() < deadline:
    time.sleep(10)
    samples.append((time.time() - started, rss_kib()))
for t in pool:
    t.join()
serve.terminate()
serve.wait(timeout=60)

steady = [(t, r) for t, r in samples if t >= WARMUP]
xs = [t / 60 for t, _ in steady]
mean_x = sum(xs) / len(xs)


def slope_of(part):
    """Least-squares slope, in KiB per minute, of one part of the RSS."""
    ys = [r[part] for _, r in steady]
    mean_y = sum(ys) / len(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / max(
        1e-9, sum((x - mean_x) ** 2 for x in xs))


ys = [r["VmRSS"] for _, r in steady]
slope = slope_of("VmRSS")
print(json.dumps({
    "backend": url.split(":")[0],
    "minutes": minutes, "threads": threads,
    "rss_start_mib": round(ys[0] / 1024, 1),
    "rss_end_mib": round(ys[-1] / 1024, 1),
    "rss_max_mib": round(max(ys) / 1024, 1),
    "slope_mib_per_min": round(slope / 1024, 3),
    "slope_pct_of_start_per_min": round(100 * slope / ys[0], 3),
    "requests": counts, "requests_per_s": round(sum(counts.values()) / (time.time() - started), 1),
    "unexpected_answers": errors, "merchant_webhooks_received": received["n"],
    "parts_start_end_slope_mib": {
        part: [round(steady[0][1][part] / 1024, 1), round(steady[-1][1][part] / 1024, 1),
               round(slope_of(part) / 1024, 3)]
        for part in ("RssAnon", "RssFile", "RssShmem")},
    "samples_kib": [r["VmRSS"] for _, r in samples],
}))
