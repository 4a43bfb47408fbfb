#!/usr/bin/env bash
# The README's test command. Installs what the build and the tests need
# (idempotently), checks formatting, builds with warnings as errors, checks
# the Rust crate (rustfmt, clippy, Debian's rustc 1.63), runs the whole suite,
# the Python tests against a wheel installed in a fresh virtualenv, and a
# 80-second consistency soak under injected faults (and 35 s in each other
# topology: PgBouncer, a standby, relays through Redis), then the concurrency tests again under
# ThreadSanitizer, the suite but its SQL-only tests under AddressSanitizer +
# UndefinedBehaviorSanitizer, and each libFuzzer target for 15 s. Exits
# non-zero on the first failure.
#
#   packaging/test.sh            everything
#   TC_TEST_QUICK=1 packaging/test.sh   stop after the first tests and the soak
#   TC_SOAK_SEED=N TC_SOAK_SECONDS=S TC_FUZZ_SECONDS=S   replay / lengthen
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

step() { printf '\n== %s (%s, %d s in)\n' "$*" "$(date +%T)" "$SECONDS"; }

# The integration tests start PostgreSQL clusters under TC_PG_ROOT and keep
# their cache files and daemons under TC_TEST_DIR; whatever a crashed test
# binary left running there is stopped on exit.
TC_PG_ROOT=$(mktemp -d /tmp/tenantcache-pg-XXXXXX)
TC_TEST_DIR=$(mktemp -d "$([ -w /dev/shm ] && echo /dev/shm || echo /tmp)/tenantcache-tests-XXXXXX")
chmod 755 "$TC_PG_ROOT" "$TC_TEST_DIR"
export TC_PG_ROOT TC_TEST_DIR
cleanup() {
  pkill -KILL -f -- "--config $TC_TEST_DIR" 2>/dev/null || true
  for pid_file in "$TC_PG_ROOT"/*/data/postmaster.pid; do
    [ -f "$pid_file" ] && kill -QUIT "$(head -n 1 "$pid_file")" 2>/dev/null || true
  done
  for pid_file in "$TC_PG_ROOT"/tc-bouncer-*/pgbouncer.pid; do
    [ -f "$pid_file" ] && kill -TERM "$(head -n 1 "$pid_file")" 2>/dev/null || true
  done
  rm -rf "$TC_PG_ROOT" "$TC_TEST_DIR"
}
trap cleanup EXIT

step "dependencies"
bash packaging/bootstrap.sh --bench  # with what the benchmark's smoke run needs

step "format (clang-format --dry-run)"
mapfile -t sources < <(git ls-files '*.cc' '*.h' '*.hpp' '*.c' 2>/dev/null || find client daemon tests bench -name '*.[ch]*')
clang-format --dry-run --Werror "${sources[@]}"

configure() {  # configure DIR [cmake options...]
  local dir=$1
  shift
  cmake -S . -B "$dir" -G Ninja -DTC_WERROR=ON -DCMAKE_EXPORT_COMPILE_COMMANDS=ON "$@" >/dev/null
}

step "build (RelWithDebInfo, -Werror)"
configure build/ci -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build/ci

step "Rust crate (client/rust): rustfmt, clippy -D warnings, and rust-version 1.63 with Debian's toolchain"
# packaging/cargo.sh installs Debian's toolchain when there is none; ctest's
# rust_test (cargo test against the real daemon) uses the same cargo.
TC_CARGO=$(bash packaging/cargo.sh)
export TC_CARGO
rust_checks() {  # CARGO TARGET_DIR [PATH]: fmt and clippy where that toolchain has them, then every target
  (cd client/rust && export PATH=${3:-$PATH} CARGO_NET_OFFLINE=true CARGO_TARGET_DIR="$root/build/ci/$2" \
    TENANTCACHE_LIB_DIR="$root/build/ci" LD_LIBRARY_PATH="$root/build/ci" RUSTFLAGS=-Dwarnings RUSTDOCFLAGS=-Dwarnings &&
    echo "toolchain: $("$1" --version)" &&
    if "$1" fmt --version >/dev/null 2>&1; then "$1" fmt --check; else echo "no rustfmt in this toolchain"; fi &&
    if "$1" clippy --version >/dev/null 2>&1; then "$1" clippy --offline --locked --all-targets -- -D warnings; else
      echo "no clippy in this toolchain"; fi &&
    "$1" build --offline --locked --all-targets && "$1" test --offline --locked --doc)
}
# rustfmt and clippy must run with at least one toolchain: never skipped.
for tool in fmt clippy; do
  "$TC_CARGO" "$tool" --version >/dev/null 2>&1 || { [ -x /usr/bin/cargo ] && PATH=/usr/bin:/bin /usr/bin/cargo "$tool" --version >/dev/null 2>&1; } ||
    { echo "no cargo $tool in any Rust toolchain: apt-get install rustfmt rust-clippy (or rustup component add rustfmt clippy)"; exit 1; }
done
rust_checks "$TC_CARGO" rust-target
# Debian bookworm's rustc is the crate's rust-version: check it whenever it is
# installed (its own PATH, so that rustup's cargo-clippy/rustfmt are not used).
if [ -x /usr/bin/cargo ] && [ "$(readlink -f "$TC_CARGO")" != /usr/bin/cargo ]; then
  rust_checks /usr/bin/cargo rust-target-debian /usr/bin:/bin
fi

step "clang-tidy"
# The Python extension is built by setup.py, not CMake: its flags are given
# here, and it is checked beside the others.
clang-tidy --quiet client/python/src/native.cc -- -std=c++20 -Iclient/include -Iclient/src \
  -I"$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" 2>/dev/null &
tidy_native=$!
ls client/src/*.cc client/ctl/*.cc daemon/*.cc | xargs -P "$(nproc)" -n 2 clang-tidy --quiet -p build/ci 2>/dev/null
wait "$tidy_native"

step "tests"
ctest --test-dir build/ci --output-on-failure --timeout 600

step "Python: a wheel per interpreter, installed in a fresh virtualenv, tested against the real daemon"
bash packaging/python_wheel_test.sh build/ci

step "consistency soak (tests/soak: faults injected, every read checked against the commits)"
# A random schedule each run, printed so that a failure can be replayed with
# TC_SOAK_SEED; tests/soak/run.sh runs it for as long as asked.
soak_seed=${TC_SOAK_SEED:-$RANDOM}
build/ci/tests/tc_soak --duration "${TC_SOAK_SECONDS:-80}" --seed "$soak_seed" --fault-every 8
# The same in the other topologies, shorter: loaders through a real PgBouncer
# in transaction mode (which the injector also restarts), loaders on a
# streaming standby that applies commits late (whose replay it also pauses),
# and the daemon as a Redis subscriber of two relays (which it kills, and
# Redis, which it restarts and stops).
build/ci/tests/tc_soak --duration "${TC_SOAK_TOPOLOGY_SECONDS:-35}" --seed "$soak_seed" --fault-every 8 \
  --topology pgbouncer
build/ci/tests/tc_soak --duration "${TC_SOAK_TOPOLOGY_SECONDS:-35}" --seed "$soak_seed" --fault-every 8 \
  --topology standby
build/ci/tests/tc_soak --duration "${TC_SOAK_TOPOLOGY_SECONDS:-35}" --seed "$soak_seed" --fault-every 8 \
  --topology relay

step "systemd unit hardening (systemd-analyze security --offline=yes)"
if command -v systemd-analyze >/dev/null; then
  exposure=$(systemd-analyze security --offline=yes packaging/systemd/tenantcached.service 2>&1 |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  echo "overall exposure: ${exposure:-unknown} (target <= 2.0)"
  awk -v e="${exposure:-99}" 'BEGIN { exit !(e <= 2.0) }' || { echo "unit exposure above 2.0"; exit 1; }
else
  echo "systemd-analyze not installed: skipped"
fi

if [ -n "${TC_TEST_QUICK:-}" ]; then
  step "TC_TEST_QUICK set: sanitizer runs skipped"
  exit 0
fi

step "concurrency tests under ThreadSanitizer"
configure build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTC_SANITIZE=tsan -DTC_BUILD_BENCH=OFF
# Only what the tests labelled `concurrency` run (a test added to that label
# and not here fails below as "could not find executable").
cmake --build build/tsan --target stress_test reattach_test tenantcached
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir build/tsan --output-on-failure --timeout 900 -L concurrency

step "the suite under AddressSanitizer + UndefinedBehaviorSanitizer (the Python extension too; not the SQL-only tests)"
configure build/asan -DCMAKE_BUILD_TYPE=Debug -DTC_SANITIZE=asan -DTC_BUILD_BENCH=OFF
cmake --build build/asan
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  ctest --test-dir build/asan --output-on-failure --timeout 900 -LE sql_only

step "fuzzing (libFuzzer, ${TC_FUZZ_SECONDS:-15} s per target, ASan+UBSan+LeakSanitizer)"
bash packaging/fuzz.sh "${TC_FUZZ_SECONDS:-15}"

step "the comparative benchmark, smoke run (packaging/bench.sh --quick; figures not kept)"
bash packaging/bench.sh --quick --build-dir build/ci --output "$TC_TEST_DIR/RESULTS.md" >"$TC_TEST_DIR/bench.log" 2>&1 ||
  { tail -n 60 "$TC_TEST_DIR/bench.log"; exit 1; }
grep -c '^| ' "$TC_TEST_DIR/RESULTS.md" | xargs printf 'bench ran: %s table rows written\n'

step "the quickstart (the README's first command)"
out=$(bash packaging/quickstart.sh 2>&1) || { echo "$out"; exit 1; }
for want in "found in" "role	guest" "tenant by host  not in the cache" "synced          yes"; do
  grep -qF "$want" <<<"$out" || { echo "$out"; echo "quickstart output lacks: $want"; exit 1; }
done
echo "quickstart ran the whole story"

step "packaging: the .deb installed with dpkg, and a project built against it both ways"
cmake -S . -B build/package -G Ninja -DCMAKE_BUILD_TYPE=Release -DTC_BUILD_TESTS=OFF -DTC_BUILD_BENCH=OFF \
  -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
cmake --build build/package --target package >/dev/null
deb=$(ls build/package/tenantcache_*.deb)
echo "built $deb"
if [ "$(id -u)" -eq 0 ]; then
  dpkg -i "$deb" >/dev/null
  trap 'dpkg -P tenantcache >/dev/null 2>&1 || true; cleanup' EXIT
  /usr/sbin/tenantcached --check-config --config /etc/tenantcache/tenantcached.toml
  /usr/bin/tenantcachectl --help >/dev/null && echo "tenantcachectl --help: ok"
  getent passwd tenantcache >/dev/null && echo "user tenantcache: created"
  conf_mode=$(stat -c '%a %U:%G' /etc/tenantcache/tenantcached.toml)
  [ "$conf_mode" = "640 root:tenantcache" ] || { echo "the packaged config is $conf_mode, not 640 root:tenantcache"; exit 1; }
  echo "config: $conf_mode"
  consumer=$(mktemp -d)
  cmake -S packaging/consumer -B "$consumer/cmake" -G Ninja >/dev/null
  cmake --build "$consumer/cmake" >/dev/null
  "$consumer/cmake/consumer" | grep -q "libtenantcache 0.1.0" && echo "find_package(TenantCache): ok"
  # shellcheck disable=SC2046
  cc -std=c11 -Wall -Werror packaging/consumer/consumer.c $(pkg-config --cflags --libs tenantcache) -o "$consumer/pc"
  "$consumer/pc" | grep -q "libtenantcache 0.1.0" && echo "pkg-config tenantcache: ok"
  rm -rf "$consumer"
  dpkg -P tenantcache >/dev/null
  trap cleanup EXIT
else
  echo "not root: dpkg -i skipped"
fi

step "all tests passed"
