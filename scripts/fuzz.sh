#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 60) with cargo-fuzz on the
# nightly toolchain, each corpus seeded from tests/fixtures. A crash fails
# the run and leaves its input in fuzz/artifacts/TARGET/.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(normalize import_keys)

mkdir -p fuzz/corpus/normalize fuzz/corpus/import_keys
cp tests/fixtures/webhooks/*.json fuzz/corpus/normalize/
printf 'license_key,course\nAAAA-0001,101\n\n"AAAA,0003",101\n' > fuzz/corpus/import_keys/seed.csv
printf 'K-1\r\n  K-2  \nK-1\n' > fuzz/corpus/import_keys/seed.txt

for target in "${targets[@]}"; do
    echo "fuzzing $target for ${seconds}s"
    log=$(mktemp)
    status=0
    # -rss_limit_mb: the import target keeps a SQLite pool open.
    cargo +nightly fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E "^(#[0-9]+[[:space:]]+DONE|stat::|Done|SUMMARY|.*panicked|.*Test unit written)" "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$log"
        echo "fuzz target $target failed" >&2
        exit "$status"
    fi
    rm -f "$log"
done
