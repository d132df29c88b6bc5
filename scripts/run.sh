#!/usr/bin/env bash
# Builds and runs keeld with its example workflows on an embedded PostgreSQL (data in ./keel-data).
# Arguments go to keeld (e.g. --serve, --demo-runs 50, --database-url ...; see keeld --help).
set -euo pipefail
cd "$(dirname "$0")/.."
KEEL_TARGET=keeld bash scripts/build.sh >/dev/null
exec build/apps/keeld/keeld "$@"
