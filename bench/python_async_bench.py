"""asyncio misses: the design the module ships against the one it did not.

`Namespace.lookup_async` answers a hit in C without leaving the loop; on a
miss it hands the daemon round trip to the loop's default executor (a thread
waits on the daemon's socket without the GIL). The alternative is to register
the daemon's socket with the event loop: one connection per loop, requests
multiplexed by request id (the daemon answers each when its fill completes),
no threads. This script measures both on the same daemon and database,
interleaved round by round, each round on keys nobody has read:

  - one miss at a time: the latency a request handler sees;
  - 200 misses started together (asyncio.gather): the time until all are
    answered, and how late a 1 ms ticker task on the same loop runs meanwhile.

The loop-registered side is a prototype written here in Python on the
control-socket protocol (client/src/protocol.h, version 1): just enough to
answer a lookup, with no report frames, reconnects or timeouts.

Run by bench/python_async_bench.cc, which starts PostgreSQL and the daemon.
"""

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import struct
import sys
import time

import tenantcache

USER = "00000000-0001-4000-8000-%012x"
OP_LOOKUP = 1
HEADER = struct.Struct("<IBBhI")  # length, version, op, status, request id


class LoopLink(asyncio.Protocol):
    """The daemon's control socket registered with the loop."""

    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.waiting = {}
        self.next_id = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        while len(self.buf) >= 4:
            (length,) = struct.unpack_from("<I", self.buf)
            if len(self.buf) < 4 + length:
                return
            _, version, op, status, rid = HEADER.unpack_from(self.buf)
            payload = bytes(self.buf[HEADER.size:4 + length])
            del self.buf[:4 + length]
            fut = self.waiting.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result((status, payload))

    def connection_lost(self, exc):
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the daemon closed the control socket"))

    def lookup(self, ns, key):
        self.next_id += 1
        k = key.encode()
        n = ns.encode()
        payload = bytes([len(n)]) + n + struct.pack("<H", len(k)) + k
        fut = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = fut
        self.transport.write(HEADER.pack(8 + len(payload), 1, OP_LOOKUP, 0, self.next_id) + payload)
        return fut


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cache", required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--serial", type=int, default=100, help="one-at-a-time misses per round and design")
    p.add_argument("--burst", type=int, default=200, help="misses started together per round and design")
    args = p.parse_args()
    need = args.rounds * 3 * (args.serial + args.burst)
    if need > args.users:
        sys.exit("python_async_bench: %d cold keys needed, %d users" % (need, args.users))
    cold = iter(range(1, args.users + 1))

    cache = tenantcache.Cache.open(args.cache)
    users = cache.namespace("user")

    async def executor_miss(key):
        r = await users.lookup_async(key, timeout_ms=10000)
        if not r.found:
            raise RuntimeError("lookup_async %s: %s %s" % (key, r.status, r.detail))

    wide = concurrent.futures.ThreadPoolExecutor(max_workers=args.burst)

    async def wide_miss(key):
        # What lookup_async does, with an executor as wide as the burst.
        if users.get(key).found:
            raise RuntimeError("%s was cached already" % key)
        r = await asyncio.get_running_loop().run_in_executor(wide, cache._ask_daemon, "user", key, 10000)
        if not r.found:
            raise RuntimeError("_ask_daemon %s: %s %s" % (key, r.status, r.detail))

    async def run():
        loop = asyncio.get_running_loop()
        _, link = await loop.create_unix_connection(LoopLink, args.socket)

        async def loop_miss(key):
            if users.get(key).found:
                raise RuntimeError("%s was cached already" % key)
            status, _ = await link.lookup("user", key)
            if status != 0:
                raise RuntimeError("loop-registered lookup %s: status %d" % (key, status))

        designs = [("thread hand-off (shipped: `lookup_async`, the loop's default executor: %d threads here)"
                    % min(32, (os.cpu_count() or 1) + 4), executor_miss),
                   ("thread hand-off, an executor of %d threads" % args.burst, wide_miss),
                   ("socket registered with the loop (prototype)", loop_miss)]
        serial = {name: [] for name, _ in designs}
        burst = {name: [] for name, _ in designs}
        lag = {name: [] for name, _ in designs}
        for rnd in range(args.rounds):
            order = designs[rnd % len(designs):] + designs[:rnd % len(designs)]
            for name, miss in order:
                for _ in range(args.serial):
                    key = USER % next(cold)
                    t0 = time.perf_counter_ns()
                    await miss(key)
                    serial[name].append(time.perf_counter_ns() - t0)
                keys = [USER % next(cold) for _ in range(args.burst)]
                done = False
                worst = 0

                async def ticker():
                    nonlocal worst
                    while not done:
                        t = time.perf_counter_ns()
                        await asyncio.sleep(0.001)
                        worst = max(worst, time.perf_counter_ns() - t - 1_000_000)

                tick = asyncio.ensure_future(ticker())
                await asyncio.sleep(0.005)
                t0 = time.perf_counter_ns()
                await asyncio.gather(*(miss(k) for k in keys))
                burst[name].append(time.perf_counter_ns() - t0)
                done = True
                await tick
                lag[name].append(worst)
        link.transport.close()
        return designs, serial, burst, lag

    designs, serial, burst, lag = asyncio.run(run())
    cache.close()

    def pct(v, q):
        v = sorted(v)
        return v[min(len(v) - 1, int(q * len(v)))]

    print("Python %s; %d rounds, designs interleaved; each round per design: %d misses one at a time, then %d "
          "started together on one loop (every key cold, filled from PostgreSQL by the daemon).\n"
          % (sys.version.split()[0], args.rounds, args.serial, args.burst))
    print("| asyncio miss path | one miss: p50 | p99 | %d together: median time to all answered | misses/s "
          "| 1 ms ticker's worst lateness (median of rounds) |" % args.burst)
    print("|---|---:|---:|---:|---:|---:|")
    for name, _ in designs:
        b = statistics.median(burst[name])
        print("| %s | %.0f µs | %.0f µs | %.1f ms | %.0f | %.2f ms |"
              % (name, pct(serial[name], 0.5) / 1e3, pct(serial[name], 0.99) / 1e3, b / 1e6, args.burst / (b / 1e9),
                 statistics.median(lag[name]) / 1e6))
    a, w, b = (statistics.median(burst[n]) for n, _ in designs)
    s_a, s_w, s_b = (pct(serial[n], 0.5) for n, _ in designs)
    print("\nSame run, against the shipped thread hand-off: one miss p50 %.2f× (loop-registered), %.2f× (wide "
          "executor); %d together, time to all answered %.2f× (loop-registered), %.2f× (wide executor)."
          % (s_b / s_a, s_w / s_a, args.burst, b / a, w / a))
    wide.shutdown()


if __name__ == "__main__":
    main()
