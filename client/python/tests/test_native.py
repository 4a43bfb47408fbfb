"""The CPython extension under attack, against the real daemon and database:
bad input, a closed cache, close() racing threads, leaks over a million
reads, pre-fork servers with threads, asyncio, sub-interpreters, and the
stubs that describe it.

Run by tests/python_test.cc, which starts PostgreSQL and tenantcached and
passes TC_CACHE_PATH (the daemon's cache file) and TC_PSQL (a psql command
line for the test database).
"""

import ast
import asyncio
import gc
import os
import subprocess
import sys
import threading
import time
import unittest

import tenantcache
from tenantcache import Error, Status
from support import TENANT, USER, psql, wait_for

PATH = os.environ["TC_CACHE_PATH"]


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


class BadInput(unittest.TestCase):
    def setUp(self):
        self.cache = tenantcache.Cache.open(PATH)

    def tearDown(self):
        self.cache.close()

    def test_keys_of_the_wrong_type_raise_type_error(self):
        for key in (1, None, 1.5, ["a"], object()):
            for call in (lambda k: self.cache.get("user", k), lambda k: self.cache.lookup("user", k),
                         lambda k: self.cache.lookup_async("user", k), lambda k: self.cache.invalidate("user", k),
                         lambda k: self.cache.namespace("user").get(k)):
                with self.assertRaises(TypeError) as e:
                    call(key)
                self.assertIn("key must be str or bytes, not %s" % type(key).__name__, str(e.exception))
        with self.assertRaises(TypeError):
            self.cache.invalidate_tenant(42)
        with self.assertRaises(TypeError) as e:
            self.cache.get(7, USER % 1)
        self.assertIn("namespace must be str or Namespace", str(e.exception))

    def test_keys_no_row_can_have_are_invalid_key_answers(self):
        # Embedded NUL, oversize (up to 16 MiB), wrong shape, invalid UTF-8:
        # the library's key validation answers INVALID_KEY, for str and bytes.
        bad = ["00000000-0001-4000-8000-00000000000\x00", "\x00", "x" * 256, "y" * (16 << 20),
               b"\xff\xfe" * 20, bytearray(b"not-a-uuid"), memoryview(b"0" * 300), ""]
        for key in bad:
            self.assertEqual(self.cache.get("user", key).status, Status.INVALID_KEY, repr(key[:20]))
            self.assertEqual(self.cache.lookup("user", key, timeout_ms=1000).status, Status.INVALID_KEY)
            with self.assertRaises(Error) as e:
                self.cache.invalidate("user", key)
            self.assertEqual(e.exception.status, Status.INVALID_KEY)
        # A str that is not valid Unicode cannot be encoded: ValueError.
        with self.assertRaises(UnicodeEncodeError):
            self.cache.get("user", "\udc80")
        self.assertTrue(issubclass(UnicodeEncodeError, ValueError))

    def test_bad_namespaces_and_arguments(self):
        with self.assertRaises(ValueError) as e:
            self.cache.get("us\x00er", USER % 1)
        self.assertIn("NUL", str(e.exception))
        with self.assertRaises(Error) as e:
            self.cache.namespace("no_such_namespace")
        self.assertEqual(e.exception.status, Status.NO_NAMESPACE)
        self.assertIn("no_such_namespace", str(e.exception))
        for timeout in (-1, 2**31, 2**80):
            with self.assertRaises(ValueError) as e:
                self.cache.lookup("user", USER % 1, timeout_ms=timeout)
            self.assertIn("timeout_ms must be between 0 and 2147483647", str(e.exception))
        for timeout in (1.5, "10", True):
            with self.assertRaises(TypeError):
                self.cache.lookup("user", USER % 1, timeout_ms=timeout)
        with self.assertRaises(TypeError):
            self.cache.lookup("user", USER % 1, timeout=5)
        with self.assertRaises(TypeError):
            self.cache.get("user")
        with tenantcache.Cache.open(PATH) as other:
            with self.assertRaises(ValueError) as e:
                self.cache.get(other.namespace("user"), USER % 1)
            self.assertIn("belongs to another Cache", str(e.exception))
        with self.assertRaises(ValueError):
            tenantcache.Result(Status.FOUND)  # FOUND without a Value
        with self.assertRaises(ValueError):
            tenantcache.Result(Status.IO)  # not a status a read answers with
        with self.assertRaises(TypeError):
            tenantcache.Cache()

    def test_open_errors_name_the_path_and_the_reason(self):
        with self.assertRaises(Error) as e:
            tenantcache.Cache.open("/nonexistent/dir/cache")
        self.assertEqual(e.exception.status, Status.IO)
        self.assertIn("/nonexistent/dir/cache", str(e.exception))
        self.assertIn("No such file or directory", str(e.exception))
        with self.assertRaises(Error) as e:
            tenantcache.Cache.open(__file__)
        self.assertEqual(e.exception.status, Status.LAYOUT)
        with self.assertRaises(TypeError):
            tenantcache.Cache.open(3.5)

    def test_a_closed_cache_raises_error_for_every_call(self):
        ns = self.cache.namespace("user")
        self.assertTrue(self.cache.lookup("user", USER % 1, timeout_ms=5000).found)
        self.cache.close()
        self.assertTrue(self.cache.closed)
        calls = [lambda: self.cache.get("user", USER % 1), lambda: self.cache.lookup("user", USER % 1),
                 lambda: self.cache.lookup_async("user", USER % 1), lambda: self.cache.invalidate("user", USER % 1),
                 lambda: self.cache.invalidate_tenant(TENANT % 1), lambda: self.cache.flush(),
                 lambda: self.cache.stats(), lambda: self.cache.info(), lambda: self.cache.daemon_stats(),
                 lambda: self.cache.namespace("user"), lambda: ns.get(USER % 1), lambda: ns.lookup(USER % 1)]
        for call in calls:
            with self.assertRaises(Error) as e:
                call()
            self.assertEqual(e.exception.status, Status.INVALID_ARG)
            self.assertIn("cache is closed", str(e.exception))
        self.cache.close()  # idempotent

    def test_close_while_threads_wait_on_the_daemon_never_crashes(self):
        # Threads send misses (the GIL is released while they wait); close()
        # runs in the middle. Every call answers or raises "cache is closed".
        outcomes = []
        started = threading.Barrier(5)

        def worker(n):
            started.wait()
            for i in range(200):
                try:
                    r = self.cache.lookup("user", USER % (300 + n * 200 + i), timeout_ms=5000)
                    outcomes.append(r.status)
                except Error as e:
                    outcomes.append(e.status)
                    if e.status != Status.INVALID_ARG:
                        raise

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        started.wait()
        self.assertTrue(wait_for(lambda: len(outcomes) >= 20))
        self.cache.close()
        for t in threads:
            t.join()
        self.assertIn(Status.INVALID_ARG, outcomes, "close() took effect")
        self.assertTrue(set(outcomes) <= {Status.FOUND, Status.NOT_FOUND, Status.INVALID_ARG}, set(outcomes))


class Behaviour(unittest.TestCase):
    def setUp(self):
        self.cache = tenantcache.Cache.open(PATH)

    def tearDown(self):
        self.cache.close()

    def test_a_million_reads_leak_nothing(self):
        key = USER % 2
        self.assertTrue(self.cache.lookup("user", key, timeout_ms=5000).found)
        ns = self.cache.namespace("user")
        get = self.cache.get

        def reads(n):
            for i in range(n):
                r = get("user", key) if i & 1 else ns.get(key)
                r.value["role"]
                r.value.tenant
                get("user", "not-a-uuid")
                try:
                    get("no_such_namespace", key)
                except Error:
                    pass

        reads(100000)  # warm: allocator arenas, the names cache
        gc.collect()
        before_rss, before_objects = rss_kib(), len(gc.get_objects())
        reads(1000000)
        gc.collect()
        grown_kib, grown_objects = rss_kib() - before_rss, len(gc.get_objects()) - before_objects
        # One leaked 64-byte object per read would be 64 MB: a few MiB of
        # allocator noise is allowed, not that.
        self.assertLess(grown_kib, 4096, "RSS grew by %d KiB over a million reads" % grown_kib)
        self.assertLess(grown_objects, 100)

    def test_results_are_shared_values_and_stats_count_each_read_once(self):
        key = USER % 3
        before = self.cache.stats()
        first = self.cache.lookup("user", key, timeout_ms=5000)  # a miss, then the daemon's fill
        self.assertTrue(first.found, first)
        hit = self.cache.get("user", key)
        self.assertEqual(hit.value, first.value)
        self.assertEqual(hit.value.key, key)
        self.assertEqual(dict(hit.value.fields), {name: hit.value[name] for name in hit.value})
        self.assertEqual(len(hit.value), 3)
        self.assertIn("role", hit.value)
        self.assertNotIn("nope", hit.value)
        self.assertIsNone(hit.value.get("nope"))
        with self.assertRaises(KeyError):
            hit.value["nope"]
        made = tenantcache.Value(hit.value.tenant, dict(hit.value.fields), key=key)
        self.assertEqual(made, hit.value, "a Value built for a service's tests reads as a real one")
        self.assertTrue(tenantcache.Result(Status.FOUND, made).found)
        self.assertIsNone(tenantcache.Value("t", {"role": None})["role"])
        with self.assertRaises(TypeError):
            tenantcache.Value("t", {"role": 1})
        with self.assertRaises(ValueError):
            tenantcache.Value("t", {"role": "x" * 10000})
        after = self.cache.stats()
        self.assertEqual(after["misses"] - before["misses"], 1, "lookup() counts its miss once")
        self.assertEqual(after["hits"] - before["hits"], 1)
        # Statuses without a value are shared immutable objects.
        self.assertIs(self.cache.get("user", "x"), self.cache.get("user", "y"))
        info = self.cache.info()
        self.assertTrue(info["available"] and info["synced"])
        self.assertIn("hits", self.cache.daemon_stats())

    @unittest.skipIf(os.environ.get("TC_PYTHON_UNDER_ASAN"),
                     "ASan's allocator (GCC 12) has no fork handlers: a child forked while another thread allocates "
                     "deadlocks inside ASan; the regular build runs this test")
    def test_a_cache_opened_before_fork_works_in_children_with_threads(self):
        # The gunicorn pattern: open in the master, whose own threads are busy
        # with the cache (some waiting on the daemon) while it forks; each
        # worker starts threads at once and reads, fills and closes.
        self.assertTrue(self.cache.lookup("user", USER % 4, timeout_ms=5000).found)
        ns = self.cache.namespace("user")
        stop = threading.Event()
        parent_errors = []

        def parent_reader(n):
            i = 0
            while not stop.is_set():
                r = ns.lookup(USER % (100 + (n * 37 + i) % 100), timeout_ms=5000)
                if r.status not in (Status.FOUND, Status.NOT_FOUND):
                    parent_errors.append(r)
                i += 1

        def parent_asker():
            # Almost always waiting on the daemon without the GIL: a call in
            # flight at fork, which never returns in the child.
            while not stop.is_set():
                self.cache.daemon_stats(timeout_ms=5000)

        busy = [threading.Thread(target=parent_reader, args=(n,)) for n in range(3)]
        busy.append(threading.Thread(target=parent_asker))
        for t in busy:
            t.start()
        pids = []
        try:
            for child in range(4):
                pid = os.fork()
                if pid == 0:
                    os._exit(self._child(ns, child))
                pids.append(pid)
        finally:
            stop.set()
            for t in busy:
                t.join()
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0, "a child failed (its exit code: see _child)")
        self.assertEqual(parent_errors, [])
        for child in range(4):
            self.assertTrue(self.cache.get("user", USER % (50 + child)).found, "a child's fill is shared")

    @staticmethod
    def _child(ns, child):
        errors = []

        def work(t):
            try:
                for i in range(100):
                    if not ns.get(USER % 4).found:
                        errors.append("hit")
                    r = ns.lookup(USER % (60 + (child * 13 + t * 10 + i) % 40), timeout_ms=5000)
                    if r.status not in (Status.FOUND, Status.NOT_FOUND):
                        errors.append(r)
            except Exception as e:  # noqa: BLE001 - reported through the exit code
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not ns.lookup(USER % (50 + child), timeout_ms=5000).found:
            return 3
        cache = ns.cache
        cache.close()  # the calls the master's threads had in flight do not hold it open here
        with open("/proc/self/maps") as maps:
            if os.path.realpath(cache.path) in maps.read():
                return 4  # still mapped: close() waited for a call that never returns here
        try:
            ns.get(USER % 4)
            return 5
        except Error:
            pass
        return 0 if not errors else 2

    def test_a_hit_awaited_does_not_yield_to_the_loop(self):
        key = USER % 5
        self.assertTrue(self.cache.lookup("user", key, timeout_ms=5000).found)
        ns = self.cache.namespace("user")

        async def read(awaitable):
            return await awaitable

        for awaitable in (self.cache.lookup_async("user", key), ns.lookup_async(key),
                          self.cache.lookup_async("user", "not-a-uuid")):
            coro = read(awaitable)
            # A coroutine that finishes on its first step never gave the loop a turn.
            with self.assertRaises(StopIteration) as done:
                coro.send(None)
            self.assertIn(done.exception.value.status, (Status.FOUND, Status.INVALID_KEY))
        # A miss does yield: its first step hands the wait to a thread.
        async def miss():
            return await self.cache.lookup_async("user", USER % 6, timeout_ms=5000)

        self.assertTrue(asyncio.run(miss()).found)

    def test_two_hundred_misses_do_not_stall_a_heartbeat_on_the_loop(self):
        # The fills wait on a table lock for over a second: a miss that
        # blocked the loop would stall the heartbeat that long.
        locker = psql("BEGIN; LOCK TABLE fleet.user_accounts IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(1); "
                      "COMMIT;", background=True)
        try:
            self.assertTrue(wait_for(lambda: psql(
                "SELECT count(*) FROM pg_locks WHERE relation = 'fleet.user_accounts'::regclass "
                "AND mode = 'AccessExclusiveLock' AND granted").split()[-3] == "1"), "the lock was not taken")
            gaps, results, elapsed = asyncio.run(self._misses_beside_heartbeat())
        finally:
            locker.communicate(timeout=30)
        self.assertEqual(len(results), 200)
        # Users 201..400 do not exist: each miss is a query that waits for the lock.
        self.assertEqual({r.status for r in results}, {Status.NOT_FOUND}, [r for r in results if not r.not_found][:3])
        self.assertGreater(elapsed, 0.5, "the fills did not wait for the lock: the test proves nothing")
        self.assertLess(max(gaps), 0.25, "the loop stalled %.3f s while misses waited" % max(gaps))

    async def _misses_beside_heartbeat(self):
        gaps = []
        done = asyncio.Event()

        async def heartbeat():
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        await asyncio.sleep(0.02)
        start = time.monotonic()
        results = await asyncio.gather(*(self.cache.lookup_async("user", USER % (201 + n), timeout_ms=10000)
                                         for n in range(200)))
        elapsed = time.monotonic() - start
        done.set()
        await beat
        return gaps, results, elapsed


class Module(unittest.TestCase):
    def test_sub_interpreters_are_refused_with_a_clear_error(self):
        try:
            import _xxsubinterpreters as interpreters
        except ImportError:
            self.skipTest("this Python has no _xxsubinterpreters")
        for first_in_main in (True, False):
            # In a fresh process, so that the main interpreter's import state
            # is the one asked for.
            code = ("import _xxsubinterpreters as s\n"
                    + ("import tenantcache\n" if first_in_main else "")
                    + "i = s.create()\n"
                    "try:\n"
                    "    s.run_string(i, 'import tenantcache')\n"
                    "except s.RunFailedError as e:\n"
                    "    print('refused:', e)\n")
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("refused:", r.stdout)
            self.assertIn("tenantcache cannot be used in a sub-interpreter", r.stdout)
        del interpreters

    def test_the_stubs_describe_every_public_name_and_each_has_a_docstring(self):
        package = os.path.dirname(tenantcache.__file__)
        self.assertTrue(os.path.exists(os.path.join(package, "py.typed")))
        with open(os.path.join(package, "__init__.pyi")) as f:
            stub = ast.parse(f.read())
        classes = {n.name: n for n in stub.body if isinstance(n, ast.ClassDef)}
        functions = {n.name for n in stub.body if isinstance(n, ast.FunctionDef)}
        for name in tenantcache.__all__:
            obj = getattr(tenantcache, name)
            self.assertTrue(obj.__doc__ and obj.__doc__.strip(), "%s has no docstring" % name)
            self.assertIn(name, set(classes) | functions, "%s is missing from __init__.pyi" % name)
            if name not in classes or name == "Status":
                continue
            stubbed = {n.name for n in classes[name].body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            for attr in vars(obj):  # what the class itself defines, not what it inherits
                if attr.startswith("_") and attr not in ("__getitem__", "__iter__", "__len__", "__contains__",
                                                         "__enter__", "__exit__"):
                    continue
                self.assertTrue(getattr(obj, attr).__doc__, "%s.%s has no docstring" % (name, attr))
                self.assertIn(attr, stubbed, "%s.%s is missing from __init__.pyi" % (name, attr))


if __name__ == "__main__":
    unittest.main()
