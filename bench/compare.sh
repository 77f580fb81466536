#!/usr/bin/env bash
# One run of every `allot bench` figure docs/benchmarks.md reports, each
# beside its reference measured in the same run: claims and orders against
# the same server's /healthz, jobs against graphile-worker 0.17.3 on the
# same PostgreSQL. Fresh databases each time; prints one JSON line each,
# then the median of each ratio over the repetitions (REPEAT, default 3:
# on shared cores one run's ratio moves by a quarter either way).
#
#   [REPEAT=N] bench/compare.sh [DURATION] [PG_URL_BASE]
#
# PG_URL_BASE names a server where databases may be created, without the
# database (default: the local PostgreSQL over its Unix socket). Needs a
# release build (cargo build --release) and, for the peer, Node.js and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
pg=${2:-postgres://postgres@localhost}
socket_opt="?host=/var/run/postgresql"
allot=$PWD/target/release/allot
repeat=${REPEAT:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RUST_LOG=warn

fresh_pg() { # name
  psql "$pg/postgres$socket_opt" -qc "drop database if exists $1" -c "create database $1" >/dev/null
  echo "$pg/$1$socket_opt"
}

once() {
  for scenario in claims orders; do
    rm -f "$work/$scenario.db"*
    ALLOT_DATABASE_URL="sqlite://$work/$scenario.db" "$allot" bench "$scenario" --healthz --duration "$duration" --json
    ALLOT_DATABASE_URL=$(fresh_pg "allot_bench_$scenario") "$allot" bench "$scenario" --healthz --duration "$duration" --json
  done
  for concurrency in 32 256; do
    rm -f "$work/jobs-$concurrency.db"*
    ALLOT_DATABASE_URL="sqlite://$work/jobs-$concurrency.db" "$allot" bench jobs --connections "$concurrency" --duration "$duration" --json
    ALLOT_DATABASE_URL=$(fresh_pg allot_bench_jobs) "$allot" bench jobs --connections "$concurrency" --duration "$duration" --json
    bench/peers/graphile-worker/run.sh "$(fresh_pg graphile_bench)" 50000 "$concurrency" 500
  done
}

for _ in $(seq "$repeat"); do
  once | tee -a "$work/runs.jsonl"
done
python3 - "$work/runs.jsonl" <<'SUMMARY'
import json, statistics, sys
ratios, peer = {}, None
for line in open(sys.argv[1]):
    run = json.loads(line)
    if "peer" in run:
        # graphile-worker follows the PostgreSQL run at its concurrency.
        ratios.setdefault(("jobs", "postgres", run["concurrency"], "graphile-worker"), []).append(
            peer / run["jobs_per_s"])
        continue
    if run["scenario"] == "jobs" and run["backend"] == "postgres":
        peer = run["ops_per_s"]
    if run.get("ratio_to_healthz") is not None:
        ratios.setdefault((run["scenario"], run["backend"], run["connections"], "/healthz"), []).append(
            run["ratio_to_healthz"])
for (scenario, backend, connections, reference), values in ratios.items():
    shown = " ".join(f"{v:.3f}" for v in values)
    print(f"median {scenario} {backend} c{connections} / {reference}: "
          f"{statistics.median(values):.3f} ({shown})")
SUMMARY
