#!/usr/bin/env bash
# Runs examples/bench_webhooks.rs on a fresh database per backend, over TCP
# and over the Unix socket for the servers.
# Usage: scripts/bench-webhooks.sh [ORDERS] [CONCURRENCY]
# Needs local PostgreSQL and MariaDB as in .ci/run (trust / root without password).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example bench_webhooks -q
bench=target/release/examples/bench_webhooks
user=$(id -un)

rm -f /tmp/allot-bench.db*
$bench sqlite:///tmp/allot-bench.db "$@"

fresh_pg() { psql -h 127.0.0.1 -d postgres -qc 'drop database if exists allot_bench' -c 'create database allot_bench'; }
fresh_my() { mysql -uroot -h127.0.0.1 -e 'drop database if exists allot_bench; create database allot_bench'; }

fresh_pg; echo -n "TCP    "; $bench "postgres://$user@127.0.0.1:5432/allot_bench" "$@"
fresh_pg; echo -n "socket "; $bench "postgres://$user@localhost/allot_bench?host=/var/run/postgresql" "$@"
fresh_my; echo -n "TCP    "; $bench mysql://root@127.0.0.1:3306/allot_bench "$@"
fresh_my; echo -n "socket "; $bench "mysql://root@localhost/allot_bench?socket=/run/mysqld/mysqld.sock" "$@"

psql -h 127.0.0.1 -d postgres -qc 'drop database allot_bench'
mysql -uroot -h127.0.0.1 -e 'drop database allot_bench'
rm -f /tmp/allot-bench.db*
