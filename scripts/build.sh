#!/usr/bin/env bash
# Configures and builds Keel into build/ (or build-<sanitizer>/ with --sanitize address|thread).
# Usage: scripts/build.sh [--sanitize address|thread] [extra cmake -D options...]
# KEEL_TARGET=name builds only that target (and what it needs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

sanitize=""
if [ "${1:-}" = "--sanitize" ]; then
  sanitize="$2"
  shift 2
fi
dir="build${sanitize:+-$sanitize}"
extra=()
if [ -n "$sanitize" ]; then
  # Benchmarks mean nothing under a sanitizer, and the header check needs running once only.
  extra+=(-DKEEL_BUILD_BENCH=OFF -DKEEL_CHECK_HEADERS=OFF)
fi
# ccache keys on paths relative to the checkout, so clones elsewhere (CI) reuse the cache.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
jobs="${KEEL_JOBS:-$(nproc)}"
# Progress goes to stderr; stdout carries only the build directory, for the calling script.
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEEL_SANITIZE="$sanitize" "${extra[@]}" "$@" >&2
cmake --build "$dir" -j "$jobs" ${KEEL_TARGET:+--target "$KEEL_TARGET"} >&2
echo "$dir"
