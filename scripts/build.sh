#!/usr/bin/env bash
# Configures and builds Keel into build/ (RelWithDebInfo), build-<sanitizer>/ with --sanitize address|thread,
# build-<type>/ with --build-type Debug|Release|MinSizeRel (lower-cased; both options: build-<sanitizer>-<type>/).
# Usage: scripts/build.sh [--sanitize address|thread] [--build-type TYPE] [extra cmake -D options...]
# KEEL_TARGET=name builds only that target (and what it needs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

sanitize=""
build_type=RelWithDebInfo
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) sanitize="$2"; shift 2 ;;
    --build-type) build_type="$2"; shift 2 ;;
    *) break ;;
  esac
done
case "$build_type" in
  Debug | Release | RelWithDebInfo | MinSizeRel) ;;
  *) echo "build.sh: --build-type must be Debug, Release, RelWithDebInfo or MinSizeRel" >&2; exit 2 ;;
esac
dir="build${sanitize:+-$sanitize}"
extra=()
if [ "$build_type" != RelWithDebInfo ]; then
  dir="$dir-$(echo "$build_type" | tr '[:upper:]' '[:lower:]')"
fi
if [ -n "$sanitize" ]; then
  # Benchmarks mean nothing under a sanitizer.
  extra+=(-DKEEL_BUILD_BENCH=OFF)
fi
if [ -n "$sanitize" ] || [ "$build_type" != RelWithDebInfo ]; then
  # The header check, the query plans and the browser need running once only, in the default configuration:
  # what they check is the same in every build (the browser suite and the 200,000-run plan test alone took a
  # quarter of CI's time when every configuration ran them).
  extra+=(-DKEEL_CHECK_HEADERS=OFF -DKEEL_CONFIG_INDEPENDENT_TESTS=OFF)
fi
# ccache keys on paths relative to the checkout, so clones elsewhere (CI) reuse the cache.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
jobs="${KEEL_JOBS:-$(nproc)}"
# Progress goes to stderr; stdout carries only the build directory, for the calling script.
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$build_type" -DKEEL_SANITIZE="$sanitize" "${extra[@]}" "$@" >&2
cmake --build "$dir" -j "$jobs" ${KEEL_TARGET:+--target "$KEEL_TARGET"} >&2
echo "$dir"
