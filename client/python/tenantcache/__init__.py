"""tenantcache: read the tenantcached shared-memory cache from Python.

A CPython extension built from libtenantcache's own sources (no system
library needed). The cache file is mapped read-only; a hit is one C call that
never touches the daemon or the database, and never releases the GIL.

    import tenantcache
    cache = tenantcache.Cache.open()     # the packaged daemon's file
    users = cache.namespace("user")      # resolve the name once
    r = users.lookup(user_id, timeout_ms=50)
    if r.found:
        role = r.value["role"]           # str, or None for SQL NULL
        tenant = r.value.tenant
    elif r.needs_database:
        ...                              # query PostgreSQL yourself
    else:
        ...                              # no such user (NOT_FOUND, INVALID_KEY)

    r = await users.lookup_async(user_id, timeout_ms=50)   # under asyncio

Results are small immutable objects: `status` (a Status), `found`,
`not_found`, `miss`, `unavailable`, `needs_database`, `detail`, and `value`
(a Value, only when found: reading it otherwise raises Error).
`needs_database` is true exactly when the cache could not answer and the
caller must ask PostgreSQL itself: MISS (from get(); lookup() asks the daemon
first), UNAVAILABLE, BUSY, TIMEOUT and DAEMON. FOUND, NOT_FOUND (the database
has no such row) and INVALID_KEY (a key no row can have) are answers.

A Cache may be shared by threads. A Cache opened before fork() keeps working
in the children, also when other threads were using it (gunicorn-style
pre-fork servers may open it in the master). Sub-interpreters are refused at
import with ImportError.
"""

import os

from . import _native
from ._native import Cache, Error, Namespace, Result, Status, Value, default_cache_path, layout_version, version

__all__ = ["Cache", "Namespace", "Result", "Value", "Status", "Error", "default_cache_path", "version",
           "layout_version"]

# The statuses a read answers with (as a Result) instead of raising Error.
_RESULTS = frozenset((Status.NOT_FOUND, Status.MISS, Status.UNAVAILABLE, Status.INVALID_KEY, Status.BUSY,
                      Status.TIMEOUT, Status.DAEMON))


async def _ask_daemon_in_thread(cache, namespace, key, timeout_ms):
    # A miss waits on the daemon's socket for up to timeout_ms: that wait runs
    # in the loop's default executor (the extension releases the GIL there),
    # so the loop keeps running other tasks.
    import asyncio

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, cache._ask_daemon, namespace, key, timeout_ms)


_native._set_async_miss(_ask_daemon_in_thread)
os.register_at_fork(after_in_child=_native._after_fork_child)
