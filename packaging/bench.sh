#!/usr/bin/env bash
# The comparative benchmark, in one command: installs what it needs
# (packaging/bootstrap.sh --bench), builds a Release tree in build/bench,
# starts Redis and memcached on loopback (free ports, private directories)
# and a throwaway PostgreSQL with the real tenantcached (bench/compare_bench
# and bench/miss_bench do that), runs bench/compare_bench,
# bench/python_bench.py, bench/rust_bench.sh, bench/miss_bench,
# bench/pgbouncer_bench, bench/sql_write_cost.sh, bench/cache_bench and
# bench/hit_instructions (under callgrind), writes the
# results with a description of the machine to bench/RESULTS.md, and stops
# everything it started.
#
#   packaging/bench.sh [--quick] [--output FILE] [--build-dir DIR]
#
# --quick: a tenth of the samples (a smoke run; the figures are noisier).
# --build-dir: use an existing build tree (packaging/test.sh's smoke run)
# instead of configuring build/bench as Release.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
quick=()
output=bench/RESULTS.md
build=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=(--quick) ;;
    --output) output=$2; shift ;;
    --build-dir) build=$2; shift ;;
    *) echo "usage: packaging/bench.sh [--quick] [--output FILE] [--build-dir DIR]" >&2; exit 2 ;;
  esac
  shift
done

bash packaging/bootstrap.sh --bench
if [ -z "$build" ]; then
  build=build/bench
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTC_BUILD_TESTS=ON -DTC_BUILD_BENCH=ON >/dev/null
fi
cmake --build "$build" --target compare_bench miss_bench pgbouncer_bench make_cache tenantcache tenantcached >/dev/null
# The Python extension bench/python_bench.py reads (BUILD/python/lib, built by
# setup.py for /usr/bin/python3, the interpreter that runs it below).
cmake --build "$build" --target python_extension >/dev/null
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt")

work=$(mktemp -d /tmp/tenantcache-bench-XXXXXX)
chmod 755 "$work"
mkdir -m 755 "$work/pg" "$work/test"
export TC_PG_ROOT=$work/pg TC_TEST_DIR=$work/test
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for pid_file in "$TC_PG_ROOT"/*/data/postmaster.pid; do
    [ -f "$pid_file" ] && kill -QUIT "$(head -n 1 "$pid_file")" 2>/dev/null || true
  done
  for pid_file in "$TC_PG_ROOT"/tc-bouncer-*/pgbouncer.pid; do
    [ -f "$pid_file" ] && kill -TERM "$(head -n 1 "$pid_file")" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  for m in "$work"/hit-*; do mountpoint -q "$m" && umount "$m" || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_listening() {  # PORT NAME LOG
  for _ in $(seq 1 200); do
    listening "$1" && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "$2 did not start:" >&2
  cat "$3" >&2
  exit 1
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --logfile "$work/redis.log" &
pids+=($!)
wait_listening "$redis_port" redis-server "$work/redis.log"

memcached_port=$(free_port)
as_user=()
[ "$(id -u)" -eq 0 ] && as_user=(-u nobody)
memcached -l 127.0.0.1 -p "$memcached_port" -U 0 -m 1024 "${as_user[@]}" >"$work/memcached.log" 2>&1 &
pids+=($!)
wait_listening "$memcached_port" memcached "$work/memcached.log"

started=$(date -u '+%Y-%m-%d %H:%M UTC')
"$build/bench/compare_bench" --redis-port "$redis_port" --memcached-port "$memcached_port" "${quick[@]}" |
  tee "$work/compare.md"
c_p50=$(sed -n 's/.*tc_c_p50_ns=\([0-9.]*\).*/\1/p' "$work/compare.md")
seconds=2
[ ${#quick[@]} -gt 0 ] && seconds=0.2
/usr/bin/python3 bench/python_bench.py "$build" --seconds "$seconds" --c-p50-ns "${c_p50:-0}" |
  tee "$work/python.md"
# asyncio misses: the thread hand-off lookup_async ships beside the daemon's
# socket registered with the loop; about 10 seconds.
cmake --build "$build" --target python_async_bench >/dev/null
"$build/bench/python_async_bench" /usr/bin/python3 "$build/python/lib" "${quick[@]}" | tee "$work/python_async.md"
"$build/bench/pgbouncer_bench" "${quick[@]}" | tee "$work/pgbouncer.md"

bash bench/rust_bench.sh "$build" "${quick[@]}" --c-p50-ns "${c_p50:-0}" | tee "$work/rust.md"

"$build/bench/miss_bench" "${quick[@]}" | tee "$work/miss.md"

# What the triggers cost the application's writes: its own
# throwaway cluster, pgbench; about 2.5 minutes (15 seconds with --quick).
sql_write_args=(3 2)
[ ${#quick[@]} -gt 0 ] && sql_write_args=(1 1)
bash bench/sql_write_cost.sh "${sql_write_args[@]}" | tee "$work/sql_write_cost.md"

# Fleets: N hosts' listeners and heartbeats on one primary (its own
# throwaway cluster); about 4 minutes (20 seconds with --quick: N = 1, 50).
cmake --build "$build" --target fleet_bench >/dev/null
"$build/bench/fleet_bench" "${quick[@]}" | tee "$work/fleet.md"

# The read path with the cache file in 2 MiB pages and in 4 KiB pages:
# cache_bench with its file on a private tmpfs mounted huge=advise (the
# writer's MADV_HUGEPAGE then gets 2 MiB pages), then huge=never (what
# /dev/shm is by default). Mounting needs root; without it the section says so.
cmake --build "$build" --target cache_bench hit_instructions >/dev/null
reps=5
[ ${#quick[@]} -gt 0 ] && reps=1
{
  echo "## 11. The read path in 2 MiB and in 4 KiB pages"
  echo
  echo "\`build/bench/cache_bench\` (Google Benchmark: each benchmark ${reps} times for at least 0.1 s, interleaved at"
  echo "random with the others, and the median taken; then the per-lookup latency, 1 and 2 reader processes,"
  echo "and the memory figure) with its cache file on a private tmpfs"
  echo "mounted \`huge=advise\`, where the writer's \`MADV_HUGEPAGE\` gets 2 MiB pages, and again on one mounted"
  echo "\`huge=never\`, as \`/dev/shm\` is by default. Each run's summary as it printed it. Its first table times the"
  echo "same random lookups of each store three ways in one run: a tight loop of independent lookups (which the"
  echo "processor may overlap: its inverse is the untimed throughput), a chain in which each key depends on the"
  echo "lookup before (one lookup's latency), and each lookup timed on its own with the TSC (section 1's method,"
  echo "where the timer keeps lookups from overlapping); the pointer chase is one dependent load, the floor."
  echo "Every store gets its keys as a request handler does, in hand: laid out one after another in lookup"
  echo "order, not fetched from a table of 100k strings (two dependent misses per lookup that are no store's own)."
  echo
} >"$work/pages.md"
for huge in advise never; do
  dir=$work/hit-$huge
  mkdir -m 755 "$dir"
  if [ "$(id -u)" -ne 0 ] || ! mount -t tmpfs -o "size=1g,mode=0755,huge=$huge" tmpfs "$dir"; then
    echo "Not measured: mounting a tmpfs needs root." >>"$work/pages.md"
    break
  fi
  TMPDIR=$dir "$build/bench/cache_bench" --benchmark_repetitions="$reps" >"$work/pages-$huge.txt" 2>&1 ||
    { umount "$dir"; cat "$work/pages-$huge.txt" >&2; exit 1; }
  umount "$dir"
  {
    echo "tmpfs \`huge=$huge\`:"
    echo
    echo '```'
    sed -n '/^== tenantcache read path: summary/,$p' "$work/pages-$huge.txt"
    echo '```'
    echo
  } | tee -a "$work/pages.md"
done
# The same hit in instructions, which do not move between runs as time does
# here: two runs under callgrind with different lookup counts, the
# difference per lookup (the fill and the setup cancel out).
if command -v valgrind >/dev/null; then
  hit_ir() {
    valgrind --tool=callgrind --callgrind-out-file="$work/hit.cg" "$build/bench/hit_instructions" "$1" \
      >"$work/hit.out" 2>&1 || { cat "$work/hit.out" >&2; exit 1; }
    sed -n 's/^\(summary\|totals\): //p' "$work/hit.cg" | head -n 1
  }
  ir_a=$(hit_ir 10000)
  ir_b=$(hit_ir 60000)
  echo "Instructions per random hit, \`tc_cache_get\` and one \`tc_value_field\` read over 20k resident users" \
    "(\`build/bench/hit_instructions\` under callgrind, 10k and then 60k lookups: the difference per lookup," \
    "the loop included): $(((ir_b - ir_a) / 50000))." | tee -a "$work/pages.md"
else
  echo "Instructions per hit: not counted (valgrind is not installed; packaging/bootstrap.sh --bench installs it)." |
    tee -a "$work/pages.md"
fi

pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
{
  echo "# tenantcache benchmark results"
  echo
  echo "Written by \`packaging/bench.sh${quick:+ --quick}\` on $started. Every figure below comes from that one run,"
  echo "on this machine; rerun the command to measure yours. The figures of a shared VM move by ±30%"
  echo "between runs: read the ratios, not the last digit."
  echo
  echo "| machine | |"
  echo "|---|---|"
  echo "| CPU | $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores available$(command -v systemd-detect-virt >/dev/null && v=$(systemd-detect-virt 2>/dev/null) && echo ", virtualised ($v)") |"
  echo "| memory | $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) |"
  echo "| system | $(. /etc/os-release && echo "$PRETTY_NAME"), Linux $(uname -r) |"
  echo "| PostgreSQL | $("$pg_bin/postgres" --version | awk '{print $3}') (throwaway cluster: unix socket, fsync off) |"
  echo "| Redis | $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') (loopback TCP, no persistence) |"
  echo "| memcached | $(memcached -V | awk '{print $2}') (loopback TCP) |"
  echo "| PgBouncer | $(/usr/sbin/pgbouncer --version | awk 'NR == 1 {print $2}') (unix socket, pool_mode = transaction) |"
  echo "| compiler | $(c++ --version | head -n 1), CMake build type $build_type |"
  echo "| Python | $(/usr/bin/python3 --version | awk '{print $2}'), cachetools $(/usr/bin/python3 -c 'import cachetools; print(cachetools.__version__)') |"
  echo
  # Section 1 (C), then the Python table, then the rest.
  awk '/^## 2\./ { exit } { print }' "$work/compare.md" | grep -v '^<!--'
  echo "### The same lookup from Python"
  echo
  cat "$work/python.md"
  echo
  echo "### A miss from Python under asyncio: the thread hand-off beside a socket registered with the loop"
  echo
  cat "$work/python_async.md"
  echo
  echo "### The same lookup from Rust"
  echo
  cat "$work/rust.md"
  echo
  awk '/^## 2\./ { on = 1 } on { print }' "$work/compare.md"
  cat "$work/miss.md"
  cat "$work/pgbouncer.md"
  cat "$work/sql_write_cost.md"
  cat "$work/pages.md"
  cat "$work/fleet.md"
} >"$output"
echo
echo "wrote $output"
