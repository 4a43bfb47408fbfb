"""tenantcache: read the tenantcached shared-memory cache from Python.

A ctypes binding of libtenantcache (standard library only, no build step).
The library maps the cache file read-only; a hit costs one C call and never
touches the daemon or the database.

    import tenantcache
    cache = tenantcache.Cache.open()     # the packaged daemon's file
    r = cache.lookup("user", user_id, timeout_ms=50)
    if r.found:
        role = r.value["role"]          # str, or None for SQL NULL
        tenant = r.value.tenant
    elif r.needs_database:
        ...                              # query PostgreSQL yourself
    else:
        ...                              # no such user (NOT_FOUND, INVALID_KEY)

Results are small immutable objects: `status` (a Status), `found`,
`not_found`, `miss`, `unavailable`, `needs_database`, and `value` (a Value,
only when found: reading it otherwise raises). `needs_database` is true
exactly when the cache could not answer and the caller must ask PostgreSQL
itself: MISS (from get(); lookup() asks the daemon first), UNAVAILABLE,
BUSY, TIMEOUT and DAEMON. FOUND, NOT_FOUND (the database has no such row)
and INVALID_KEY (a key no row can have) are answers. A Cache may be shared by threads, and a Cache
opened before fork() keeps working in the children (gunicorn-style pre-fork
servers may open it in the master).
"""

import ctypes
import ctypes.util
import enum
import os
import struct
import threading
from types import MappingProxyType

__all__ = ["Cache", "Result", "Value", "Status", "Error", "load_library"]


class Status(enum.IntEnum):
    FOUND = 0
    NOT_FOUND = 1
    MISS = 2
    UNAVAILABLE = -1
    INVALID_KEY = -2
    NO_NAMESPACE = -3
    LAYOUT = -4
    IO = -5
    INVALID_ARG = -6
    NO_FIELD = -7
    NOMEM = -8
    BUSY = -9
    TIMEOUT = -10
    DAEMON = -11


class _TcValue(ctypes.Structure):
    _fields_ = [
        ("priv_ns", ctypes.c_void_p),
        ("priv_len", ctypes.c_uint32),
        ("priv_status", ctypes.c_uint32),
        ("priv_reserved", ctypes.c_uint64 * 6),
        ("priv_data", ctypes.c_ubyte * 4032),
    ]


_DATA_OFFSET = _TcValue.priv_data.offset
_HEADER = struct.Struct("<IIQ")  # priv_len, priv_status, priv_reserved[0]
_STATUS = {s.value: s for s in Status}
_RESULTS = frozenset((Status.NOT_FOUND, Status.MISS, Status.UNAVAILABLE, Status.INVALID_KEY, Status.BUSY,
                      Status.TIMEOUT, Status.DAEMON))
_LENS = [struct.Struct("<%dH" % n) for n in range(31)]
# The statuses after which only PostgreSQL can answer (Result.needs_database).
_NEEDS_DATABASE = frozenset((Status.MISS, Status.UNAVAILABLE, Status.BUSY, Status.TIMEOUT, Status.DAEMON))


class Error(Exception):
    """An operation failed; `status` says how."""

    def __init__(self, status, message, detail=""):
        self.status = Status(status)
        self.detail = detail  # the daemon's words (tc_last_error_detail), "" if none
        super().__init__("%s: %s%s" % (message, _lib().tc_strerror(status).decode(), ": " + detail if detail else ""))


_LIB = None
_LIB_LOCK = threading.Lock()


def load_library(path=None):
    """Loads libtenantcache: `path`, $TENANTCACHE_LIBRARY, or the system's."""
    global _LIB
    with _LIB_LOCK:
        if _LIB is not None and path is None:
            return _LIB
        path = path or os.environ.get("TENANTCACHE_LIBRARY") or ctypes.util.find_library("tenantcache") \
            or "libtenantcache.so.0"
        lib = ctypes.CDLL(path)
        p, c, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
        vp = ctypes.POINTER(_TcValue)
        lib.tc_cache_open.argtypes = [c, ctypes.POINTER(p)]
        lib.tc_cache_close.argtypes = [p]
        lib.tc_cache_close.restype = None
        lib.tc_namespace.argtypes = [p, c, ctypes.POINTER(ctypes.c_uint32)]
        lib.tc_cache_get.argtypes = [p, ctypes.c_uint32, c, sz, vp]
        lib.tc_cache_lookup.argtypes = [p, ctypes.c_uint32, c, sz, ctypes.c_int, vp]
        lib.tc_cache_invalidate.argtypes = [p, ctypes.c_uint32, c, sz, ctypes.c_int]
        lib.tc_cache_invalidate_tenant.argtypes = [p, c, sz, ctypes.c_int]
        lib.tc_cache_flush.argtypes = [p, ctypes.c_int]
        lib.tc_value_tenant.argtypes = [vp, ctypes.POINTER(sz)]
        lib.tc_value_tenant.restype = ctypes.POINTER(ctypes.c_char)
        lib.tc_value_field_count.argtypes = [vp]
        lib.tc_value_field_count.restype = sz
        lib.tc_value_field.argtypes = [vp, sz, ctypes.POINTER(c), ctypes.POINTER(ctypes.POINTER(ctypes.c_char)),
                                       ctypes.POINTER(sz)]
        lib.tc_strerror.argtypes = [ctypes.c_int]
        lib.tc_strerror.restype = c
        lib.tc_last_error_detail.argtypes = []
        lib.tc_last_error_detail.restype = c
        lib.tc_version.restype = c
        lib.tc_default_cache_path.restype = c
        _LIB = lib
        return lib


def _lib():
    return _LIB if _LIB is not None else load_library()


def _detail():
    """tc_last_error_detail() of this thread, read right after the call it describes."""
    return _lib().tc_last_error_detail().decode(errors="replace")


class Value(tuple):
    """A found entry: the tenant id and the namespace's named text fields
    (None for SQL NULL). Immutable; reads like a read-only mapping.

    It holds the entry's bytes as the cache stores them (key NUL tenant NUL,
    one little-endian u16 length per field with 0xFFFF for NULL, then each
    non-NULL value and a NUL) and decodes what is asked for."""

    __slots__ = ()

    def __new__(cls, data, names, key_len, tenant_len):
        return tuple.__new__(cls, (data, names, key_len, tenant_len))

    def _field(self, index):
        data, names, key_len, tenant_len = tuple.__getitem__(self, slice(None))
        count = len(names)
        lens_at = key_len + tenant_len + 2
        lens = _LENS[count].unpack_from(data, lens_at)
        pos = lens_at + 2 * count
        for n in lens[:index]:
            if n != 0xFFFF:
                pos += n + 1
        n = lens[index]
        return None if n == 0xFFFF else data[pos:pos + n].decode()

    @property
    def tenant(self):
        data, _, key_len, tenant_len = tuple.__getitem__(self, slice(None))
        return data[key_len + 1:key_len + 1 + tenant_len].decode()

    @property
    def fields(self):
        names = tuple.__getitem__(self, 1)
        return MappingProxyType({name: self._field(i) for i, name in enumerate(names)})

    def __getitem__(self, name):
        try:
            index = tuple.__getitem__(self, 1).index(name)
        except ValueError:
            raise KeyError(name) from None
        return self._field(index)

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def __iter__(self):
        return iter(tuple.__getitem__(self, 1))

    def __len__(self):
        return len(tuple.__getitem__(self, 1))

    def __repr__(self):
        return "Value(tenant=%r, fields=%r)" % (self.tenant, dict(self.fields))


class Result(tuple):
    """The outcome of a read. `value` exists only when `found`."""

    __slots__ = ()

    def __new__(cls, status, value=None, detail=""):
        return tuple.__new__(cls, (_STATUS[status], value, detail))

    status = property(lambda self: tuple.__getitem__(self, 0))
    found = property(lambda self: tuple.__getitem__(self, 0) == 0)
    not_found = property(lambda self: tuple.__getitem__(self, 0) == 1)
    miss = property(lambda self: tuple.__getitem__(self, 0) == 2)
    unavailable = property(lambda self: tuple.__getitem__(self, 0) == -1)
    needs_database = property(lambda self: tuple.__getitem__(self, 0) in _NEEDS_DATABASE,
                              doc="True when the cache could not answer: query PostgreSQL yourself.")
    # What the daemon said about a failed lookup (tc_last_error_detail), e.g.
    # the database's error for DAEMON; "" otherwise.
    detail = property(lambda self: tuple.__getitem__(self, 2))

    @property
    def value(self):
        if tuple.__getitem__(self, 0) != 0:
            raise Error(tuple.__getitem__(self, 0), "result holds no value")
        return tuple.__getitem__(self, 1)

    def __getitem__(self, index):
        raise TypeError("read status, found, not_found, miss, unavailable, needs_database or value")

    def __iter__(self):
        raise TypeError("read status, found, not_found, miss, unavailable, needs_database or value")

    def __bool__(self):
        raise TypeError("ask found, needs_database, not_found, miss or unavailable")

    def __repr__(self):
        extra = ", %r" % (self.value,) if self.found else ", %r" % (self.detail,) if self.detail else ""
        return "Result(%s%s)" % (self.status.name, extra)


class Cache:
    """An open cache file (read-only). Close it, or use it as a context manager."""

    def __init__(self, handle):
        self._handle = handle
        self._ns = {}
        self._names = {}
        self._get = _lib().tc_cache_get
        self._local = threading.local()

    @classmethod
    def open(cls, path=None):
        """Opens `path`, by default where the packaged daemon writes its file
        (the C library's TC_DEFAULT_CACHE_PATH, /run/tenantcache/cache)."""
        if path is None:
            path = _lib().tc_default_cache_path().decode()
        handle = ctypes.c_void_p()
        rc = _lib().tc_cache_open(os.fsencode(path), ctypes.byref(handle))
        if rc != 0:
            raise Error(rc, "cannot open %s" % path)
        return cls(handle)

    def close(self):
        if self._handle:
            _lib().tc_cache_close(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def _namespace(self, name):
        ns = self._ns.get(name)
        if ns is None:
            out = ctypes.c_uint32()
            rc = _lib().tc_namespace(self._handle, name.encode(), ctypes.byref(out))
            if rc != 0:
                raise Error(rc, "namespace %s" % name)
            ns = self._ns[name] = out.value
        return ns

    def _buffer(self):
        # One tc_value per thread (no allocation per read), with a memoryview
        # over it so decoding needs no further foreign call.
        local = self._local
        try:
            return local.value, local.ref, local.view
        except AttributeError:
            buf = _TcValue()
            local.value, local.ref, local.view = buf, ctypes.byref(buf), memoryview(buf).cast("B")
            return local.value, local.ref, local.view

    def _field_names(self, ns, buf):
        names = self._names.get(ns)
        if names is None:
            lib = _lib()
            name = ctypes.c_char_p()
            names = tuple(
                (lib.tc_value_field(ctypes.byref(buf), i, ctypes.byref(name), None, None), name.value.decode())[1]
                for i in range(lib.tc_value_field_count(ctypes.byref(buf))))
            self._names[ns] = names
        return names

    def _decode(self, ns, buf, view):
        # One copy out of the C buffer; fields are decoded when read.
        length, _, meta = _HEADER.unpack_from(view, 8)
        return Value(view[_DATA_OFFSET:_DATA_OFFSET + length].tobytes(), self._field_names(ns, buf), meta & 0xFFFF,
                     (meta >> 16) & 0xFFFF)

    def _read(self, namespace, key, timeout_ms):
        if self._handle is None:
            raise Error(Status.INVALID_ARG, "cache is closed")
        raw = key.encode() if isinstance(key, str) else bytes(key)
        buf, ref, view = self._buffer()
        ns = self._ns.get(namespace)
        if ns is None:
            ns = self._namespace(namespace)
        if timeout_ms is None:
            rc = self._get(self._handle, ns, raw, len(raw), ref)
        else:
            rc = _lib().tc_cache_lookup(self._handle, ns, raw, len(raw), int(timeout_ms), ref)
        if rc == 0:
            return Result(0, self._decode(ns, buf, view))
        detail = _detail() if timeout_ms is not None and rc < 0 else ""
        if rc in _RESULTS:
            return Result(rc, None, detail)
        raise Error(rc, "read %s" % namespace, detail)

    def get(self, namespace, key):
        """Shared memory only; never blocks. FOUND, NOT_FOUND, MISS, UNAVAILABLE or INVALID_KEY."""
        return self._read(namespace, key, None)

    def lookup(self, namespace, key, timeout_ms=100):
        """get(), and on a miss ask the daemon, waiting at most timeout_ms: FOUND, NOT_FOUND,
        INVALID_KEY, or (needs_database) UNAVAILABLE, BUSY, TIMEOUT or DAEMON."""
        return self._read(namespace, key, timeout_ms)

    def _check(self, rc, what):
        if rc != 0:
            raise Error(rc, what, _detail())

    def invalidate(self, namespace, key, timeout_ms=1000):
        raw = key.encode() if isinstance(key, str) else bytes(key)
        self._check(_lib().tc_cache_invalidate(self._handle, self._namespace(namespace), raw, len(raw), timeout_ms),
                    "invalidate")

    def invalidate_tenant(self, tenant_id, timeout_ms=1000):
        """Drops every entry of a tenant. `tenant_id` is the tenant column's text as PostgreSQL prints
        it; a uuid may be braced, upper-case or without dashes. Raises Error (INVALID_KEY) for an
        empty id, a control character or one longer than any entry can hold."""
        raw = tenant_id.encode()
        self._check(_lib().tc_cache_invalidate_tenant(self._handle, raw, len(raw), timeout_ms), "invalidate_tenant")

    def flush(self, timeout_ms=1000):
        self._check(_lib().tc_cache_flush(self._handle, timeout_ms), "flush")
