#!/usr/bin/env bash
# Configures and builds Keel into build/ (or build-<sanitizer>/ with --sanitize address|thread).
# Usage: scripts/build.sh [--sanitize address|thread] [extra cmake -D options...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

sanitize=""
if [ "${1:-}" = "--sanitize" ]; then
  sanitize="$2"
  shift 2
fi
dir="build${sanitize:+-$sanitize}"
jobs="${KEEL_JOBS:-$(nproc)}"
# Progress goes to stderr; stdout carries only the build directory, for the calling script.
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEEL_SANITIZE="$sanitize" "$@" >&2
cmake --build "$dir" -j "$jobs" >&2
echo "$dir"
