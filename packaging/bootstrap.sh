#!/usr/bin/env bash
# Installs every build and test dependency of tenantcache from Debian packages.
# Idempotent: when everything is present it prints nothing and exits 0.
#
#   packaging/bootstrap.sh [--bench]   (--bench: also what packaging/bench.sh needs)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  clang clang-format clang-tidy libclang-rt-14-dev
  libxxhash-dev libuv1-dev libpq-dev libssl-dev libspdlog-dev libfmt-dev libtoml11-dev
  libsystemd-dev libgtest-dev libgmock-dev libbenchmark-dev
  postgresql-15 postgresql-client-15 pgbouncer
  libhiredis-dev redis-server
  python3 python3-cachetools
)
# packaging/bench.sh also compares with memcached, and counts instructions
# with valgrind (bench/sql_write_cost.sh).
if [ "${1:-}" = "--bench" ]; then
  packages+=(memcached libmemcached-dev valgrind)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: missing packages: ${missing[*]}" >&2
  echo "bootstrap: run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
