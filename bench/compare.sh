#!/usr/bin/env bash
# One run of every `allot bench` figure docs/benchmarks.md reports, each
# beside its reference measured in the same run: claims and orders against
# the same server's /healthz, jobs against graphile-worker 0.17.3 on the
# same PostgreSQL. Fresh databases each time; prints one JSON line each.
#
#   bench/compare.sh [DURATION] [PG_URL_BASE]
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
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RUST_LOG=warn

fresh_pg() { # name
  psql "$pg/postgres$socket_opt" -qc "drop database if exists $1" -c "create database $1" >/dev/null
  echo "$pg/$1$socket_opt"
}

for scenario in claims orders; do
  ALLOT_DATABASE_URL="sqlite://$work/$scenario.db" "$allot" bench "$scenario" --healthz --duration "$duration" --json
  ALLOT_DATABASE_URL=$(fresh_pg "allot_bench_$scenario") "$allot" bench "$scenario" --healthz --duration "$duration" --json
done
for concurrency in 32 256; do
  ALLOT_DATABASE_URL="sqlite://$work/jobs-$concurrency.db" "$allot" bench jobs --connections "$concurrency" --duration "$duration" --json
  ALLOT_DATABASE_URL=$(fresh_pg allot_bench_jobs) "$allot" bench jobs --connections "$concurrency" --duration "$duration" --json
  bench/peers/graphile-worker/run.sh "$(fresh_pg graphile_bench)" 50000 "$concurrency" 500
done
