#!/usr/bin/env bash
# Runs the dashboard's browser tests (dashboard.test.mjs) against KEELD in OUT: installs playwright-core (the
# version package-lock.json pins) into OUT, never into the source tree, and uses Debian's chromium.
# Usage: tests/browser/run.sh KEELD OUT
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
keeld="$1"
out="$2"
command -v node >/dev/null || { echo "browser tests: node is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
chromium="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] || { echo "browser tests: $chromium is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
mkdir -p "$out"
cp "$here/package.json" "$here/package-lock.json" "$here/dashboard.test.mjs" "$out/"
# Installed once per lock file (the stamp is the lock file the install used).
if ! cmp -s "$here/package-lock.json" "$out/node_modules/.keel-lock" 2>/dev/null; then
  (cd "$out" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$out/node_modules/.keel-lock"
fi
cd "$out"
KEELD="$keeld" KEEL_BROWSER_OUT="$out" CHROMIUM="$chromium" node --test --test-reporter=spec dashboard.test.mjs
