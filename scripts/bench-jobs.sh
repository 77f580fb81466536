#!/usr/bin/env bash
# Runs examples/bench_jobs.rs on a fresh database per backend.
# Usage: scripts/bench-jobs.sh [JOBS] [WORKERS] [CONCURRENCY]
# Needs local PostgreSQL and MariaDB as in .ci/run (trust / root without password).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example bench_jobs -q
bench=target/release/examples/bench_jobs

rm -f /tmp/allot-bench.db*
$bench sqlite:///tmp/allot-bench.db "$@"

psql -h 127.0.0.1 -d postgres -qc 'drop database if exists allot_bench' -c 'create database allot_bench'
$bench "postgres://$(id -un)@127.0.0.1:5432/allot_bench" "$@"

mysql -uroot -h127.0.0.1 -e 'drop database if exists allot_bench; create database allot_bench'
$bench mysql://root@127.0.0.1:3306/allot_bench "$@"

psql -h 127.0.0.1 -d postgres -qc 'drop database allot_bench'
mysql -uroot -h127.0.0.1 -e 'drop database allot_bench'
rm -f /tmp/allot-bench.db*
