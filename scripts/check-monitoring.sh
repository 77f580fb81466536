#!/usr/bin/env bash
# Checks what deploy/ ships for monitoring, with no Prometheus or Grafana
# running: the alert rules with promtool (syntax, and their unit tests in
# alerts.test.yml), and the Grafana dashboard with
# scripts/check_dashboard.py (its JSON, and every query parsed by promtool
# and naming only metrics that docs/reference.md documents).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null 2>&1; then
    # Debian's Prometheus package carries promtool; the server it also
    # installs is not started.
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    # A new machine's package lists may be empty or old: read them first.
    $sudo apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
queries=$(mktemp --suffix=.yml)
trap 'rm -f "$queries"' EXIT
python3 scripts/check_dashboard.py deploy/grafana/allot.json docs/reference.md "$queries"
promtool check rules "$queries"
