#!/usr/bin/env bash
# Builds Keel and runs the whole test suite (unit, PostgreSQL, multi-process) with ctest.
# Usage: scripts/test.sh [--sanitize address|thread] [--build-type TYPE]   (each configuration builds in its own
# directory; see scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(bash scripts/build.sh "$@" | tail -n 1)
cd "$dir"
if [[ "$dir" == *thread* ]]; then
  export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
fi
if [[ "$dir" == *address* ]]; then
  export ASAN_OPTIONS="detect_leaks=1 ${ASAN_OPTIONS:-}"
  export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 ${UBSAN_OPTIONS:-}"
fi
# Two at a time (KEEL_TEST_JOBS to change it); the timing-sensitive tests are marked RUN_SERIAL and run alone
# (tests/CMakeLists.txt).
ctest --output-on-failure --timeout 900 -j "${KEEL_TEST_JOBS:-2}"
