#!/usr/bin/env bash
# Validates compose.yaml against the Compose Specification's JSON schema
# (the copy check-jsonschema ships), with no container engine needed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/compose-check
if [ ! -x "$venv/bin/check-jsonschema" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'check-jsonschema==0.39.0'
fi
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml
