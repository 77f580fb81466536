#!/usr/bin/env bash
# The dashboard in a real browser: installs Debian's chromium and
# chromium-driver and Selenium (PyPI) when missing, then runs
# tests/browser/dashboard.py against the binary `cargo test` built.
#
#   scripts/browser-tests.sh [BINARY]   (default target/debug/allot)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/debug/allot}
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    # A new machine's package lists may be empty or old: read them first.
    $sudo apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null
fi
if ! python3 -c 'import selenium' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check 'selenium==4.27.1'
fi
python3 tests/browser/dashboard.py "$binary"
