#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan, LeakSanitizer on) and runs
# each for a bounded time from its seed corpus in fuzz/corpus/<target>/. New
# inputs go to a scratch directory; the repository's corpora are only read.
# Exits non-zero on any crash, leak, timeout or sanitizer report; the
# reproducer is kept (and named) under the scratch directory.
#
#   packaging/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 30, all)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_notification fuzz_control fuzz_control_server fuzz_config fuzz_keys fuzz_relay)

CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTC_FUZZ=ON \
  -DTC_BUILD_TESTS=OFF -DTC_BUILD_BENCH=OFF -DTC_WERROR=ON >/dev/null
cmake --build build/fuzz --target "${targets[@]}"

scratch=${TC_FUZZ_DIR:-$(mktemp -d /tmp/tenantcache-fuzz-XXXXXX)}
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t/corpus" "$scratch/$t/artifacts"
  log="$scratch/$t/log"
  # -rss_limit_mb bounds memory per input; -timeout flags an input that
  # takes over 10 s (a hang) as a failure.
  if ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    "build/fuzz/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$scratch/$t/artifacts/" "$scratch/$t/corpus" "fuzz/corpus/$t" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    corpus=$(find "$scratch/$t/corpus" -type f | wc -l)
    printf '%-18s ok: %s runs in %ss, coverage %s edges, %s features, %s new corpus inputs\n' \
      "$t" "$runs" "$seconds" "${cov:-?}" "${ft:-?}" "$corpus"
  else
    echo "$t FAILED (log and reproducer under $scratch/$t):"
    tail -n 40 "$log"
    failed=1
  fi
done
[ "$failed" -eq 0 ] && [ -z "${TC_FUZZ_DIR:-}" ] && rm -rf "$scratch"
exit "$failed"
