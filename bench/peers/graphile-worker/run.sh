#!/usr/bin/env bash
# Installs the pinned graphile-worker (from npm, into this directory) and
# drains JOBS no-op jobs with it on DATABASE_URL, which must be a database of
# its own (it creates the graphile_worker schema there).
#
#   bench/peers/graphile-worker/run.sh DATABASE_URL [JOBS] [CONCURRENCY] [LOCAL_QUEUE]
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules/graphile-worker ]; then
  npm install --no-audit --no-fund --silent
fi
exec node drain.js "$@"
