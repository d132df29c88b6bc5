#!/usr/bin/env bash
# Fuzzes the HTTP front end (tests/fuzz/http_request_fuzz.cpp) for SECONDS (default 180). With clang it is
# libFuzzer, coverage-guided, under ASan+UBSan, built in build-fuzz/ (the whole library chain compiled by clang);
# without clang, or with KEEL_FUZZ_ENGINE=builtin, the seeded mutation driver of the g++ build (extra arguments
# go to scripts/build.sh, e.g. --sanitize address). What libFuzzer finds lands in build-fuzz/corpus/, never in
# tests/fuzz/corpus/: minimise what is worth keeping (fuzz_http -minimize_crash=1 / -merge=1) and add it by hand.
# Usage: scripts/fuzz.sh [SECONDS] [build.sh options...]
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
seconds="${1:-180}"
[ $# -gt 0 ] && shift
engine="${KEEL_FUZZ_ENGINE:-libfuzzer}"
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1

# clang is the fuzzer's alone, not a dependency of the build (scripts/install-deps.sh leaves it out).
has_libfuzzer() {
  command -v clang++ >/dev/null &&
    echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' |
    clang++ -x c++ -fsanitize=fuzzer,address,undefined -o /dev/null - 2>/dev/null
}
if [ "$engine" = libfuzzer ] && ! has_libfuzzer; then
  sudo=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi
  if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
    echo "fuzz.sh: installing clang for libFuzzer" >&2
    $sudo apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends clang >/dev/null || true
  fi
  if ! has_libfuzzer; then
    echo "fuzz.sh: no clang with libFuzzer: using the built-in mutation driver" >&2
    engine=builtin
  fi
fi

if [ "$engine" = libfuzzer ]; then
  bash scripts/install-deps.sh
  # -Werror stays with the g++ build: the warning flags are tuned for g++ 12.
  cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKEEL_LIBFUZZER=ON \
    -DKEEL_SANITIZE=address -DKEEL_WERROR=OFF -DKEEL_BUILD_BENCH=OFF -DKEEL_CHECK_HEADERS=OFF >&2
  cmake --build build-fuzz -j "${KEEL_JOBS:-$(nproc)}" --target fuzz_http >&2
  mkdir -p build-fuzz/corpus
  export ASAN_OPTIONS="detect_leaks=1 ${ASAN_OPTIONS:-}"
  export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 ${UBSAN_OPTIONS:-}"
  cd build-fuzz
  # The first corpus directory receives new inputs; the committed seeds are read only.
  exec ./tests/fuzz/fuzz_http -max_total_time="$seconds" -dict="$root/tests/fuzz/http.dict" -max_len=8192 \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 corpus "$root/tests/fuzz/corpus"
fi

dir=$(KEEL_TARGET=fuzz_http bash scripts/build.sh "$@" | tail -n 1)
if [[ "$dir" == *address* ]]; then
  export ASAN_OPTIONS="detect_leaks=1 ${ASAN_OPTIONS:-}"
  export UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 ${UBSAN_OPTIONS:-}"
fi
cd "$root/$dir/tests/fuzz"
exec ./fuzz_http --seconds "$seconds" --dict "$root/tests/fuzz/http.dict" "$root/tests/fuzz/corpus"
