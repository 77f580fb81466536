#!/usr/bin/env python3
"""Command-to-reply latency of the control channel, per backend.

Starts one `allot serve` and two `allot worker` processes on a fresh
database, keeps one worker busy with `calculate 30`, and sends `ping` to all
of them ROUNDS times with `allot ctl --json`. Reports the median and p95 of
each process's reply latency (send → reply written, as the record says),
the busy worker's separately, and, as the same-run reference, the median
round trip of the server's own /healthz.

    scripts/control-latency.py BINARY DATABASE_URL [ROUNDS]
"""
import json, os, statistics, subprocess, sys, tempfile, time, urllib.request

binary, url = os.path.abspath(sys.argv[1]), sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 30
work = tempfile.mkdtemp()
env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOT_")}
env.update(ALLOT_DATABASE_URL=url, ALLOT_LOG_FORMAT="json", ALLOT_LISTEN="127.0.0.1:0")


def ctl(*args):
    out = subprocess.run([binary, "ctl", *args, "--json"], env=env, cwd=work,
                         capture_output=True, text=True)
    return json.loads(out.stdout) if out.stdout.strip().startswith(("{", "[")) else None


subprocess.run([binary, "migrate"], env=env, cwd=work, check=True, capture_output=True)
serve = subprocess.Popen([binary, "serve"], env=env, cwd=work, stderr=subprocess.PIPE, text=True)
addr = None
for line in serve.stderr:
    event = json.loads(line)
    if event.get("message") == "listening":
        addr = event["addr"]
        break
workers = [subprocess.Popen([binary, "worker"], env=env, cwd=work,
                            stderr=subprocess.DEVNULL) for _ in range(2)]
try:
    while len([p for p in ctl("processes") or [] if p["state"] == "ready"]) < 3:
        time.sleep(0.2)
    busy = [p["id"] for p in ctl("processes") if p["role"] == "worker"][0]
    subprocess.Popen([binary, "ctl", "calculate", "30", "busy", "--target", busy],
                     env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    idle, busy_latency, health = [], [], []
    for _ in range(rounds):
        answer = ctl("ping")
        for reply in answer["replies"]:
            (busy_latency if reply["process"] == busy else idle).append(reply["latency_ms"])
        started = time.perf_counter()
        urllib.request.urlopen(f"http://{addr}/healthz").read()
        health.append((time.perf_counter() - started) * 1000)
        time.sleep(0.05)

    def p95(values):
        return sorted(values)[max(0, int(len(values) * 0.95) - 1)]

    print(json.dumps({
        "backend": url.split(":")[0],
        "rounds": rounds,
        "idle_median_ms": statistics.median(idle), "idle_p95_ms": p95(idle),
        "busy_median_ms": statistics.median(busy_latency), "busy_p95_ms": p95(busy_latency),
        "healthz_median_ms": round(statistics.median(health), 2),
    }))
finally:
    for process in [serve, *workers]:
        process.terminate()
    for process in [serve, *workers]:
        process.wait()
