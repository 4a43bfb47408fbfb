#!/usr/bin/env bash
# The Rust crate's hit latency beside the C API and a HashMap behind an
# RwLock (client/rust/examples/bench.rs), on a cache file of 100k users from
# bench/make_cache (hits need no daemon). Prints a Markdown section for
# bench/RESULTS.md; packaging/bench.sh runs it in the same run as the C and
# Python figures.
#
#   bench/rust_bench.sh BUILD_DIR [--quick] [--c-p50-ns NS]
#
# BUILD_DIR holds libtenantcache.so and bench/make_cache. Cargo builds offline
# into BUILD_DIR/rust-target; packaging/cargo.sh picks (or installs) the
# toolchain.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: bench/rust_bench.sh BUILD_DIR [--quick] [--c-p50-ns NS]" >&2; exit 2; }
build=$(cd "$1" && pwd)
shift
samples=200000
c_p50=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) samples=20000 ;;
    --c-p50-ns) c_p50=$2; shift ;;
    *) echo "usage: bench/rust_bench.sh BUILD_DIR [--quick] [--c-p50-ns NS]" >&2; exit 2 ;;
  esac
  shift
done

cargo=$(bash "$root/packaging/cargo.sh")
(cd "$root/client/rust" && CARGO_NET_OFFLINE=true CARGO_TARGET_DIR="$build/rust-target" TENANTCACHE_LIB_DIR="$build" \
  "$cargo" build --offline --locked --release --quiet --example bench)
work=$(mktemp -d "$([ -w /dev/shm ] && echo /dev/shm || echo /tmp)/tenantcache-rust-bench-XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
"$build/bench/make_cache" "$work/cache" 100000 >/dev/null
TC_RUSTC_VERSION=$("$(dirname "$cargo")/rustc" -V) \
  "$build/rust-target/release/examples/bench" --cache "$work/cache" --samples "$samples" --c-p50-ns "$c_p50"
