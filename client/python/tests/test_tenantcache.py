"""The Python module against the real daemon and database.

Run by tests/python_test.cc, which starts PostgreSQL and tenantcached and
passes TC_CACHE_PATH (the daemon's cache file) and TC_PSQL (a psql command
line for the test database), with the module under test importable.
"""

import os
import threading
import unittest

import tenantcache
from support import TENANT, USER, psql, wait_for


class CacheTest(unittest.TestCase):
    def setUp(self):
        self.cache = tenantcache.Cache.open(os.environ["TC_CACHE_PATH"])

    def tearDown(self):
        self.cache.close()

    def test_lookup_fills_then_get_hits(self):
        key = USER % 1
        r = self.cache.lookup("user", key, timeout_ms=5000)
        self.assertTrue(r.found, r)
        self.assertEqual(r.value.tenant, TENANT % 1)
        self.assertEqual(r.value["role"], "captain")
        self.assertEqual(r.value.get("tenant_code"), "Y00001")
        hit = self.cache.get("user", key.upper())
        self.assertTrue(hit.found)
        self.assertEqual(hit.value, r.value)

    def test_results_cannot_be_misread(self):
        r = self.cache.get("user", USER % 4000)
        self.assertTrue(r.miss)
        with self.assertRaises(tenantcache.Error):
            r.value
        with self.assertRaises(TypeError):
            bool(r)
        self.assertEqual(self.cache.get("user", "not-a-uuid").status, tenantcache.Status.INVALID_KEY)
        with self.assertRaises(tenantcache.Error) as e:
            self.cache.get("no_such_namespace", "x")
        self.assertEqual(e.exception.status, tenantcache.Status.NO_NAMESPACE)
        found = self.cache.lookup("user", USER % 2, timeout_ms=5000)
        with self.assertRaises(AttributeError):
            found.value.tenant = "x"
        with self.assertRaises(TypeError):
            found.value.fields["role"] = "owner"
        self.assertEqual(self.cache.lookup("user", USER % 4001, timeout_ms=5000).status, tenantcache.Status.NOT_FOUND)

    def test_a_committed_update_is_seen_on_the_next_read(self):
        key = USER % 3
        self.assertTrue(self.cache.lookup("user", key, timeout_ms=5000).found)
        psql("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '%s'" % key)
        self.assertTrue(wait_for(lambda: self.cache.get("user", key).miss))
        self.assertEqual(self.cache.lookup("user", key, timeout_ms=5000).value["role"], "guest")

    def test_invalidate_and_flush_through_the_daemon(self):
        key = USER % 5
        self.assertTrue(self.cache.lookup("user", key, timeout_ms=5000).found)
        self.cache.invalidate("user", key)
        self.assertTrue(self.cache.get("user", key).miss)
        self.assertTrue(self.cache.lookup("user", key, timeout_ms=5000).found)
        self.cache.invalidate_tenant(TENANT % 5)
        self.assertTrue(self.cache.get("user", key).miss)
        self.assertTrue(self.cache.lookup("user", key, timeout_ms=5000).found)
        self.cache.flush()
        self.assertTrue(self.cache.get("user", key).miss)

    def test_threads_share_one_cache(self):
        errors = []

        def worker(n):
            try:
                for i in range(50):
                    r = self.cache.lookup("user", USER % (10 + (n * 50 + i) % 40), timeout_ms=5000)
                    if not r.found:
                        errors.append(r)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])

    def test_a_cache_opened_before_fork_works_in_the_children(self):
        self.assertTrue(self.cache.lookup("user", USER % 6, timeout_ms=5000).found)
        pids = []
        for n in range(4):
            pid = os.fork()
            if pid == 0:
                ok = self.cache.get("user", USER % 6).found and \
                    self.cache.lookup("user", USER % (60 + n), timeout_ms=5000).found
                os._exit(0 if ok else 1)
            pids.append(pid)
        self.assertTrue(self.cache.lookup("user", USER % 7, timeout_ms=5000).found)
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertTrue(self.cache.get("user", USER % 61).found, "a child's fill is shared")


if __name__ == "__main__":
    unittest.main()
