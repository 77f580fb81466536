#!/usr/bin/env bash
# Times `allot keys import` of a file of N keys (default 1,000,000) into a
# fresh database per backend. Usage: scripts/bench-import.sh [N]
# Needs local PostgreSQL and MariaDB as in .ci/run (trust / root without password).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
cargo build --release -q
allot=$PWD/target/release/allot
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -c "
import sys
with open('$work/keys.txt', 'w') as f:
    for i in range($n):
        f.write('KEY-%010d-ABCDEFGHJKLMNPQRSTUV\n' % i)
"
echo "file: $(du -h "$work/keys.txt" | cut -f1), $n keys"

run() { # label url
    local start end
    start=$(date +%s.%N)
    ALLOT_DATABASE_URL=$2 "$allot" keys import "$work/keys.txt" --sku bench | head -1
    end=$(date +%s.%N)
    python3 -c "print('$1: %.1f s, %.0f keys/s' % ($end - $start, $n / ($end - $start)))"
    ALLOT_DATABASE_URL=$2 "$allot" keys stock
}

run sqlite "sqlite://$work/bench.db"

psql -h 127.0.0.1 -d postgres -qc 'drop database if exists allot_bench' -c 'create database allot_bench'
run postgres "postgres://$(id -un)@127.0.0.1:5432/allot_bench"
psql -h 127.0.0.1 -d postgres -qc 'drop database allot_bench' -c 'create database allot_bench'
run postgres-socket "postgres://$(id -un)@localhost/allot_bench?host=/var/run/postgresql"
psql -h 127.0.0.1 -d postgres -qc 'drop database allot_bench'

mysql -uroot -h127.0.0.1 -e 'drop database if exists allot_bench; create database allot_bench'
run mysql "mysql://root@127.0.0.1:3306/allot_bench"
mysql -uroot -h127.0.0.1 -e 'drop database allot_bench'
