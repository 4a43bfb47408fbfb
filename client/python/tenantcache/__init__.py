"""tenantcache: read the tenantcached shared-memory cache from Python.

A ctypes binding of libtenantcache (standard library only, no build step).
The library maps the cache file read-only; a hit costs one C call and never
touches the daemon or the database.

    import tenantcache
    cache = tenantcache.Cache.open("/run/tenantcache/cache")
    r = cache.lookup("user", user_id, timeout_ms=50)
    if r.found:
        role = r.value["role"]          # str, or None for SQL NULL
        tenant = r.value.tenant
    elif r.unavailable:
        ...                              # query PostgreSQL yourself

Results are small immutable objects: `status` (a Status), `found`,
`not_found`, `miss`, `unavailable`, and `value` (a Value, only when found:
reading it otherwise raises). A Cache may be shared by threads, and a Cache
opened before fork() keeps working in the children (gunicorn-style pre-fork
servers may open it in the master).
"""

import ctypes
import ctypes.util
import enum
import os
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


class Error(Exception):
    """An operation failed; `status` says how."""

    def __init__(self, status, message):
        self.status = Status(status)
        super().__init__("%s: %s" % (message, _lib().tc_strerror(status).decode()))


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
        lib.tc_version.restype = c
        _LIB = lib
        return lib


def _lib():
    return _LIB if _LIB is not None else load_library()


class Value:
    """A found entry: the tenant id and the namespace's named text fields
    (None for SQL NULL). Immutable; behaves as a read-only mapping."""

    __slots__ = ("_tenant", "_fields")

    def __init__(self, tenant, fields):
        object.__setattr__(self, "_tenant", tenant)
        object.__setattr__(self, "_fields", MappingProxyType(dict(fields)))

    def __setattr__(self, name, value):
        raise AttributeError("Value is immutable")

    @property
    def tenant(self):
        return self._tenant

    @property
    def fields(self):
        return self._fields

    def __getitem__(self, name):
        return self._fields[name]

    def get(self, name, default=None):
        return self._fields.get(name, default)

    def __eq__(self, other):
        return isinstance(other, Value) and self._tenant == other._tenant and self._fields == other._fields

    def __hash__(self):
        return hash((self._tenant, tuple(self._fields.items())))

    def __repr__(self):
        return "Value(tenant=%r, fields=%r)" % (self._tenant, dict(self._fields))


class Result:
    """The outcome of a read. `value` exists only when `found`."""

    __slots__ = ("_status", "_value")

    def __init__(self, status, value=None):
        object.__setattr__(self, "_status", Status(status))
        object.__setattr__(self, "_value", value)

    def __setattr__(self, name, value):
        raise AttributeError("Result is immutable")

    status = property(lambda self: self._status)
    found = property(lambda self: self._status == Status.FOUND)
    not_found = property(lambda self: self._status == Status.NOT_FOUND)
    miss = property(lambda self: self._status == Status.MISS)
    unavailable = property(lambda self: self._status == Status.UNAVAILABLE)

    @property
    def value(self):
        if self._status != Status.FOUND:
            raise Error(self._status, "result holds no value")
        return self._value

    def __bool__(self):
        raise TypeError("ask found, not_found, miss or unavailable")

    def __repr__(self):
        return "Result(%s%s)" % (self._status.name, ", %r" % (self._value,) if self.found else "")


class Cache:
    """An open cache file (read-only). Close it, or use it as a context manager."""

    def __init__(self, handle):
        self._handle = handle
        self._ns = {}
        self._local = threading.local()

    @classmethod
    def open(cls, path="/dev/shm/tenantcache"):
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
        # One tc_value per thread: no allocation per read.
        buf = getattr(self._local, "value", None)
        if buf is None:
            buf = self._local.value = _TcValue()
        return buf

    @staticmethod
    def _decode(buf):
        lib = _lib()
        n = ctypes.c_size_t()
        tenant_ptr = lib.tc_value_tenant(ctypes.byref(buf), ctypes.byref(n))
        tenant = ctypes.string_at(tenant_ptr, n.value).decode()
        fields = {}
        name = ctypes.c_char_p()
        text = ctypes.POINTER(ctypes.c_char)()
        for i in range(lib.tc_value_field_count(ctypes.byref(buf))):
            lib.tc_value_field(ctypes.byref(buf), i, ctypes.byref(name), ctypes.byref(text), ctypes.byref(n))
            fields[name.value.decode()] = ctypes.string_at(text, n.value).decode() if text else None
        return Value(tenant, fields)

    def _read(self, namespace, key, timeout_ms):
        if self._handle is None:
            raise Error(Status.INVALID_ARG, "cache is closed")
        raw = key.encode() if isinstance(key, str) else bytes(key)
        buf = self._buffer()
        ns = self._namespace(namespace)
        if timeout_ms is None:
            rc = _lib().tc_cache_get(self._handle, ns, raw, len(raw), ctypes.byref(buf))
        else:
            rc = _lib().tc_cache_lookup(self._handle, ns, raw, len(raw), int(timeout_ms), ctypes.byref(buf))
        if rc == Status.FOUND:
            return Result(rc, self._decode(buf))
        if rc in (Status.NOT_FOUND, Status.MISS, Status.UNAVAILABLE, Status.INVALID_KEY, Status.BUSY,
                  Status.TIMEOUT, Status.DAEMON):
            return Result(rc)
        raise Error(rc, "read %s" % namespace)

    def get(self, namespace, key):
        """Shared memory only; never blocks. FOUND, NOT_FOUND, MISS, UNAVAILABLE or INVALID_KEY."""
        return self._read(namespace, key, None)

    def lookup(self, namespace, key, timeout_ms=100):
        """get(), and on a miss ask the daemon, waiting at most timeout_ms."""
        return self._read(namespace, key, timeout_ms)

    def _check(self, rc, what):
        if rc != 0:
            raise Error(rc, what)

    def invalidate(self, namespace, key, timeout_ms=1000):
        raw = key.encode() if isinstance(key, str) else bytes(key)
        self._check(_lib().tc_cache_invalidate(self._handle, self._namespace(namespace), raw, len(raw), timeout_ms),
                    "invalidate")

    def invalidate_tenant(self, tenant_id, timeout_ms=1000):
        raw = tenant_id.encode()
        self._check(_lib().tc_cache_invalidate_tenant(self._handle, raw, len(raw), timeout_ms), "invalidate_tenant")

    def flush(self, timeout_ms=1000):
        self._check(_lib().tc_cache_flush(self._handle, timeout_ms), "flush")
