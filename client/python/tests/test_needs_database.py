"""Result.needs_database, the one "go to the database" predicate, and the
README's example that relies on it, against the real daemon.

Run by tests/misconfig_client_test.cc, which starts PostgreSQL and
tenantcached and passes TC_CACHE_PATH (and PYTHONPATH: the built extension).
"""

import os
import unittest

import tenantcache
from tenantcache import Status

USER = "00000000-0001-4000-8000-%012x"
TENANT = "00000000-0000-4000-8000-%012x"

# What each read status means to a caller: an answer from the cache, or "ask
# PostgreSQL yourself". Every status a read can return is listed.
ANSWERS = {Status.FOUND, Status.NOT_FOUND, Status.INVALID_KEY}
ASK_THE_DATABASE = {Status.MISS, Status.UNAVAILABLE, Status.BUSY, Status.TIMEOUT, Status.DAEMON}


def readme_example(cache, user_id, query_db):
    """The README's Python example, as written there."""
    r = cache.lookup("user", user_id, timeout_ms=50)
    if r.found:
        return r.value["role"]
    elif r.needs_database:
        return query_db(user_id)
    else:
        return None  # no such user (NOT_FOUND or INVALID_KEY)


class NeedsDatabaseTest(unittest.TestCase):
    def setUp(self):
        self.cache = tenantcache.Cache.open(os.environ["TC_CACHE_PATH"])

    def tearDown(self):
        self.cache.close()

    def test_every_read_status_is_an_answer_or_needs_the_database(self):
        readable = {Status(s) for s in tenantcache._RESULTS} | {Status.FOUND}
        self.assertEqual(readable, ANSWERS | ASK_THE_DATABASE, "a read status is missing from this test")
        for status in readable:
            value = tenantcache.Value(TENANT % 1, {"role": "owner"}) if status == Status.FOUND else None
            r = tenantcache.Result(status, value)
            self.assertEqual(r.needs_database, status in ASK_THE_DATABASE, status)
            self.assertFalse(r.needs_database and (r.found or r.not_found), status)

    def test_real_reads(self):
        found = self.cache.lookup("user", USER % 1, timeout_ms=5000)
        self.assertTrue(found.found, found)
        self.assertFalse(found.needs_database)
        absent = self.cache.lookup("user", USER % 4000, timeout_ms=5000)
        self.assertEqual(absent.status, Status.NOT_FOUND)
        self.assertFalse(absent.needs_database, "the database has no such row: do not ask it again")
        invalid = self.cache.lookup("user", "not-a-uuid", timeout_ms=5000)
        self.assertEqual(invalid.status, Status.INVALID_KEY)
        self.assertFalse(invalid.needs_database)
        miss = self.cache.get("user", USER % 2)
        self.assertEqual(miss.status, Status.MISS)
        self.assertTrue(miss.needs_database)
        # A fill takes a database round trip; a zero timeout does not wait for
        # it. The answer can still be there already when this process was
        # descheduled between the request and the read (a loaded machine), so
        # each uncached key gets one try until one times out.
        for n in range(100, 150):
            timeout = self.cache.lookup("user", USER % n, timeout_ms=0)
            if timeout.status != Status.FOUND:
                break
        self.assertEqual(timeout.status, Status.TIMEOUT)
        self.assertTrue(timeout.needs_database, "the example's fallback must run on a timeout")

    def test_the_readme_example_falls_back_whenever_the_cache_cannot_answer(self):
        asked = []

        def query_db(user_id):
            asked.append(user_id)
            return "from-the-database"

        self.assertEqual(readme_example(self.cache, USER % 5, query_db), "owner")
        self.assertIsNone(readme_example(self.cache, "not-a-uuid", query_db))
        self.assertEqual(asked, [])
        # Unavailable, busy, timed out or failed: every one reaches query_db.
        for status in ASK_THE_DATABASE:
            stub = type("Stub", (), {"lookup": lambda self, *a, _s=status, **k: tenantcache.Result(_s)})()
            self.assertEqual(readme_example(stub, USER % 6, query_db), "from-the-database", status)
        self.assertEqual(len(asked), len(ASK_THE_DATABASE))

    def test_open_defaults_to_the_library_default_path(self):
        default = tenantcache.default_cache_path()
        self.assertEqual(default, "/run/tenantcache/cache")
        if os.path.exists(default):
            self.skipTest("a cache file exists at the default path on this machine")
        with self.assertRaises(tenantcache.Error) as e:
            tenantcache.Cache.open()
        self.assertIn(default, str(e.exception))

    def test_invalidate_tenant_takes_any_spelling_of_a_uuid(self):
        key = USER % 7
        tenant = TENANT % 7
        for spelling in ("{%s}" % tenant.upper(), tenant.replace("-", "").upper()):
            self.assertTrue(self.cache.lookup("user", key, timeout_ms=5000).found)
            self.cache.invalidate_tenant(spelling)
            self.assertTrue(self.cache.get("user", key).miss, spelling)
        for bad in ("", "a\tb", "x" * 5000):
            with self.assertRaises(tenantcache.Error) as e:
                self.cache.invalidate_tenant(bad)
            self.assertEqual(e.exception.status, Status.INVALID_KEY, repr(bad[:10]))


if __name__ == "__main__":
    unittest.main()
