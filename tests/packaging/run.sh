#!/usr/bin/env bash
# The Debian packages as a user gets them: cpack makes keel and keel-dev from the build tree, dpkg-deb unpacks
# them into an empty directory (no root install), the files each must hold are checked, and tests/consumer is
# built against the unpacked keel-dev and run on an embedded PostgreSQL.
# Usage: run.sh BUILD_DIR LIBDIR LIBRARY...   (LIBDIR: CMAKE_INSTALL_LIBDIR; LIBRARY: the installed targets)
set -euo pipefail
build=$(cd "$1" && pwd)
libdir=$2
shift 2
libraries=("$@")
here=$(cd "$(dirname "$0")" && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/keel-packaging.XXXXXX")
# Run as root, the consumer's embedded server runs as `postgres`, which must reach its data directory.
chmod 0755 "$work"
cleanup() {
  # A consumer that died with its server up leaves it running: stop it before removing its directory.
  if [ -f "$work/pg/postmaster.pid" ]; then
    kill -INT "$(head -n 1 "$work/pg/postmaster.pid")" 2>/dev/null || true
    sleep 1
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "packaging: $*" >&2
  exit 1
}
started=$SECONDS
step() { echo "--- [$((SECONDS - started)) s] $*"; }

step "cpack in $build"
# cpack builds what is out of date first (the preinstall target); in a tree just built, that is a quick check.
cpack --config "$build/CPackConfig.cmake" -B "$work/packages" >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log" >&2; fail "cpack failed"; }
runtime=$(ls "$work"/packages/keel_*.deb)
dev=$(ls "$work"/packages/keel-dev_*.deb)
ls -l "$runtime" "$dev"

step "control fields"
field() { dpkg-deb --field "$1" "$2"; }
[ "$(field "$runtime" Package)" = keel ] || fail "$runtime is not the package keel"
[ "$(field "$dev" Package)" = keel-dev ] || fail "$dev is not the package keel-dev"
depends=$(field "$runtime" Depends)
echo "keel Depends: $depends"
# The libraries keeld and keel load (dpkg-shlibdeps), and what they need besides.
for p in libpq5 libboost-json1.81.0 libboost-url1.81.0 libboost-program-options1.81.0 libssl3 libdate-tz3 \
  postgresql-15 tzdata adduser; do
  [[ ", $depends," == *", $p"[\ ,]* ]] || fail "keel does not depend on $p"
done
dev_depends=$(field "$dev" Depends)
echo "keel-dev Depends: $dev_depends"
version=$(field "$runtime" Version)
for p in "keel (= $version)" libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libpq-dev libssl-dev \
  libhowardhinnant-date-dev; do
  [[ ", $dev_depends," == *", $p,"* ]] || fail "keel-dev does not depend on $p"
done
control_files=$(dpkg-deb --ctrl-tarfile "$runtime" | tar -t)
grep -qx './postinst' <<<"$control_files" || fail "keel has no postinst"

step "contents"
# Each file in the package it belongs to, and only there.
contents() { dpkg-deb --contents "$1" | awk '{print $NF}' | sed 's|^\./|/|'; }
contents "$runtime" >"$work/runtime.list"
contents "$dev" >"$work/dev.list"
expect() {
  local list=$1
  shift
  for f in "$@"; do
    grep -qx "$f" "$work/$list.list" || fail "$list package lacks $f"
  done
}
expect runtime /usr/bin/keeld /usr/bin/keel /usr/lib/systemd/system/keeld.service /usr/share/man/man1/keeld.1 \
  /usr/share/man/man1/keel.1 /usr/share/bash-completion/completions/keel
expect dev /usr/include/keel/engine.hpp /usr/include/keel/engine/engine.hpp /usr/include/keel/http/server.hpp \
  /usr/include/keel/storage/embedded_postgres.hpp /usr/include/keel/common/result.hpp \
  "/usr/$libdir/cmake/keel/keelConfig.cmake" "/usr/$libdir/cmake/keel/keelConfigVersion.cmake" \
  "/usr/$libdir/cmake/keel/keelTargets.cmake" "/usr/$libdir/cmake/keel/keel_find_date.cmake"
for lib in "${libraries[@]}"; do
  expect dev "/usr/$libdir/lib$lib.a"
done
if grep -q '^/usr/include/' "$work/runtime.list" || grep -q '^/usr/bin/' "$work/dev.list"; then
  fail "keel holds headers, or keel-dev executables"
fi

step "unpack"
root=$work/root
dpkg-deb -x "$runtime" "$root"
dpkg-deb -x "$dev" "$root"
for f in "$root/usr/bin/keeld" "$root/usr/bin/keel" "$root/usr/$libdir/libkeel_engine.a"; do
  sections=$(readelf -S --wide "$f")
  ! grep -q '\.debug_info' <<<"$sections" || fail "$f still has its debug sections"
done
# Runnable: stripped, and finding their shared libraries.
help=$("$root/usr/bin/keel" --help)
grep -q '^Usage: keel' <<<"$help" || fail "keel --help printed no usage"
help=$("$root/usr/bin/keeld" --help)
grep -q -- '--data-dir' <<<"$help" || fail "keeld --help printed no options"
unit=$root/usr/lib/systemd/system/keeld.service
# shellcheck disable=SC2016 # systemd expands $KEELD_OPTIONS, from /etc/default/keeld
grep -qx 'ExecStart=/usr/bin/keeld --data-dir /var/lib/keel/data $KEELD_OPTIONS' "$unit" ||
  fail "the unit does not start /usr/bin/keeld: $(grep ExecStart "$unit")"
grep -qx 'User=keel' "$unit" || fail "the unit runs keeld as root"
grep -qE '^\.TH KEELD "?1' "$root/usr/share/man/man1/keeld.1" || fail "keeld.1 is not a man page"
grep -qE '^\.TH KEEL "?1' "$root/usr/share/man/man1/keel.1" || fail "keel.1 is not a man page"
bash "$here/check_completion.sh" "$root/usr/share/bash-completion/completions/keel" "$root/usr/bin/keel"

step "consumer: configure and build against $root/usr"
consumer=$work/consumer
cmake -S "$here/../consumer" -B "$consumer" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$root/usr" \
  >"$work/configure.log" 2>&1 || { cat "$work/configure.log" >&2; fail "configure failed"; }
grep -F -- "-- keel " "$work/configure.log"
grep -qF -- " from $root/usr/$libdir/cmake/keel" "$work/configure.log" ||
  fail "find_package(keel) did not find the unpacked package"
cmake --build "$consumer" -j 2 >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; fail "build failed"; }

step "consumer: run"
"$consumer/keel_consumer" "$work/pg"
step "done"
