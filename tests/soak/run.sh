#!/usr/bin/env bash
# Builds and runs the consistency soak (tests/soak/soak.cc) against a
# throwaway PostgreSQL and the real daemon. Arguments go to tc_soak:
#
#   tests/soak/run.sh --duration 120 --seed 7          # what packaging/test.sh runs
#   tests/soak/run.sh --duration 900 --fault-every 10  # the long run (>= 10M reads, >= 50 faults)
#
# Exits non-zero when any read was served staler than the fail-closed bound,
# any answer was wrong or a fault was not recovered from.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
build=${TC_BUILD_DIR:-build/ci}
bash packaging/bootstrap.sh
[ -f "$build/build.ninja" ] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target tc_soak >/dev/null
exec "$build/tests/tc_soak" "$@"
