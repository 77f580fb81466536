#!/usr/bin/env bash
# The long form of the fault suite (tests/api/faults.rs): every scenario at
# ALLOT_FAULT_SCALE times the CI size, RUNS times in a row, one scenario at a
# time, each printing its verdict and the seed of its random kill points
# (ALLOT_FAULT_SEED=N replays one).
#
# Scenarios: SIGKILLs during an order stream (each backend), a private
# PostgreSQL restarted mid-load, a full SQLite disk (needs root for the
# tmpfs), SMTP down then back (each backend). At scale 5 that is 300 orders
# and 15 kills per backend, 5 database restarts, 100 emails held up by SMTP.
#
# Usage: scripts/chaos.sh [RUNS=3] [SCALE=5]
# PostgreSQL and MariaDB come from ALLOT_TEST_POSTGRES_URL and
# ALLOT_TEST_MYSQL_URL (the users .ci/run creates, by default).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
export ALLOT_FAULT_SCALE=${2:-5}
export ALLOT_TEST_POSTGRES_URL=${ALLOT_TEST_POSTGRES_URL:-postgres://allot_test:allot_test@127.0.0.1:5432/postgres}
export ALLOT_TEST_MYSQL_URL=${ALLOT_TEST_MYSQL_URL:-mysql://allot_test:allot_test@127.0.0.1:3306/}
ulimit -n 65536 2>/dev/null || true

cargo test --release --locked --test api --no-run
failed=0
for run in $(seq 1 "$runs"); do
    echo "== run $run of $runs, scale $ALLOT_FAULT_SCALE, $(date -u +%FT%TZ)"
    log=$(mktemp)
    started=$(date +%s)
    status=0
    cargo test --release --locked --test api faults:: -- --test-threads=1 --nocapture >"$log" 2>&1 || status=$?
    grep -E "^test faults::|ALLOT_FAULT_SEED|^test result|panicked at" "$log" || true
    echo "   $(($(date +%s) - started)) s"
    if [ "$status" -ne 0 ]; then
        failed=$((failed + 1))
        echo "   failed; log kept in $log"
    else
        rm -f "$log"
    fi
done
echo "== $((runs - failed)) of $runs runs passed"
[ "$failed" -eq 0 ]
