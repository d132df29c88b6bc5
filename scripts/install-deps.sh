#!/usr/bin/env bash
# Installs what Keel needs to build, test and run on Debian 12 (skips apt when everything is present).
set -euo pipefail

packages=(
  g++ cmake make ccache
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libboost-test1.81-dev
  libboost-program-options1.81-dev
  libpq-dev libssl-dev postgresql-15 curl
  # Cron schedules in IANA time zones (GCC 12 has no std::chrono::zoned_time): Howard Hinnant's date, tzdata.
  libhowardhinnant-date-dev tzdata
  # The dashboard's browser tests: Debian's chromium, driven by playwright-core from npm (tests/browser).
  chromium
  # Packaging (cmake/packaging.cmake): man pages from --help, and the Debian packages' library dependencies
  # (CPack runs dpkg-shlibdeps, which needs file).
  help2man dpkg-dev file
)
# Node.js 18 or newer with npm, for the browser tests: Debian's, unless the machine has its own already.
if ! command -v node >/dev/null || ! command -v npm >/dev/null ||
   [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -lt 18 ]; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
