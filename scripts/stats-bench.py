#!/usr/bin/env python3
"""How fast `GET /v1/stats` and the dashboard's pages answer with a big outbox.

Migrates DATABASE_URL (a fresh, empty database), seeds JOBS done jobs with
one attempt each, finished over the last 24 hours (plus 1 % dead and a few
hundred queued), starts `allot serve`, waits for its first roll-up, then
times ROUNDS sequential requests to /v1/stats, then ROUNDS / 5 to each of
the dashboard's pages over the outbox (signed in with the admin token), and,
as the same-run reference, ROUNDS to /healthz, on one keep-alive
connection. Prints one JSON object.

    scripts/stats-bench.py BINARY DATABASE_URL [JOBS] [ROUNDS]

Seeding uses the database's own client: sqlite3 (Python's module), psql,
or mysql (MariaDB's sequence engine), so it takes seconds, not hours.
"""
import http.client, json, os, sqlite3, statistics, subprocess, sys, tempfile, time
from urllib.parse import urlparse

binary, url = os.path.abspath(sys.argv[1]), sys.argv[2]
jobs = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 300
work = tempfile.mkdtemp(prefix="allot-stats-")
env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOT_")}
env.update(ALLOT_DATABASE_URL=url, ALLOT_LOG_FORMAT="json", ALLOT_LISTEN="127.0.0.1:0",
           ALLOT_ADMIN_TOKEN="bench-admin", ALLOT_MAIL_DIR=os.path.join(work, "mail"),
           ALLOT_WORKER_POLL_INTERVAL="1h", RUST_LOG="info,sqlx=warn")
subprocess.run([binary, "migrate"], env=env, cwd=work, check=True, capture_output=True)

now = int(time.time() * 1000)
day = 86_400_000
# One statement per table, the same text everywhere but for the row source.
jobs_sql = """insert into jobs (kind, payload, state, attempts, max_attempts, run_at,
        created_at, updated_at, finished_at)
    select case when g % 10 = 0 then 'merchant_webhook' else 'key_email' end, '{{}}',
           case when g % 100 = 0 then 'dead' else 'done' end, 1, 8,
           {now} - g * {step}, {now} - g * {step},
           {now} - g * {step} + 20 + g % 400, {now} - g * {step} + 20 + g % 400
      from {source}"""
attempts_sql = """insert into job_attempts (job_id, attempt, worker, started_at, finished_at,
        outcome, duration_ms)
    select id, 1, 'seed', created_at, finished_at, state, finished_at - created_at from jobs"""
queued_sql = """insert into jobs (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
    select 'key_email', '{{}}', 'queued', 0, 8, {later}, {now}, {now} from {source}"""
scheme = urlparse(url).scheme
started = time.time()
if scheme == "sqlite":
    path = url.split("://", 1)[1]
    db = sqlite3.connect(path)
    gen = lambda n: f"(with recursive s(g) as (select 1 union all select g + 1 from s where g < {n}) select g from s)"
    db.execute(jobs_sql.format(now=now, step=max(1, day // jobs), source=gen(jobs)))
    db.execute(attempts_sql)
    db.execute(queued_sql.format(now=now, later=now + day, source=gen(300)))
    db.commit()
    db.execute("analyze")
    db.close()
elif scheme.startswith("postgres"):
    gen = lambda n: f"generate_series(1, {n}) as s(g)"
    script = ";\n".join([jobs_sql.format(now=now, step=max(1, day // jobs), source=gen(jobs)), attempts_sql,
                         queued_sql.format(now=now, later=now + day, source=gen(300)),
                         "vacuum analyze jobs", "vacuum analyze job_attempts"]) + ";"
    subprocess.run(["psql", url, "-q", "-v", "ON_ERROR_STOP=1"], input=script, text=True, check=True)
else:
    u = urlparse(url)
    gen = lambda n: f"(select seq as g from seq_1_to_{n}) s"
    script = ";\n".join([jobs_sql.format(now=now, step=max(1, day // jobs), source=gen(jobs)), attempts_sql,
                         queued_sql.format(now=now, later=now + day, source=gen(300)),
                         "analyze table jobs, job_attempts"]) + ";"
    args = ["mysql", "-h", u.hostname or "127.0.0.1", "-P", str(u.port or 3306), "-u", u.username or "root"]
    if u.password:
        args.append(f"-p{u.password}")
    subprocess.run(args + [u.path.lstrip("/")], input=script, text=True, check=True)
seeded_s = time.time() - started

serve = subprocess.Popen([binary, "serve"], env=env, cwd=work, stderr=subprocess.PIPE, text=True)
addr = None
for line in serve.stderr:
    if json.loads(line).get("message") == "listening":
        addr = json.loads(line)["addr"]
        break
host, port = addr.rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port), timeout=120)


def get(path, headers=None):
    t = time.perf_counter()
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    return (time.perf_counter() - t) * 1000, response.status, body


try:
    rolled_in = time.time()
    while True:
        _, status, body = get("/readyz")
        loops = json.loads(body).get("loops", {}) if status == 200 else {}
        if loops.get("housekeeping", {}).get("last_success"):
            break
        time.sleep(0.2)
    rolled_in = time.time() - rolled_in
    admin = {"authorization": "Bearer bench-admin"}
    _, status, body = get("/v1/stats", admin)
    assert status == 200, body
    sample = json.loads(body)
    stats = [get("/v1/stats", admin)[0] for _ in range(rounds)]
    conn.request("POST", "/admin/login", body="token=bench-admin",
                 headers={"content-type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    response.read()
    assert response.status == 303, response.status
    session = {"cookie": response.getheader("set-cookie").split(";")[0]}
    middle = jobs // 2
    pages = {}
    for page in ["/admin", "/admin/jobs", "/admin/jobs?state=dead", "/admin/jobs?state=queued",
                 "/admin/jobs?state=done&kind=merchant_webhook", f"/admin/jobs?before={middle}",
                 f"/admin/jobs?state=dead&before={middle}", f"/admin/jobs/{middle}", "/admin/orders"]:
        _, status, body = get(page, session)
        assert status == 200 and b"<h1>Log in</h1>" not in body, (page, status, body[:200])
        pages[page] = [get(page, session)[0] for _ in range(max(1, rounds // 5))]
    health = [get("/healthz")[0] for _ in range(rounds)]
finally:
    serve.terminate()
    serve.wait(timeout=60)


def pct(values, q):
    return round(sorted(values)[min(len(values) - 1, int(len(values) * q))], 2)


print(json.dumps({
    "backend": scheme, "jobs": jobs, "rounds": rounds, "seeded_s": round(seeded_s, 1),
    "first_roll_up_s": round(rolled_in, 1),
    "stats_p50_ms": pct(stats, 0.5), "stats_p99_ms": pct(stats, 0.99), "stats_max_ms": round(max(stats), 2),
    "healthz_p50_ms": pct(health, 0.5), "healthz_p99_ms": pct(health, 0.99),
    "ratio_p50": round(statistics.median(stats) / statistics.median(health), 1),
    "day_window": sample["windows"]["1d"]["deliveries"],
    "day_latency_ms": sample["windows"]["1d"]["latency_ms"],
    "jobs_by_state": sample["jobs"]["by_state"],
    "pages_p50_ms": {page: pct(times, 0.5) for page, times in pages.items()},
    "pages_max_ms": {page: round(max(times), 2) for page, times in pages.items()},
}))
