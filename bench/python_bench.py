#!/usr/bin/env python3
"""Python hit latency: tenantcache's module beside cachetools.TTLCache, in one run.

    bench/python_bench.py BUILD_DIR [--seconds S] [--c-p50-ns NS]

BUILD_DIR holds libtenantcache.so and bench/make_cache (which writes a cache
file with 100k users; no daemon is needed for hits). Random user ids over the
100k are read from a cachetools.TTLCache (Debian python3-cachetools) holding
the same values as dicts, without and with the lock its documentation says it
needs under threads, and from tenantcache (get: shared memory only), each
followed by reading the role. Prints a Markdown table: per-lookup p50 and p99
(perf_counter_ns around each call, its own cost subtracted), throughput, and
the ratio to tenantcache's Python module (and to its C API, given
--c-p50-ns from bench/compare_bench in the same run).
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("build", nargs="?", default="build")
parser.add_argument("--seconds", type=float, default=2.0)
parser.add_argument("--c-p50-ns", type=float, default=0.0)
args = parser.parse_args()
build = os.path.abspath(args.build)
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "client", "python"))
os.environ.setdefault("TENANTCACHE_LIBRARY", os.path.join(build, "libtenantcache.so"))
import tenantcache  # noqa: E402

try:
    import cachetools
except ImportError:
    sys.exit("cachetools is missing: apt-get install python3-cachetools (and run with /usr/bin/python3)")

USER = "00000000-0001-4000-8000-%012x"


def timer_overhead():
    samples = []
    for _ in range(200000):
        a = time.perf_counter_ns()
        b = time.perf_counter_ns()
        samples.append(b - a)
    samples.sort()
    return samples[len(samples) // 2]


def measure(fn, keys, overhead):
    """(p50, p99) per call in ns and calls per second (untimed loop)."""
    for k in keys[:2000]:
        fn(k)
    lat = []
    clock = time.perf_counter_ns
    for k in keys:
        a = clock()
        fn(k)
        lat.append(clock() - a - overhead)
    lat.sort()
    start = time.perf_counter()
    for k in keys:
        fn(k)
    ops = len(keys) / (time.perf_counter() - start)
    return max(0, lat[len(lat) // 2]), max(0, lat[len(lat) * 99 // 100]), ops


def main():
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    with tempfile.TemporaryDirectory(dir=shm) as d:
        path = os.path.join(d, "cache")
        subprocess.run([os.path.join(build, "bench", "make_cache"), path, "100000"], check=True, capture_output=True)
        cache = tenantcache.Cache.open(path)
        ttl = cachetools.TTLCache(maxsize=200000, ttl=3600)
        resident = []
        for n in range(1, 100001):
            r = cache.get("user", USER % n)
            if r.found:
                resident.append(USER % n)
                ttl[USER % n] = {"tenant": r.value.tenant, **r.value.fields}
        rng = random.Random(42)
        count = max(20000, int(200000 * args.seconds / 2))
        keys = [rng.choice(resident) for _ in range(count)]
        lock = threading.Lock()

        def ttl_get(k):
            return ttl[k]["role"]

        def ttl_locked(k):
            with lock:
                return ttl[k]["role"]

        def tc_get(k):
            return cache.get("user", k).value["role"]

        overhead = timer_overhead()
        rows = [("tenantcache Python module (`Cache.get` + field)", measure(tc_get, keys, overhead)),
                ("`cachetools.TTLCache`, no lock (per process)", measure(ttl_get, keys, overhead)),
                ("`cachetools.TTLCache` + `threading.Lock`", measure(ttl_locked, keys, overhead))]
        base = rows[0][1][0]
        print("Python %s; %d random keys over the %d users resident in both; the timer's own cost (%d ns) "
              "subtracted.\n" % (sys.version.split()[0], len(keys), len(resident), overhead))
        c_col = " | p50 ratio to tenantcache C" if args.c_p50_ns > 0 else ""
        print("| store | p50 | p99 | throughput (1 thread) | p50 ratio to tenantcache Python%s |" % c_col)
        print("|---|---:|---:|---:|---:|" + ("---:|" if c_col else ""))
        for name, (p50, p99, ops) in rows:
            extra = " | %.1f×" % (p50 / args.c_p50_ns) if c_col else ""
            print("| %s | %s | %s | %.2f M/s | %.2f×%s |" % (name, fmt(p50), fmt(p99), ops / 1e6, p50 / base, extra))
        cache.close()


def fmt(ns):
    return "%.0f ns" % ns if ns < 10000 else "%.1f µs" % (ns / 1000)


if __name__ == "__main__":
    main()
