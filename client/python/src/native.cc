// tenantcache._native: the CPython extension over libtenantcache's C ABI.
//
// The client library's sources are compiled into this module (setup.py), so
// a hit is one C call from Python with no marshalling layer in between, and
// `pip install` needs no system library. Every tc_* symbol is hidden, so a
// process that also loads libtenantcache.so gets two independent copies that
// never see each other's handles.
//
// What a call costs, and why:
//   - get() and the shared-memory half of lookup() run holding the GIL: the
//     read never waits (no lock, no system call), and releasing and taking
//     the GIL back would cost more than the read itself.
//   - The daemon half of lookup() (after a MISS), invalidate*, flush,
//     daemon_stats and close release the GIL: they wait on a socket.
//   - A hit allocates two small objects: a Result and a Value holding a copy
//     of the entry's bytes (no dict); fields are decoded when read.
//
// Threads: a Cache may be used by any number of threads. The C header forbids
// tc_cache_close concurrently with another call on the handle; a Cache
// counts its calls that run without the GIL (`inflight`) and a close() that
// finds some detaches the handle (new calls fail with "cache is closed") and
// leaves the tc_cache_close to the last of them.
//
// Fork: the C library's own pthread_atfork handlers keep the handle valid in
// the child (see tenantcache.h, FORK). Only the forking thread exists in the
// child, so calls other threads had in flight never finish there:
// _after_fork_child (os.register_at_fork in __init__.py) forgets them.
//
// Sub-interpreters: refused at import with ImportError. The module keeps
// process-wide state (its types, the Status members, the list of open
// caches for fork) that is only valid in the main interpreter.
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>

#include <climits>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "cache_layout.h"
#include "entry.h"
#include "reader.h"
#include "tenantcache/tenantcache.h"

namespace {

namespace layout = tenantcache::layout;

constexpr int kMinStatus = TC_E_DAEMON;
constexpr int kMaxStatus = TC_MISS;
constexpr int kStatusCount = kMaxStatus - kMinStatus + 1;
constexpr int kDefaultLookupMs = 100;
constexpr int kDefaultCommandMs = 1000;

// The Status members (index status - kMinStatus), the Error class and the
// coroutine factory __init__.py registers for misses awaited on a loop.
PyObject* g_status[kStatusCount];
PyObject* g_status_enum;
PyObject* g_error;
PyObject* g_async_miss;

bool NeedsDatabase(int s) {
  return s == TC_MISS || s == TC_E_UNAVAILABLE || s == TC_E_BUSY || s == TC_E_TIMEOUT || s == TC_E_DAEMON;
}

// The statuses a read returns as a Result; any other one raises Error.
bool IsReadResult(int s) {
  return s == TC_FOUND || s == TC_NOT_FOUND || s == TC_E_INVALID_KEY || NeedsDatabase(s);
}

// Raises Error("<what>: <tc_strerror>[: <detail>]") with .status and .detail.
PyObject* RaiseError(int status, PyObject* what, const char* detail) {
  if (detail == nullptr) detail = "";
  PyObject* msg = PyUnicode_FromFormat("%U: %s%s%s", what, tc_strerror(status), *detail ? ": " : "", detail);
  if (msg == nullptr) return nullptr;
  PyObject* exc = PyObject_CallOneArg(g_error, msg);
  Py_DECREF(msg);
  if (exc == nullptr) return nullptr;
  PyObject* detail_obj = PyUnicode_DecodeUTF8(detail, static_cast<Py_ssize_t>(strlen(detail)), "replace");
  PyObject* st = status >= kMinStatus && status <= kMaxStatus ? g_status[status - kMinStatus] : Py_None;
  if (detail_obj == nullptr || PyObject_SetAttrString(exc, "status", st) < 0 ||
      PyObject_SetAttrString(exc, "detail", detail_obj) < 0) {
    Py_XDECREF(detail_obj);
    Py_DECREF(exc);
    return nullptr;
  }
  Py_DECREF(detail_obj);
  PyErr_SetObject(g_error, exc);
  Py_DECREF(exc);
  return nullptr;
}

PyObject* RaiseErrorText(int status, const char* what, const char* detail) {
  PyObject* w = PyUnicode_FromString(what);
  if (w == nullptr) return nullptr;
  RaiseError(status, w, detail);
  Py_DECREF(w);
  return nullptr;
}

// --- argument parsing ---------------------------------------------------------

// Parses vectorcall arguments into out[0..n) by position or by name; out[i]
// stays nullptr for an absent optional one. Returns false with TypeError.
bool ParseArgs(const char* fname, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
               const char* const* names, int n, int required, PyObject** out) {
  for (int i = 0; i < n; ++i) out[i] = nullptr;
  if (nargs > n) {
    PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fname, n, nargs);
    return false;
  }
  for (Py_ssize_t i = 0; i < nargs; ++i) out[i] = args[i];
  const Py_ssize_t nkw = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
  for (Py_ssize_t k = 0; k < nkw; ++k) {
    PyObject* kw = PyTuple_GET_ITEM(kwnames, k);
    int i = 0;
    while (i < n && PyUnicode_CompareWithASCIIString(kw, names[i]) != 0) ++i;
    if (i == n) {
      PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname, kw);
      return false;
    }
    if (out[i] != nullptr) {
      PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname, names[i]);
      return false;
    }
    out[i] = args[nargs + k];
  }
  for (int i = 0; i < required; ++i) {
    if (out[i] == nullptr) {
      PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
      return false;
    }
  }
  return true;
}

// A timeout in milliseconds: an int in [0, INT_MAX], or `def` when absent.
bool ParseTimeout(PyObject* obj, int def, int* out);

// ParseArgs for `n` arguments of which the last, timeout_ms, is optional.
bool ParseWithTimeout(const char* fname, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                      const char* const* names, int n, int def, PyObject** out, int* timeout) {
  return ParseArgs(fname, args, nargs, kwnames, names, n, n - 1, out) &&
         ParseTimeout(out[n - 1], def, timeout);
}

bool ParseTimeout(PyObject* obj, int def, int* out) {
  if (obj == nullptr) {
    *out = def;
    return true;
  }
  if (!PyLong_Check(obj) || PyBool_Check(obj)) {
    PyErr_Format(PyExc_TypeError, "timeout_ms must be an int, not %.100s", Py_TYPE(obj)->tp_name);
    return false;
  }
  const long v = PyLong_AsLong(obj);
  if (v == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    PyErr_SetString(PyExc_ValueError, "timeout_ms must be between 0 and 2147483647");
    return false;
  }
  if (v < 0 || v > INT_MAX) {
    PyErr_Format(PyExc_ValueError, "timeout_ms must be between 0 and 2147483647, not %ld", v);
    return false;
  }
  *out = static_cast<int>(v);
  return true;
}

// A key or tenant id as bytes: a str (UTF-8) or a bytes-like object. The
// library validates the bytes (embedded NUL, length, syntax) for the
// namespace's key kind. A bytes-like key stays exported (so not resizable)
// until the KeyBuffer is destroyed, also while the GIL is released.
struct KeyBuffer {
  const char* data = nullptr;
  size_t len = 0;
  Py_buffer view{};
  bool owned = false;

  KeyBuffer() = default;
  KeyBuffer(const KeyBuffer&) = delete;
  KeyBuffer& operator=(const KeyBuffer&) = delete;
  ~KeyBuffer() {
    if (owned) PyBuffer_Release(&view);
  }

  bool Set(const char* what, PyObject* key) {
    if (PyUnicode_Check(key)) {
      Py_ssize_t n;
      data = PyUnicode_AsUTF8AndSize(key, &n);  // UnicodeEncodeError (a ValueError) for lone surrogates
      len = static_cast<size_t>(n);
      return data != nullptr;
    }
    if (PyBytes_Check(key)) {
      data = PyBytes_AS_STRING(key);
      len = static_cast<size_t>(PyBytes_GET_SIZE(key));
      return true;
    }
    if (PyObject_CheckBuffer(key) && PyObject_GetBuffer(key, &view, PyBUF_SIMPLE) == 0) {
      owned = true;
      data = static_cast<const char*>(view.buf);
      len = static_cast<size_t>(view.len);
      return true;
    }
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "%s must be str or bytes, not %.100s", what, Py_TYPE(key)->tp_name);
    return false;
  }
};

// --- Value ------------------------------------------------------------------------

struct ValueObject {
  PyObject_VAR_HEAD     // ob_size: the entry's bytes in data
      PyObject* names;  // tuple of the namespace's field names (str)
  uint16_t key_len;
  uint16_t tenant_len;
  uint32_t field_count;
  unsigned char data[1];
};

extern PyTypeObject ValueType;

bool ValueView(ValueObject* v, tenantcache::EntryView* e) {
  // The bytes were validated by the library when the value was read.
  return tenantcache::DecodeEntry(v->data, static_cast<size_t>(Py_SIZE(v)), v->key_len, v->tenant_len,
                                  v->field_count, e);
}

PyObject* ValueField(ValueObject* v, Py_ssize_t index) {
  tenantcache::EntryView e;
  if (!ValueView(v, &e)) return PyErr_Format(PyExc_SystemError, "tenantcache: corrupt value");
  const char* text;
  size_t len;
  tenantcache::EntryField(e, static_cast<uint32_t>(index), &text, &len);
  if (text == nullptr) Py_RETURN_NONE;
  return PyUnicode_DecodeUTF8(text, static_cast<Py_ssize_t>(len), "replace");
}

// The index of field `name`, -1 when absent (no exception), -2 on error.
Py_ssize_t ValueIndex(ValueObject* v, PyObject* name) {
  const Py_ssize_t n = PyTuple_GET_SIZE(v->names);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (PyTuple_GET_ITEM(v->names, i) == name) return i;
  }
  if (!PyUnicode_Check(name)) return -1;
  for (Py_ssize_t i = 0; i < n; ++i) {
    const int r = PyUnicode_Compare(PyTuple_GET_ITEM(v->names, i), name);
    if (r == 0) return i;
    if (r == -1 && PyErr_Occurred()) return -2;
  }
  return -1;
}

PyObject* ValueSubscript(PyObject* self, PyObject* name) {
  auto* v = reinterpret_cast<ValueObject*>(self);
  const Py_ssize_t i = ValueIndex(v, name);
  if (i == -2) return nullptr;
  if (i < 0) {
    PyErr_SetObject(PyExc_KeyError, name);
    return nullptr;
  }
  return ValueField(v, i);
}

Py_ssize_t ValueLength(PyObject* self) {
  return PyTuple_GET_SIZE(reinterpret_cast<ValueObject*>(self)->names);
}

int ValueContains(PyObject* self, PyObject* name) {
  const Py_ssize_t i = ValueIndex(reinterpret_cast<ValueObject*>(self), name);
  return i == -2 ? -1 : i >= 0;
}

PyObject* ValueIter(PyObject* self) { return PyObject_GetIter(reinterpret_cast<ValueObject*>(self)->names); }

PyObject* ValueGet(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1 || nargs > 2)
    return PyErr_Format(PyExc_TypeError, "get() takes 1 or 2 arguments (%zd given)", nargs);
  auto* v = reinterpret_cast<ValueObject*>(self);
  const Py_ssize_t i = ValueIndex(v, args[0]);
  if (i == -2) return nullptr;
  if (i < 0) return Py_NewRef(nargs == 2 ? args[1] : Py_None);
  return ValueField(v, i);
}

PyObject* ValueFieldsDict(ValueObject* v) {
  PyObject* d = PyDict_New();
  if (d == nullptr) return nullptr;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(v->names); ++i) {
    PyObject* f = ValueField(v, i);
    if (f == nullptr || PyDict_SetItem(d, PyTuple_GET_ITEM(v->names, i), f) < 0) {
      Py_XDECREF(f);
      Py_DECREF(d);
      return nullptr;
    }
    Py_DECREF(f);
  }
  return d;
}

PyObject* ValueGetFields(PyObject* self, void*) {
  PyObject* d = ValueFieldsDict(reinterpret_cast<ValueObject*>(self));
  if (d == nullptr) return nullptr;
  PyObject* proxy = PyDictProxy_New(d);
  Py_DECREF(d);
  return proxy;
}

PyObject* ValueGetTenant(PyObject* self, void*) {
  auto* v = reinterpret_cast<ValueObject*>(self);
  return PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(v->data) + v->key_len + 1, v->tenant_len,
                              "replace");
}

PyObject* ValueGetKey(PyObject* self, void*) {
  auto* v = reinterpret_cast<ValueObject*>(self);
  return PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(v->data), v->key_len, "replace");
}

PyObject* ValueRichCompare(PyObject* a, PyObject* b, int op) {
  if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, &ValueType)) Py_RETURN_NOTIMPLEMENTED;
  auto* x = reinterpret_cast<ValueObject*>(a);
  auto* y = reinterpret_cast<ValueObject*>(b);
  int eq = Py_SIZE(x) == Py_SIZE(y) && x->key_len == y->key_len && x->tenant_len == y->tenant_len &&
           std::memcmp(x->data, y->data, static_cast<size_t>(Py_SIZE(x))) == 0;
  if (eq) {
    eq = PyObject_RichCompareBool(x->names, y->names, Py_EQ);
    if (eq < 0) return nullptr;
  }
  return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

PyObject* ValueRepr(PyObject* self) {
  auto* v = reinterpret_cast<ValueObject*>(self);
  PyObject* tenant = ValueGetTenant(self, nullptr);
  PyObject* fields = tenant == nullptr ? nullptr : ValueFieldsDict(v);
  PyObject* r =
      fields == nullptr ? nullptr : PyUnicode_FromFormat("Value(tenant=%R, fields=%R)", tenant, fields);
  Py_XDECREF(tenant);
  Py_XDECREF(fields);
  return r;
}

// Value(tenant, fields, key=""): a value built in Python, for a service's
// own tests (a stub whose lookup returns Result(Status.FOUND, Value(...))).
// Encoded as the cache stores entries, so it behaves as a read one.
PyObject* ValueNew(PyTypeObject*, PyObject* args, PyObject* kwargs) {
  static const char* kw[] = {"tenant", "fields", "key", nullptr};
  const char* tenant;
  Py_ssize_t tenant_len;
  PyObject* fields;
  const char* key = "";
  Py_ssize_t key_len = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s#O|s#:Value", const_cast<char**>(kw), &tenant, &tenant_len,
                                   &fields, &key, &key_len))
    return nullptr;
  PyObject* items = PyMapping_Items(fields);
  if (items == nullptr) return nullptr;
  const Py_ssize_t n = PyList_GET_SIZE(items);
  PyObject* names = PyTuple_New(n);
  std::vector<std::optional<std::string_view>> values;
  PyObject* out = nullptr;
  for (Py_ssize_t i = 0; names != nullptr && i < n; ++i) {
    PyObject* name = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 0);
    PyObject* text = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 1);
    if (!PyUnicode_Check(name) || (text != Py_None && !PyUnicode_Check(text))) {
      PyErr_SetString(PyExc_TypeError, "Value fields map str names to str or None");
      goto done;
    }
    PyTuple_SET_ITEM(names, i, Py_NewRef(name));
    if (text == Py_None) {
      values.emplace_back(std::nullopt);
    } else {
      Py_ssize_t len;
      const char* data = PyUnicode_AsUTF8AndSize(text, &len);
      if (data == nullptr) goto done;
      values.emplace_back(std::string_view(data, static_cast<size_t>(len)));
    }
  }
  if (names != nullptr) {
    const std::string_view k(key, static_cast<size_t>(key_len));
    const std::string_view t(tenant, static_cast<size_t>(tenant_len));
    const size_t size = tenantcache::EncodedSize(k, t, values);
    if (size == 0 || size > layout::kMaxDataSize || n > static_cast<Py_ssize_t>(layout::kMaxFields)) {
      PyErr_SetString(PyExc_ValueError, "Value is larger than any cache entry can be");
      goto done;
    }
    auto* v = PyObject_NewVar(ValueObject, &ValueType, static_cast<Py_ssize_t>(size));
    if (v == nullptr) goto done;
    v->names = Py_NewRef(names);
    v->key_len = static_cast<uint16_t>(key_len);
    v->tenant_len = static_cast<uint16_t>(tenant_len);
    v->field_count = static_cast<uint32_t>(n);
    tenantcache::EncodeEntry(k, t, values, v->data);
    out = reinterpret_cast<PyObject*>(v);
  }
done:
  Py_XDECREF(names);
  Py_DECREF(items);
  return out;
}

void ValueDealloc(PyObject* self) {
  Py_XDECREF(reinterpret_cast<ValueObject*>(self)->names);
  PyObject_Free(self);
}

PyMethodDef kValueMethods[] = {
    {"get", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(ValueGet)), METH_FASTCALL,
     "get(name, default=None): field `name` (str, or None for SQL NULL), or `default` when the namespace has "
     "no such field."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef kValueGetSet[] = {
    {"tenant", ValueGetTenant, nullptr, "The entry's tenant id (str).", nullptr},
    {"key", ValueGetKey, nullptr, "The normalised key the entry was found under (str).", nullptr},
    {"fields", ValueGetFields, nullptr,
     "Every field, as a read-only mapping of name to str (None for SQL NULL).", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyMappingMethods kValueMapping = {ValueLength, ValueSubscript, nullptr};
PySequenceMethods kValueSequence = {nullptr, nullptr, nullptr,       nullptr, nullptr,
                                    nullptr, nullptr, ValueContains, nullptr, nullptr};

PyTypeObject ValueType = {
    .ob_base = PyVarObject_HEAD_INIT(nullptr, 0).tp_name = "tenantcache.Value",
    .tp_basicsize = offsetof(ValueObject, data),
    .tp_itemsize = 1,
    .tp_dealloc = ValueDealloc,
    .tp_repr = ValueRepr,
    .tp_as_sequence = &kValueSequence,
    .tp_as_mapping = &kValueMapping,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc =
        "A found entry: its tenant id and the namespace's named text fields, read like a read-only\n"
        "mapping (v['role'], v.get('role'), 'role' in v, iteration over the field names).\n"
        "Immutable; it holds a copy of the entry's bytes and decodes a field when it is read.\n"
        "Value(tenant, fields, key='') builds one, for a service's tests.",
    .tp_richcompare = ValueRichCompare,
    .tp_iter = ValueIter,
    .tp_methods = kValueMethods,
    .tp_getset = kValueGetSet,
    .tp_new = ValueNew,
};

// --- Result ---------------------------------------------------------------------

struct ResultObject {
  PyObject_HEAD int status;
  PyObject* value;   // a Value when FOUND, else nullptr
  PyObject* detail;  // str or nullptr ("")
};

extern PyTypeObject ResultType;

// Results without value or detail are immutable and shared (one per status).
PyObject* g_plain_result[kStatusCount];

PyObject* NewResult(int status, PyObject* value, PyObject* detail) {
  if (value == nullptr && detail == nullptr && g_plain_result[status - kMinStatus] != nullptr)
    return Py_NewRef(g_plain_result[status - kMinStatus]);
  auto* r = PyObject_New(ResultObject, &ResultType);
  if (r == nullptr) return nullptr;
  r->status = status;
  r->value = Py_XNewRef(value);
  r->detail = Py_XNewRef(detail);
  return reinterpret_cast<PyObject*>(r);
}

PyObject* ResultNew(PyTypeObject*, PyObject* args, PyObject* kwargs) {
  static const char* kw[] = {"status", "value", "detail", nullptr};
  int status;
  PyObject* value = Py_None;
  PyObject* detail = nullptr;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|OU:Result", const_cast<char**>(kw), &status, &value,
                                   &detail))
    return nullptr;
  if (!IsReadResult(status))
    return PyErr_Format(PyExc_ValueError, "%d is not a status a read returns", status);
  if ((status == TC_FOUND) != (PyObject_TypeCheck(value, &ValueType) != 0))
    return PyErr_Format(PyExc_ValueError, "a Result holds a Value exactly when its status is FOUND");
  if (detail != nullptr && PyUnicode_GET_LENGTH(detail) == 0) detail = nullptr;
  return NewResult(status, value == Py_None ? nullptr : value, detail);
}

void ResultDealloc(PyObject* self) {
  auto* r = reinterpret_cast<ResultObject*>(self);
  Py_XDECREF(r->value);
  Py_XDECREF(r->detail);
  PyObject_Free(self);
}

int StatusOf(PyObject* self) { return reinterpret_cast<ResultObject*>(self)->status; }

PyObject* ResultGetStatus(PyObject* self, void*) { return Py_NewRef(g_status[StatusOf(self) - kMinStatus]); }
PyObject* ResultGetFound(PyObject* self, void*) { return PyBool_FromLong(StatusOf(self) == TC_FOUND); }
PyObject* ResultGetNotFound(PyObject* self, void*) { return PyBool_FromLong(StatusOf(self) == TC_NOT_FOUND); }
PyObject* ResultGetMiss(PyObject* self, void*) { return PyBool_FromLong(StatusOf(self) == TC_MISS); }
PyObject* ResultGetUnavailable(PyObject* self, void*) {
  return PyBool_FromLong(StatusOf(self) == TC_E_UNAVAILABLE);
}
PyObject* ResultGetNeedsDatabase(PyObject* self, void*) {
  return PyBool_FromLong(NeedsDatabase(StatusOf(self)));
}

PyObject* ResultGetDetail(PyObject* self, void*) {
  PyObject* d = reinterpret_cast<ResultObject*>(self)->detail;
  return d != nullptr ? Py_NewRef(d) : PyUnicode_FromStringAndSize("", 0);
}

PyObject* ResultGetValue(PyObject* self, void*) {
  auto* r = reinterpret_cast<ResultObject*>(self);
  if (r->value == nullptr) return RaiseErrorText(r->status, "result holds no value", nullptr);
  return Py_NewRef(r->value);
}

PyObject* ResultMisread(PyObject*, PyObject*) {
  PyErr_SetString(PyExc_TypeError,
                  "read status, found, not_found, miss, unavailable, needs_database or value");
  return nullptr;
}
PyObject* ResultIter(PyObject* self) { return ResultMisread(self, nullptr); }
int ResultBool(PyObject*) {
  PyErr_SetString(PyExc_TypeError, "ask found, needs_database, not_found, miss or unavailable");
  return -1;
}

PyObject* ResultRepr(PyObject* self) {
  auto* r = reinterpret_cast<ResultObject*>(self);
  PyObject* name = PyObject_GetAttrString(g_status[r->status - kMinStatus], "name");
  if (name == nullptr) return nullptr;
  PyObject* out = r->value != nullptr    ? PyUnicode_FromFormat("Result(%U, %R)", name, r->value)
                  : r->detail != nullptr ? PyUnicode_FromFormat("Result(%U, %R)", name, r->detail)
                                         : PyUnicode_FromFormat("Result(%U)", name);
  Py_DECREF(name);
  return out;
}

PyGetSetDef kResultGetSet[] = {
    {"status", ResultGetStatus, nullptr, "The Status of the read.", nullptr},
    {"found", ResultGetFound, nullptr, "True when the key has a value: read it from `value`.", nullptr},
    {"not_found", ResultGetNotFound, nullptr,
     "True when the database has no such row (a cached negative entry).", nullptr},
    {"miss", ResultGetMiss, nullptr, "True when the cache does not hold the key (get() only).", nullptr},
    {"unavailable", ResultGetUnavailable, nullptr,
     "True when the cache cannot be trusted now (daemon stopped or not synced): query the database.",
     nullptr},
    {"needs_database", ResultGetNeedsDatabase, nullptr,
     "True when the cache could not answer (MISS, UNAVAILABLE, BUSY, TIMEOUT, DAEMON): query PostgreSQL "
     "yourself.",
     nullptr},
    {"detail", ResultGetDetail, nullptr,
     "What the daemon said about a failed lookup (e.g. the database's error for DAEMON); '' otherwise.",
     nullptr},
    {"value", ResultGetValue, nullptr, "The Value when found; reading it otherwise raises Error.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyNumberMethods kResultNumber = {.nb_bool = ResultBool};
PyMappingMethods kResultMapping = {nullptr, ResultMisread, nullptr};

PyTypeObject ResultType = {
    .ob_base = PyVarObject_HEAD_INIT(nullptr, 0).tp_name = "tenantcache.Result",
    .tp_basicsize = sizeof(ResultObject),
    .tp_dealloc = ResultDealloc,
    .tp_repr = ResultRepr,
    .tp_as_number = &kResultNumber,
    .tp_as_mapping = &kResultMapping,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc =
        "Result(status, value=None, detail='')\n--\n\n"
        "The outcome of a read. Immutable. Ask `found`, `needs_database`, `not_found`, `miss` or\n"
        "`unavailable`; `value` exists only when found. It has no truth value, so that `if r:` cannot\n"
        "be mistaken for `if r.found:`.",
    .tp_iter = ResultIter,
    .tp_getset = kResultGetSet,
    .tp_new = ResultNew,
};

// --- an awaitable that is already done ------------------------------------

// What lookup_async returns when the shared-memory read answered: awaiting it
// finishes at once (StopIteration), without giving the event loop a turn.
struct ReadyObject {
  PyObject_HEAD PyObject* result;
};

void ReadyDealloc(PyObject* self) {
  Py_XDECREF(reinterpret_cast<ReadyObject*>(self)->result);
  PyObject_Free(self);
}

PyObject* SelfRef(PyObject* self) { return Py_NewRef(self); }

PyObject* ReadyNext(PyObject* self) {
  auto* r = reinterpret_cast<ReadyObject*>(self);
  if (r->result == nullptr) return nullptr;  // awaited twice: plain StopIteration, as a finished generator
  PyObject* result = r->result;
  r->result = nullptr;
  PyObject* stop = PyObject_CallOneArg(PyExc_StopIteration, result);
  Py_DECREF(result);
  if (stop != nullptr) {
    PyErr_SetObject(PyExc_StopIteration, stop);
    Py_DECREF(stop);
  }
  return nullptr;
}

PyObject* ReadySend(PyObject* self, PyObject*) { return ReadyNext(self); }

PyObject* ReadyThrow(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  Py_CLEAR(reinterpret_cast<ReadyObject*>(self)->result);
  if (nargs < 1) return PyErr_Format(PyExc_TypeError, "throw() takes an exception");
  PyObject* exc = args[0];
  if (PyExceptionInstance_Check(exc)) {
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc)), exc);
  } else {
    PyErr_SetObject(exc, nargs > 1 ? args[1] : nullptr);
  }
  return nullptr;
}

PyObject* ReadyClose(PyObject* self, PyObject*) {
  Py_CLEAR(reinterpret_cast<ReadyObject*>(self)->result);
  Py_RETURN_NONE;
}

PyMethodDef kReadyMethods[] = {
    {"send", ReadySend, METH_O, "Finishes with the result."},
    {"throw", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(ReadyThrow)), METH_FASTCALL,
     "Raises the exception."},
    {"close", ReadyClose, METH_NOARGS, "Drops the result."},
    {nullptr, nullptr, 0, nullptr}};

PyAsyncMethods kReadyAsync = {.am_await = SelfRef};

PyTypeObject ReadyType = {
    .ob_base = PyVarObject_HEAD_INIT(nullptr, 0).tp_name = "tenantcache._Ready",
    .tp_basicsize = sizeof(ReadyObject),
    .tp_dealloc = ReadyDealloc,
    .tp_as_async = &kReadyAsync,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An awaitable whose result is already known (a lookup answered from shared memory).",
    .tp_iter = SelfRef,
    .tp_iternext = ReadyNext,
    .tp_methods = kReadyMethods,
};

// --- Cache --------------------------------------------------------------------------

// Field names of one namespace as the last found value's file described them:
// rebuilt when a value comes from another description (the handle followed a
// replaced file whose namespace has other fields).
struct NsNames {
  const layout::NamespaceDesc* desc;
  uint32_t count;
  char snapshot[layout::kMaxFields][layout::kNameMax];
  PyObject* names;  // tuple of str
};

struct CacheObject {
  PyObject_HEAD tc_cache* handle;  // nullptr once closed
  tc_cache* closing;               // detached by close() while calls were in flight
  Py_ssize_t inflight;             // calls on `handle` running without the GIL
  PyObject* ns_ids;                // dict: namespace name -> int id
  NsNames* names;                  // indexed by namespace id
  uint32_t names_cap;
  PyObject* path;
  CacheObject* prev;  // the open caches, for _after_fork_child
  CacheObject* next;
  PyObject* weakrefs;
};

extern PyTypeObject CacheType;
CacheObject* g_open_caches;

void Unlink(CacheObject* c) {
  if (c->prev != nullptr) c->prev->next = c->next;
  if (c->next != nullptr) c->next->prev = c->prev;
  if (g_open_caches == c) g_open_caches = c->next;
  c->prev = c->next = nullptr;
}

void CloseNoGil(tc_cache* h) {
  // tc_cache_close reports this process's read counters to the daemon.
  Py_BEGIN_ALLOW_THREADS tc_cache_close(h);
  Py_END_ALLOW_THREADS
}

// The handle for a call that will release the GIL, counted in `inflight`; or
// nullptr with Error raised when the cache is closed.
tc_cache* Enter(CacheObject* c) {
  if (c->handle == nullptr) {
    RaiseErrorText(TC_E_INVALID_ARG, "cache is closed", "");
    return nullptr;
  }
  ++c->inflight;
  return c->handle;
}

void Leave(CacheObject* c) {
  if (--c->inflight == 0 && c->closing != nullptr) {
    tc_cache* h = c->closing;
    c->closing = nullptr;
    CloseNoGil(h);
  }
}

PyObject* CacheOpen(PyObject* cls, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  static const char* const kNames[] = {"path"};
  PyObject* a[1];
  if (!ParseArgs("open", args, nargs, kwnames, kNames, 1, 0, a)) return nullptr;
  PyObject* path =
      a[0] == nullptr || a[0] == Py_None ? PyUnicode_FromString(tc_default_cache_path()) : PyOS_FSPath(a[0]);
  if (path == nullptr) return nullptr;
  PyObject* encoded = nullptr;
  if (!PyUnicode_FSConverter(path, &encoded)) {
    Py_DECREF(path);
    return nullptr;
  }
  tc_cache* handle = nullptr;
  int rc;
  int err;
  const char* raw = PyBytes_AS_STRING(encoded);
  Py_BEGIN_ALLOW_THREADS rc = tc_cache_open(raw, &handle);
  err = errno;
  Py_END_ALLOW_THREADS Py_DECREF(encoded);
  if (rc != 0) {
    PyObject* what = PyUnicode_FromFormat("cannot open %S", path);
    Py_DECREF(path);
    if (what != nullptr) RaiseError(rc, what, rc == TC_E_IO ? strerror(err) : "");
    Py_XDECREF(what);
    return nullptr;
  }
  auto* c = PyObject_New(CacheObject, reinterpret_cast<PyTypeObject*>(cls));
  if (c == nullptr) {
    tc_cache_close(handle);
    Py_DECREF(path);
    return nullptr;
  }
  c->handle = handle;
  c->closing = nullptr;
  c->inflight = 0;
  c->ns_ids = PyDict_New();
  c->names = nullptr;
  c->names_cap = 0;
  c->path = path;
  c->weakrefs = nullptr;
  c->prev = nullptr;
  c->next = g_open_caches;
  if (g_open_caches != nullptr) g_open_caches->prev = c;
  g_open_caches = c;
  if (c->ns_ids == nullptr) {
    Py_DECREF(c);
    return nullptr;
  }
  return reinterpret_cast<PyObject*>(c);
}

void CacheDealloc(PyObject* self) {
  auto* c = reinterpret_cast<CacheObject*>(self);
  if (c->weakrefs != nullptr) PyObject_ClearWeakRefs(self);
  Unlink(c);
  // No call can be in flight: each holds a reference to the Cache.
  if (c->handle != nullptr) CloseNoGil(c->handle);
  for (uint32_t i = 0; i < c->names_cap; ++i) Py_XDECREF(c->names[i].names);
  PyMem_Free(c->names);
  Py_XDECREF(c->ns_ids);
  Py_XDECREF(c->path);
  PyObject_Free(self);
}

PyObject* CacheClose(PyObject* self, PyObject*) {
  auto* c = reinterpret_cast<CacheObject*>(self);
  tc_cache* h = c->handle;
  if (h == nullptr) Py_RETURN_NONE;
  c->handle = nullptr;
  Unlink(c);
  if (c->inflight > 0) {
    c->closing = h;  // the last call in flight closes it (Leave)
  } else {
    CloseNoGil(h);
  }
  Py_RETURN_NONE;
}

PyObject* CacheEnter(PyObject* self, PyObject*) { return Py_NewRef(self); }
PyObject* CacheExit(PyObject* self, PyObject* const*, Py_ssize_t) { return CacheClose(self, nullptr); }

// Resolves a namespace given as a name (str) or a Namespace of this cache.
bool ResolveNs(CacheObject* c, PyObject* ns, tc_ns* out);

// The (namespace, key) of a read or an invalidation on an open cache.
struct KeyArgs {
  tc_ns id = 0;
  KeyBuffer key;

  bool Set(CacheObject* c, PyObject* ns, PyObject* key_obj) {
    if (c->handle == nullptr) {
      RaiseErrorText(TC_E_INVALID_ARG, "cache is closed", "");
      return false;
    }
    return ResolveNs(c, ns, &id) && key.Set("key", key_obj);
  }
};

// The field names tuple for a value just found (borrowed), or nullptr.
PyObject* FieldNames(CacheObject* c, tc_ns id, const tc_value* v) {
  const auto* desc = static_cast<const layout::NamespaceDesc*>(v->priv_ns);
  tenantcache::ValueMeta meta;
  std::memcpy(&meta, &v->priv_reserved[0], sizeof meta);
  const uint32_t count = meta.field_count;
  if (id >= c->names_cap) {
    const uint32_t cap = id + 8;
    auto* grown = static_cast<NsNames*>(PyMem_Realloc(c->names, cap * sizeof(NsNames)));
    if (grown == nullptr) return PyErr_NoMemory();
    for (uint32_t i = c->names_cap; i < cap; ++i) grown[i].names = nullptr;
    c->names = grown;
    c->names_cap = cap;
  }
  NsNames& n = c->names[id];
  const size_t bytes = count * layout::kNameMax;
  if (n.names != nullptr && n.desc == desc && n.count == count &&
      std::memcmp(n.snapshot, desc->field_names, bytes) == 0)
    return n.names;
  PyObject* names = PyTuple_New(count);
  if (names == nullptr) return nullptr;
  for (uint32_t i = 0; i < count; ++i) {
    PyObject* s = PyUnicode_DecodeUTF8(
        desc->field_names[i], static_cast<Py_ssize_t>(strnlen(desc->field_names[i], layout::kNameMax)),
        "replace");
    if (s == nullptr) {
      Py_DECREF(names);
      return nullptr;
    }
    PyUnicode_InternInPlace(&s);
    PyTuple_SET_ITEM(names, i, s);
  }
  Py_XSETREF(n.names, names);
  n.desc = desc;
  n.count = count;
  std::memcpy(n.snapshot, desc->field_names, bytes);
  return names;
}

PyObject* MakeValue(CacheObject* c, tc_ns id, const tc_value* v) {
  PyObject* names = FieldNames(c, id, v);
  if (names == nullptr) return nullptr;
  tenantcache::ValueMeta meta;
  std::memcpy(&meta, &v->priv_reserved[0], sizeof meta);
  auto* out = PyObject_NewVar(ValueObject, &ValueType, v->priv_len);
  if (out == nullptr) return nullptr;
  out->names = Py_NewRef(names);
  out->key_len = meta.key_len;
  out->tenant_len = meta.tenant_len;
  out->field_count = meta.field_count;
  std::memcpy(out->data, v->priv_data, v->priv_len);
  return reinterpret_cast<PyObject*>(out);
}

// The Result of a read, or an Error for a status a read does not answer with
// (NO_NAMESPACE, INVALID_ARG). `asked` says the daemon was asked, so that its
// detail applies.
PyObject* ReadResult(CacheObject* c, tc_ns id, int rc, const tc_value* v, bool asked, PyObject* ns) {
  const char* detail = asked && rc < 0 ? tc_last_error_detail() : "";
  if (!IsReadResult(rc)) {
    PyObject* what = PyUnicode_FromFormat("read %S", ns);
    if (what != nullptr) RaiseError(rc, what, detail);
    Py_XDECREF(what);
    return nullptr;
  }
  if (rc == TC_FOUND) {
    PyObject* value = MakeValue(c, id, v);
    if (value == nullptr) return nullptr;
    PyObject* r = NewResult(rc, value, nullptr);
    Py_DECREF(value);
    return r;
  }
  if (*detail == 0) return NewResult(rc, nullptr, nullptr);
  PyObject* d = PyUnicode_DecodeUTF8(detail, static_cast<Py_ssize_t>(strlen(detail)), "replace");
  if (d == nullptr) return nullptr;
  PyObject* r = NewResult(rc, nullptr, d);
  Py_DECREF(d);
  return r;
}

PyObject* DoGet(CacheObject* c, PyObject* ns, PyObject* key) {
  KeyArgs k;
  if (!k.Set(c, ns, key)) return nullptr;
  tc_value v;
  const int rc = tc_cache_get(c->handle, k.id, k.key.data, k.key.len, &v);
  return ReadResult(c, k.id, rc, &v, false, ns);
}

// lookup(); with `skip_read`, the daemon half only (for lookup_async, whose
// shared-memory read just missed: reading again would count a second miss).
PyObject* DoLookup(CacheObject* c, PyObject* ns, PyObject* key, int timeout_ms, bool skip_read) {
  KeyArgs k;
  if (!k.Set(c, ns, key)) return nullptr;
  tc_value v;
  int rc = skip_read ? TC_MISS : tc_cache_get(c->handle, k.id, k.key.data, k.key.len, &v);
  const bool asked = rc == TC_MISS;
  if (asked) {
    // A str key's UTF-8 buffer belongs to the str, which the caller's
    // arguments keep alive while the GIL is released.
    tc_cache* h = Enter(c);
    if (h == nullptr) return nullptr;
    Py_BEGIN_ALLOW_THREADS rc = tenantcache::AskDaemon(h, k.id, k.key.data, k.key.len, timeout_ms, &v);
    Py_END_ALLOW_THREADS Leave(c);
  }
  return ReadResult(c, k.id, rc, &v, asked, ns);
}

// lookup_async: a Ready awaitable unless the shared-memory read missed, in
// which case __init__.py's coroutine hands the wait to a thread.
PyObject* DoLookupAsync(CacheObject* c, PyObject* ns, PyObject* key, int timeout_ms) {
  PyObject* r = DoGet(c, ns, key);
  if (r == nullptr) return nullptr;
  if (reinterpret_cast<ResultObject*>(r)->status == TC_MISS) {
    Py_DECREF(r);
    if (g_async_miss == nullptr)
      return PyErr_Format(PyExc_RuntimeError, "tenantcache: _set_async_miss not called");
    PyObject* t = PyLong_FromLong(timeout_ms);
    if (t == nullptr) return nullptr;
    PyObject* coro =
        PyObject_CallFunctionObjArgs(g_async_miss, reinterpret_cast<PyObject*>(c), ns, key, t, nullptr);
    Py_DECREF(t);
    return coro;
  }
  auto* ready = PyObject_New(ReadyObject, &ReadyType);
  if (ready == nullptr) {
    Py_DECREF(r);
    return nullptr;
  }
  ready->result = r;
  return reinterpret_cast<PyObject*>(ready);
}

const char* const kReadNames[] = {"namespace", "key", "timeout_ms"};

PyObject* CacheGet(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2)
    return PyErr_Format(PyExc_TypeError, "get() takes 2 arguments (namespace, key), %zd given", nargs);
  return DoGet(reinterpret_cast<CacheObject*>(self), args[0], args[1]);
}

PyObject* CacheLookup(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* a[3];
  int timeout;
  if (!ParseWithTimeout("lookup", args, nargs, kwnames, kReadNames, 3, kDefaultLookupMs, a, &timeout))
    return nullptr;
  return DoLookup(reinterpret_cast<CacheObject*>(self), a[0], a[1], timeout, false);
}

PyObject* CacheAskDaemon(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  int timeout;
  if (nargs != 3) return PyErr_Format(PyExc_TypeError, "_ask_daemon() takes 3 arguments, %zd given", nargs);
  if (!ParseTimeout(args[2], kDefaultLookupMs, &timeout)) return nullptr;
  return DoLookup(reinterpret_cast<CacheObject*>(self), args[0], args[1], timeout, true);
}

PyObject* CacheLookupAsync(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* a[3];
  int timeout;
  if (!ParseWithTimeout("lookup_async", args, nargs, kwnames, kReadNames, 3, kDefaultLookupMs, a, &timeout))
    return nullptr;
  return DoLookupAsync(reinterpret_cast<CacheObject*>(self), a[0], a[1], timeout);
}

// Runs a daemon command without the GIL and raises Error unless it returns 0.
template <typename F>
PyObject* Command(CacheObject* c, const char* what, F f) {
  tc_cache* h = Enter(c);
  if (h == nullptr) return nullptr;
  int rc;
  Py_BEGIN_ALLOW_THREADS rc = f(h);
  Py_END_ALLOW_THREADS Leave(c);
  if (rc != 0) return RaiseErrorText(rc, what, tc_last_error_detail());
  Py_RETURN_NONE;
}

PyObject* DoInvalidate(CacheObject* c, PyObject* ns, PyObject* key, int timeout) {
  KeyArgs k;
  if (!k.Set(c, ns, key)) return nullptr;
  return Command(c, "invalidate",
                 [&](tc_cache* h) { return tc_cache_invalidate(h, k.id, k.key.data, k.key.len, timeout); });
}

PyObject* CacheInvalidate(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* a[3];
  int timeout;
  if (!ParseWithTimeout("invalidate", args, nargs, kwnames, kReadNames, 3, kDefaultCommandMs, a, &timeout))
    return nullptr;
  return DoInvalidate(reinterpret_cast<CacheObject*>(self), a[0], a[1], timeout);
}

PyObject* CacheInvalidateTenant(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  static const char* const kNames[] = {"tenant_id", "timeout_ms"};
  PyObject* a[2];
  int timeout;
  if (!ParseWithTimeout("invalidate_tenant", args, nargs, kwnames, kNames, 2, kDefaultCommandMs, a, &timeout))
    return nullptr;
  auto* c = reinterpret_cast<CacheObject*>(self);
  KeyBuffer tenant;
  if (!tenant.Set("tenant_id", a[0])) return nullptr;
  return Command(c, "invalidate_tenant", [&](tc_cache* h) {
    return tc_cache_invalidate_tenant(h, tenant.data, tenant.len, timeout);
  });
}

PyObject* CacheFlush(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  static const char* const kNames[] = {"timeout_ms"};
  PyObject* a[1];
  int timeout;
  if (!ParseWithTimeout("flush", args, nargs, kwnames, kNames, 1, kDefaultCommandMs, a, &timeout))
    return nullptr;
  return Command(reinterpret_cast<CacheObject*>(self), "flush",
                 [&](tc_cache* h) { return tc_cache_flush(h, timeout); });
}

PyObject* CacheDaemonStats(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  static const char* const kNames[] = {"timeout_ms"};
  PyObject* a[1];
  int timeout;
  if (!ParseWithTimeout("daemon_stats", args, nargs, kwnames, kNames, 1, kDefaultCommandMs, a, &timeout))
    return nullptr;
  auto* c = reinterpret_cast<CacheObject*>(self);
  tc_cache* h = Enter(c);
  if (h == nullptr) return nullptr;
  constexpr size_t kCap = 64 * 1024;
  char* buf = static_cast<char*>(PyMem_RawMalloc(kCap));
  if (buf == nullptr) {
    Leave(c);
    return PyErr_NoMemory();
  }
  int rc;
  Py_BEGIN_ALLOW_THREADS rc = tc_cache_daemon_stats(h, buf, kCap, timeout);
  Py_END_ALLOW_THREADS Leave(c);
  PyObject* out = nullptr;
  if (rc < 0) {
    RaiseErrorText(rc, "daemon_stats", tc_last_error_detail());
  } else {
    PyObject* json = PyImport_ImportModule("json");
    if (json != nullptr) {
      out = PyObject_CallMethod(json, "loads", "s#", buf, static_cast<Py_ssize_t>(rc));
      Py_DECREF(json);
    }
  }
  PyMem_RawFree(buf);
  return out;
}

PyObject* CacheStats(PyObject* self, PyObject*) {
  auto* c = reinterpret_cast<CacheObject*>(self);
  if (c->handle == nullptr) return RaiseErrorText(TC_E_INVALID_ARG, "cache is closed", "");
  tc_stats s;
  tc_cache_stats(c->handle, &s);
  return Py_BuildValue("{sKsKsKsK}", "hits", static_cast<unsigned long long>(s.hits), "negative_hits",
                       static_cast<unsigned long long>(s.negative_hits), "misses",
                       static_cast<unsigned long long>(s.misses), "unavailable",
                       static_cast<unsigned long long>(s.unavailable));
}

PyObject* CacheInfo(PyObject* self, PyObject*) {
  auto* c = reinterpret_cast<CacheObject*>(self);
  if (c->handle == nullptr) return RaiseErrorText(TC_E_INVALID_ARG, "cache is closed", "");
  tc_info i;
  tc_cache_info(c->handle, &i);
  using ull = unsigned long long;
  return Py_BuildValue(
      "{sisOsOsOsKsKsKsKsKsKsKsKsIsIss}", "daemon_pid", i.daemon_pid, "synced", i.synced ? Py_True : Py_False,
      "retired", i.retired ? Py_True : Py_False, "available", i.available ? Py_True : Py_False, "epoch",
      static_cast<ull>(i.epoch), "heartbeat_age_ns", static_cast<ull>(i.heartbeat_age_ns), "stale_after_ns",
      static_cast<ull>(i.stale_after_ns), "idle_timeout_ns", static_cast<ull>(i.idle_timeout_ns), "entries",
      static_cast<ull>(i.entries), "slots", static_cast<ull>(i.slots), "capacity",
      static_cast<ull>(i.capacity), "file_bytes", static_cast<ull>(i.file_bytes), "slot_bytes", i.slot_bytes,
      "layout_version", i.layout_version, "control_socket", i.control_socket);
}

PyObject* CacheNamespaceNew(PyObject* self, PyObject* name);

PyObject* CacheGetClosed(PyObject* self, void*) {
  return PyBool_FromLong(reinterpret_cast<CacheObject*>(self)->handle == nullptr);
}
PyObject* CacheGetPath(PyObject* self, void*) {
  return Py_NewRef(reinterpret_cast<CacheObject*>(self)->path);
}

PyObject* CacheRepr(PyObject* self) {
  auto* c = reinterpret_cast<CacheObject*>(self);
  return PyUnicode_FromFormat("<tenantcache.Cache %R%s>", c->path, c->handle == nullptr ? " closed" : "");
}

#define TC_FAST(f) reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f))

PyMethodDef kCacheMethods[] = {
    {"open", TC_FAST(CacheOpen), METH_FASTCALL | METH_KEYWORDS | METH_CLASS,
     "open(path=None) -> Cache\n--\n\nOpens the cache file at `path` (str or os.PathLike) read-only; by "
     "default "
     "where the packaged daemon writes it (default_cache_path(), /run/tenantcache/cache). Raises Error (IO "
     "with "
     "the system's reason, LAYOUT) when it cannot."},
    {"close", CacheClose, METH_NOARGS,
     "close()\n--\n\nCloses the cache; later calls raise Error. Idempotent. Calls other threads have waiting "
     "on the daemon finish first; the last of them releases the handle."},
    {"__enter__", CacheEnter, METH_NOARGS, "Returns the cache."},
    {"__exit__", TC_FAST(CacheExit), METH_FASTCALL, "Closes the cache."},
    {"namespace", CacheNamespaceNew, METH_O,
     "namespace(name) -> Namespace\n--\n\nA handle on namespace `name` (e.g. 'user'), resolved once: pass it "
     "instead of the name, or call its own get/lookup/lookup_async/invalidate. Raises Error (NO_NAMESPACE) "
     "when the cache has no such namespace."},
    {"get", TC_FAST(CacheGet), METH_FASTCALL,
     "get(namespace, key) -> Result\n--\n\nReads shared memory only; never blocks and never releases the "
     "GIL. "
     "FOUND, NOT_FOUND, MISS, UNAVAILABLE or INVALID_KEY. `namespace` is a name or a Namespace; `key` a str "
     "or "
     "bytes. Raises TypeError for another key type, Error (NO_NAMESPACE) for an unknown namespace and Error "
     "(INVALID_ARG) once closed."},
    {"lookup", TC_FAST(CacheLookup), METH_FASTCALL | METH_KEYWORDS,
     "lookup(namespace, key, timeout_ms=100) -> Result\n--\n\nget(), and on a miss asks the daemon (without "
     "the "
     "GIL), waiting at most timeout_ms: FOUND, NOT_FOUND, INVALID_KEY, or (needs_database) UNAVAILABLE, "
     "BUSY, "
     "TIMEOUT or DAEMON, with the daemon's words in `detail`."},
    {"lookup_async", TC_FAST(CacheLookupAsync), METH_FASTCALL | METH_KEYWORDS,
     "lookup_async(namespace, key, timeout_ms=100) -> Awaitable[Result]\n--\n\nlookup() for asyncio: a hit "
     "or any answer from shared memory is returned without giving the event loop a turn; a miss waits for "
     "the "
     "daemon in the loop's default executor (a thread), so the loop never blocks."},
    {"_ask_daemon", TC_FAST(CacheAskDaemon), METH_FASTCALL,
     "_ask_daemon(namespace, key, timeout_ms) -> Result\n--\n\nThe daemon half of lookup(), for "
     "lookup_async's "
     "thread after its own shared-memory read missed."},
    {"invalidate", TC_FAST(CacheInvalidate), METH_FASTCALL | METH_KEYWORDS,
     "invalidate(namespace, key, timeout_ms=1000)\n--\n\nAsks the daemon to drop one key now. Raises Error "
     "(INVALID_KEY, UNAVAILABLE, TIMEOUT, BUSY: the daemon's rate limit) unless applied."},
    {"invalidate_tenant", TC_FAST(CacheInvalidateTenant), METH_FASTCALL | METH_KEYWORDS,
     "invalidate_tenant(tenant_id, timeout_ms=1000)\n--\n\nDrops every entry of a tenant. `tenant_id` is the "
     "tenant column's text as PostgreSQL prints it; a uuid may be braced, upper-case or without dashes. "
     "Raises "
     "Error (INVALID_KEY) for an empty id, a control character or one longer than any entry can hold."},
    {"flush", TC_FAST(CacheFlush), METH_FASTCALL | METH_KEYWORDS,
     "flush(timeout_ms=1000)\n--\n\nAsks the daemon to drop every entry now. Raises Error unless applied."},
    {"stats", CacheStats, METH_NOARGS,
     "stats() -> dict\n--\n\nThis process's reads through this cache: hits, negative_hits, misses, "
     "unavailable."},
    {"daemon_stats", TC_FAST(CacheDaemonStats), METH_FASTCALL | METH_KEYWORDS,
     "daemon_stats(timeout_ms=1000) -> dict\n--\n\nThe daemon's statistics (tenantcachectl stats), as a "
     "dict."},
    {"info", CacheInfo, METH_NOARGS,
     "info() -> dict\n--\n\nWhat the daemon publishes in the file header: synced, available, heartbeat age, "
     "entries, capacity, the control socket and more."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef kCacheGetSet[] = {{"closed", CacheGetClosed, nullptr, "True once close() was called.", nullptr},
                              {"path", CacheGetPath, nullptr, "The path the cache was opened at.", nullptr},
                              {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyTypeObject CacheType = {
    .ob_base = PyVarObject_HEAD_INIT(nullptr, 0).tp_name = "tenantcache.Cache",
    .tp_basicsize = sizeof(CacheObject),
    .tp_dealloc = CacheDealloc,
    .tp_repr = CacheRepr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc =
        "An open cache file, mapped read-only. Create it with Cache.open(path); close it, or use it as a\n"
        "context manager. Safe to share between threads; a Cache opened before fork() keeps working in\n"
        "the children (open it in a pre-fork server's master).",
    .tp_weaklistoffset = offsetof(CacheObject, weakrefs),
    .tp_methods = kCacheMethods,
    .tp_getset = kCacheGetSet,
};

// --- Namespace ------------------------------------------------------------------

struct NamespaceObject {
  PyObject_HEAD CacheObject* cache;
  tc_ns id;
  PyObject* name;
};

extern PyTypeObject NamespaceType;

bool ResolveNs(CacheObject* c, PyObject* ns, tc_ns* out) {
  if (Py_IS_TYPE(ns, &NamespaceType)) {
    auto* n = reinterpret_cast<NamespaceObject*>(ns);
    if (n->cache != c) {
      PyErr_Format(PyExc_ValueError, "namespace %R belongs to another Cache", n->name);
      return false;
    }
    *out = n->id;
    return true;
  }
  if (!PyUnicode_Check(ns)) {
    PyErr_Format(PyExc_TypeError, "namespace must be str or Namespace, not %.100s", Py_TYPE(ns)->tp_name);
    return false;
  }
  PyObject* id = PyDict_GetItemWithError(c->ns_ids, ns);
  if (id != nullptr) {
    *out = static_cast<tc_ns>(PyLong_AsUnsignedLong(id));
    return true;
  }
  if (PyErr_Occurred()) return false;
  Py_ssize_t n;
  const char* name = PyUnicode_AsUTF8AndSize(ns, &n);
  if (name == nullptr) return false;
  if (strlen(name) != static_cast<size_t>(n)) {
    PyErr_SetString(PyExc_ValueError, "namespace name contains a NUL character");
    return false;
  }
  const int rc = tc_namespace(c->handle, name, out);
  if (rc != 0) {
    PyObject* what = PyUnicode_FromFormat("namespace %R", ns);
    if (what != nullptr) RaiseError(rc, what, "");
    Py_XDECREF(what);
    return false;
  }
  PyObject* v = PyLong_FromUnsignedLong(*out);
  if (v == nullptr) return false;
  const int set = PyDict_SetItem(c->ns_ids, ns, v);
  Py_DECREF(v);
  return set == 0;
}

PyObject* CacheNamespaceNew(PyObject* self, PyObject* name) {
  auto* c = reinterpret_cast<CacheObject*>(self);
  if (c->handle == nullptr) return RaiseErrorText(TC_E_INVALID_ARG, "cache is closed", "");
  if (!PyUnicode_Check(name))
    return PyErr_Format(PyExc_TypeError, "namespace name must be str, not %.100s", Py_TYPE(name)->tp_name);
  tc_ns id;
  if (!ResolveNs(c, name, &id)) return nullptr;
  auto* n = PyObject_New(NamespaceObject, &NamespaceType);
  if (n == nullptr) return nullptr;
  n->cache = reinterpret_cast<CacheObject*>(Py_NewRef(self));
  n->id = id;
  n->name = Py_NewRef(name);
  return reinterpret_cast<PyObject*>(n);
}

void NamespaceDealloc(PyObject* self) {
  auto* n = reinterpret_cast<NamespaceObject*>(self);
  Py_XDECREF(n->cache);
  Py_XDECREF(n->name);
  PyObject_Free(self);
}

const char* const kNsReadNames[] = {"key", "timeout_ms"};

PyObject* NamespaceGet(PyObject* self, PyObject* key) {
  auto* n = reinterpret_cast<NamespaceObject*>(self);
  return DoGet(n->cache, self, key);
}

PyObject* NamespaceLookup(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* a[2];
  int timeout;
  if (!ParseWithTimeout("lookup", args, nargs, kwnames, kNsReadNames, 2, kDefaultLookupMs, a, &timeout))
    return nullptr;
  return DoLookup(reinterpret_cast<NamespaceObject*>(self)->cache, self, a[0], timeout, false);
}

PyObject* NamespaceLookupAsync(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* a[2];
  int timeout;
  if (!ParseWithTimeout("lookup_async", args, nargs, kwnames, kNsReadNames, 2, kDefaultLookupMs, a, &timeout))
    return nullptr;
  return DoLookupAsync(reinterpret_cast<NamespaceObject*>(self)->cache, self, a[0], timeout);
}

PyObject* NamespaceInvalidate(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* a[2];
  int timeout;
  if (!ParseWithTimeout("invalidate", args, nargs, kwnames, kNsReadNames, 2, kDefaultCommandMs, a, &timeout))
    return nullptr;
  return DoInvalidate(reinterpret_cast<NamespaceObject*>(self)->cache, self, a[0], timeout);
}

PyObject* NamespaceRepr(PyObject* self) {
  return PyUnicode_FromFormat("<tenantcache.Namespace %R>", reinterpret_cast<NamespaceObject*>(self)->name);
}

PyObject* NamespaceGetName(PyObject* self, void*) {
  return Py_NewRef(reinterpret_cast<NamespaceObject*>(self)->name);
}
PyObject* NamespaceGetCache(PyObject* self, void*) {
  return Py_NewRef(reinterpret_cast<PyObject*>(reinterpret_cast<NamespaceObject*>(self)->cache));
}

PyMethodDef kNamespaceMethods[] = {
    {"get", NamespaceGet, METH_O, "get(key) -> Result\n--\n\nCache.get(self, key)."},
    {"lookup", TC_FAST(NamespaceLookup), METH_FASTCALL | METH_KEYWORDS,
     "lookup(key, timeout_ms=100) -> Result\n--\n\nCache.lookup(self, key, timeout_ms)."},
    {"lookup_async", TC_FAST(NamespaceLookupAsync), METH_FASTCALL | METH_KEYWORDS,
     "lookup_async(key, timeout_ms=100) -> Awaitable[Result]\n--\n\nCache.lookup_async(self, key, "
     "timeout_ms)."},
    {"invalidate", TC_FAST(NamespaceInvalidate), METH_FASTCALL | METH_KEYWORDS,
     "invalidate(key, timeout_ms=1000)\n--\n\nCache.invalidate(self, key, timeout_ms)."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef kNamespaceGetSet[] = {{"name", NamespaceGetName, nullptr, "The namespace's name.", nullptr},
                                  {"cache", NamespaceGetCache, nullptr, "The Cache it belongs to.", nullptr},
                                  {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyTypeObject NamespaceType = {
    .ob_base = PyVarObject_HEAD_INIT(nullptr, 0).tp_name = "tenantcache.Namespace",
    .tp_basicsize = sizeof(NamespaceObject),
    .tp_dealloc = NamespaceDealloc,
    .tp_repr = NamespaceRepr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc =
        "A namespace of one Cache, resolved once (Cache.namespace(name)): the hot path skips the name.\n"
        "It keeps its Cache alive; it stays valid after the daemon replaced the file.",
    .tp_methods = kNamespaceMethods,
    .tp_getset = kNamespaceGetSet,
};

// --- module functions -------------------------------------------------------------

PyObject* ModDefaultCachePath(PyObject*, PyObject*) { return PyUnicode_FromString(tc_default_cache_path()); }
PyObject* ModVersion(PyObject*, PyObject*) { return PyUnicode_FromString(tc_version()); }
PyObject* ModLayoutVersion(PyObject*, PyObject*) { return PyLong_FromUnsignedLong(tc_layout_version()); }

PyObject* ModSetAsyncMiss(PyObject*, PyObject* fn) {
  Py_XSETREF(g_async_miss, Py_NewRef(fn));
  Py_RETURN_NONE;
}

PyObject* ModAfterForkChild(PyObject*, PyObject*) {
  // Only the forking thread runs in the child: the other threads' calls in
  // flight never return here, so nothing will Leave for them.
  for (CacheObject* c = g_open_caches; c != nullptr; c = c->next) c->inflight = 0;
  Py_RETURN_NONE;
}

PyMethodDef kModuleMethods[] = {
    {"default_cache_path", ModDefaultCachePath, METH_NOARGS,
     "default_cache_path() -> str\n--\n\nWhere Cache.open() looks by default (/run/tenantcache/cache)."},
    {"version", ModVersion, METH_NOARGS, "version() -> str\n--\n\nThe client library's version."},
    {"layout_version", ModLayoutVersion, METH_NOARGS,
     "layout_version() -> int\n--\n\nThe cache-file layout version this module reads."},
    {"_set_async_miss", ModSetAsyncMiss, METH_O,
     "Registers the coroutine factory lookup_async uses on a miss."},
    {"_after_fork_child", ModAfterForkChild, METH_NOARGS,
     "Forgets calls other threads had in flight at fork."},
    {nullptr, nullptr, 0, nullptr}};

// m_size 0, not -1: CPython 3.11 copies a -1 module into another interpreter
// without calling PyInit__native, which would bypass its refusal.
PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "tenantcache._native",
                       "The CPython extension behind the tenantcache package.", 0, kModuleMethods};

struct StatusName {
  const char* name;
  int value;
};
constexpr StatusName kStatusNames[] = {{"FOUND", TC_FOUND},
                                       {"NOT_FOUND", TC_NOT_FOUND},
                                       {"MISS", TC_MISS},
                                       {"UNAVAILABLE", TC_E_UNAVAILABLE},
                                       {"INVALID_KEY", TC_E_INVALID_KEY},
                                       {"NO_NAMESPACE", TC_E_NO_NAMESPACE},
                                       {"LAYOUT", TC_E_LAYOUT},
                                       {"IO", TC_E_IO},
                                       {"INVALID_ARG", TC_E_INVALID_ARG},
                                       {"NO_FIELD", TC_E_NO_FIELD},
                                       {"NOMEM", TC_E_NOMEM},
                                       {"BUSY", TC_E_BUSY},
                                       {"TIMEOUT", TC_E_TIMEOUT},
                                       {"DAEMON", TC_E_DAEMON}};
static_assert(sizeof kStatusNames / sizeof kStatusNames[0] == kStatusCount);

// Status = enum.IntEnum("Status", [...], module="tenantcache").
PyObject* MakeStatus() {
  PyObject* members = PyList_New(0);
  if (members == nullptr) return nullptr;
  for (const auto& s : kStatusNames) {
    PyObject* pair = Py_BuildValue("(si)", s.name, s.value);
    if (pair == nullptr || PyList_Append(members, pair) < 0) {
      Py_XDECREF(pair);
      Py_DECREF(members);
      return nullptr;
    }
    Py_DECREF(pair);
  }
  PyObject* enum_mod = PyImport_ImportModule("enum");
  PyObject* int_enum = enum_mod == nullptr ? nullptr : PyObject_GetAttrString(enum_mod, "IntEnum");
  Py_XDECREF(enum_mod);
  PyObject* status = nullptr;
  if (int_enum != nullptr) {
    PyObject* args = Py_BuildValue("(sO)", "Status", members);
    PyObject* kwargs = Py_BuildValue("{ss}", "module", "tenantcache");
    if (args != nullptr && kwargs != nullptr) status = PyObject_Call(int_enum, args, kwargs);
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_DECREF(int_enum);
  }
  Py_DECREF(members);
  if (status == nullptr) return nullptr;
  PyObject* doc = PyUnicode_FromString(
      "A read's or an operation's status: the C library's TC_* codes (FOUND, NOT_FOUND and MISS are answers "
      "of "
      "the cache; negative values are errors).");
  if (doc == nullptr || PyObject_SetAttrString(status, "__doc__", doc) < 0) {
    Py_XDECREF(doc);
    Py_DECREF(status);
    return nullptr;
  }
  Py_DECREF(doc);
  for (const auto& s : kStatusNames) {
    PyObject* m = PyObject_GetAttrString(status, s.name);
    if (m == nullptr) {
      Py_DECREF(status);
      return nullptr;
    }
    g_status[s.value - kMinStatus] = m;
  }
  return status;
}

}  // namespace

// CPython finds the init function by the module's name, _native.
PyMODINIT_FUNC PyInit__native(void) {  // NOLINT(bugprone-reserved-identifier)
  // Single-phase init with static types: refuse sub-interpreters, whose
  // objects must not meet this module's process-wide ones.
  if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
    PyErr_SetString(PyExc_ImportError,
                    "tenantcache cannot be used in a sub-interpreter: import it in the main interpreter");
    return nullptr;
  }
  PyTypeObject* types[] = {&ValueType, &ResultType, &ReadyType, &CacheType, &NamespaceType};
  for (PyTypeObject* t : types) {
    if (PyType_Ready(t) < 0) return nullptr;
  }
  PyObject* m = PyModule_Create(&kModule);
  if (m == nullptr) return nullptr;
  // A second import in this interpreter (importlib.reload, or after removal
  // from sys.modules) reuses the first one's objects, so that `except Error`
  // and Status comparisons keep meaning the same classes.
  if (g_status_enum == nullptr) g_status_enum = MakeStatus();
  if (g_error == nullptr) {
    g_error = PyErr_NewExceptionWithDoc("tenantcache.Error",
                                        "An operation failed. `status` (a Status) says how; `detail` holds "
                                        "what the daemon said ('' if nothing).",
                                        nullptr, nullptr);
  }
  if (g_status_enum == nullptr || g_error == nullptr ||
      PyModule_AddObject(m, "Status", Py_NewRef(g_status_enum)) < 0 ||
      PyModule_AddObject(m, "Error", Py_NewRef(g_error)) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  for (int s = kMinStatus; s <= kMaxStatus; ++s) {
    if (!IsReadResult(s) || s == TC_FOUND || g_plain_result[s - kMinStatus] != nullptr) continue;
    PyObject* r = NewResult(s, nullptr, nullptr);
    if (r == nullptr) {
      Py_DECREF(m);
      return nullptr;
    }
    g_plain_result[s - kMinStatus] = r;
  }
  const char* names[] = {"Value", "Result", "Cache", "Namespace"};
  PyTypeObject* exported[] = {&ValueType, &ResultType, &CacheType, &NamespaceType};
  for (int i = 0; i < 4; ++i) {
    if (PyModule_AddObject(m, names[i], Py_NewRef(reinterpret_cast<PyObject*>(exported[i]))) < 0) {
      Py_DECREF(m);
      return nullptr;
    }
  }
  return m;
}
