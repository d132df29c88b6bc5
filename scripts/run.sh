#!/usr/bin/env bash
# Builds and runs keeld with its example workflows on an embedded PostgreSQL (data in ./keel-data).
# It serves the HTTP API on 127.0.0.1:8080 until Ctrl-C. Arguments go to keeld (e.g. --listen 0.0.0.0:9000,
# --api-key KEY, --database-url ..., --once; see keeld --help); without any, it also starts a
# demonstration batch of 10 runs and prints their transitions.
set -euo pipefail
cd "$(dirname "$0")/.."
KEEL_TARGET=keeld bash scripts/build.sh >/dev/null
[ $# -gt 0 ] || set -- --demo-runs 10
exec build/apps/keeld/keeld "$@"
