#!/usr/bin/env python3
"""Python hit latency: tenantcache's module beside cachetools.TTLCache, in one run.

    bench/python_bench.py BUILD_DIR [seconds per figure, default 2]

BUILD_DIR holds libtenantcache.so and bench/make_cache (which writes a cache
file with 100k users; no daemon is needed for hits). The same 1k hot user ids
are read from a cachetools.TTLCache (Debian python3-cachetools) holding the
same values as dicts, without and with the lock its documentation says it
needs under threads, and from tenantcache (get: shared memory only).
"""

import os
import subprocess
import sys
import tempfile
import threading
import time

build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "client", "python"))
os.environ.setdefault("TENANTCACHE_LIBRARY", os.path.join(build, "libtenantcache.so"))
import tenantcache  # noqa: E402

try:
    import cachetools
except ImportError:
    sys.exit("cachetools is missing: apt-get install python3-cachetools (and run with /usr/bin/python3)")

USER = "00000000-0001-4000-8000-%012x"
HOT = []  # 1k resident keys (a full 8-way bucket evicts a few percent)


def per_op_ns(fn):
    """Median over runs of the mean time per call of fn(key) over the hot keys."""
    runs = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(runs) < 5:
        start = time.perf_counter_ns()
        for k in HOT:
            fn(k)
        runs.append((time.perf_counter_ns() - start) / len(HOT))
    runs.sort()
    return runs[len(runs) // 2]


def main():
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    with tempfile.TemporaryDirectory(dir=shm) as d:
        path = os.path.join(d, "cache")
        subprocess.run([os.path.join(build, "bench", "make_cache"), path, "100000"], check=True, capture_output=True)
        cache = tenantcache.Cache.open(path)
        ttl = cachetools.TTLCache(maxsize=200000, ttl=3600)
        n = 0
        while len(HOT) < 1000:
            n += 1
            r = cache.get("user", USER % n)
            if r.found:
                HOT.append(USER % n)
                ttl[USER % n] = {"tenant": r.value.tenant, **r.value.fields}
        lock = threading.Lock()

        def ttl_get(k):
            return ttl[k]["role"]

        def ttl_locked(k):
            with lock:
                return ttl[k]["role"]

        def tc_get(k):
            return cache.get("user", k).value["role"]

        figures = [("cachetools.TTLCache, no lock", per_op_ns(ttl_get)),
                   ("cachetools.TTLCache + threading.Lock", per_op_ns(ttl_locked)),
                   ("tenantcache get", per_op_ns(tc_get))]
        base = figures[0][1]
        print("Python %s, hot set of 1k keys, value field read included:" % sys.version.split()[0])
        for name, ns in figures:
            print("  %-38s %8.0f ns  %5.2fx" % (name, ns, ns / base))
        ratio = figures[2][1] / base
        print("tenantcache / cachetools: %.2fx (target <= 1.0x: %s)" % (ratio, "meets target" if ratio <= 1.0
                                                                         else "MISSES target"))
        cache.close()


if __name__ == "__main__":
    main()
