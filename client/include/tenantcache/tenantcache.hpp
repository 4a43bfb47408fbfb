// A thin C++17 layer over tenantcache.h: an RAII handle and results that
// cannot be misread (a value is reachable only from a result that found one).
// The C header's notes on threads, fork and fail-closed behaviour apply as is.
//
//   auto cache = tenantcache::Cache::Open("/dev/shm/tenantcache");
//   const auto user = cache.Namespace("user");
//   auto r = cache.Get(user, user_id);
//   if (r.found()) {
//     std::string_view role = r.value().field("role").value_or("");
//   } else if (r.unavailable() || r.miss()) {
//     // ask the daemon or the database
//   }
#ifndef TENANTCACHE_TENANTCACHE_HPP_
#define TENANTCACHE_TENANTCACHE_HPP_

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "tenantcache/tenantcache.h"

namespace tenantcache {

enum class Status : int {
  kFound = TC_FOUND,
  kNotFound = TC_NOT_FOUND,
  kMiss = TC_MISS,
  kUnavailable = TC_E_UNAVAILABLE,
  kInvalidKey = TC_E_INVALID_KEY,
  kNoNamespace = TC_E_NO_NAMESPACE,
  kLayout = TC_E_LAYOUT,
  kIo = TC_E_IO,
  kInvalidArg = TC_E_INVALID_ARG,
  kNoField = TC_E_NO_FIELD,
  kNoMemory = TC_E_NOMEM,
  kBusy = TC_E_BUSY,
  kTimeout = TC_E_TIMEOUT,
  kDaemon = TC_E_DAEMON,
};

// Thrown by Open and Namespace, and by Result::value() on a result without one.
// what() is "WHAT: tc_strerror(status)", followed by ": DETAIL" when a detail
// is given (for a request to the daemon: tc_last_error_detail(), read right
// after the call that failed).
class Error : public std::runtime_error {
 public:
  Error(Status status, const std::string& what, const std::string& detail = "")
      : std::runtime_error(what + ": " + tc_strerror(static_cast<int>(status)) +
                           (detail.empty() ? "" : ": " + detail)),
        status_(status),
        detail_(detail) {}
  Status status() const noexcept { return status_; }
  const std::string& detail() const noexcept { return detail_; }

 private:
  Status status_;
  std::string detail_;
};

// A value found in the cache: the tenant id and the namespace's named fields.
// Borrowed from its Result; string_views stay valid while the Result lives and
// its Cache is open.
class Value {
 public:
  std::string_view tenant() const { return View(tc_value_tenant(&v_, &len_)); }
  std::string_view key() const { return View(tc_value_key(&v_, &len_)); }
  size_t field_count() const noexcept { return tc_value_field_count(&v_); }
  // The field's text; std::nullopt for SQL NULL. Throws std::out_of_range for
  // a name the namespace does not have.
  std::optional<std::string_view> field(const char* name) const {
    const char* text = nullptr;
    size_t len = 0;
    if (tc_value_get(&v_, name, &text, &len) != 0)
      throw std::out_of_range(std::string("tenantcache: no field ") + name);
    if (text == nullptr) return std::nullopt;
    return std::string_view(text, len);
  }
  // The name of field `i` (< field_count()).
  std::string_view field_name(size_t i) const {
    const char* name = nullptr;
    if (tc_value_field(&v_, i, &name, nullptr, nullptr) != 0)
      throw std::out_of_range("tenantcache: field index out of range");
    return name;
  }
  std::optional<std::string_view> field(size_t i) const {
    const char* text = nullptr;
    size_t len = 0;
    if (tc_value_field(&v_, i, nullptr, &text, &len) != 0)
      throw std::out_of_range("tenantcache: field index out of range");
    if (text == nullptr) return std::nullopt;
    return std::string_view(text, len);
  }

 private:
  friend class Result;
  friend class Cache;
  std::string_view View(const char* p) const {
    return p == nullptr ? std::string_view() : std::string_view(p, len_);
  }
  tc_value v_;
  mutable size_t len_ = 0;
};

class [[nodiscard]] Result {
 public:
  Status status() const noexcept { return status_; }
  bool found() const noexcept { return status_ == Status::kFound; }
  bool not_found() const noexcept { return status_ == Status::kNotFound; }
  bool miss() const noexcept { return status_ == Status::kMiss; }
  bool unavailable() const noexcept { return status_ == Status::kUnavailable; }
  // The value; throws Error unless found().
  const Value& value() const {
    if (!found()) throw Error(status_, "tenantcache: result holds no value");
    return value_;
  }
  const Value* operator->() const { return &value(); }
  explicit operator bool() const = delete;  // say found(), not_found() or miss()

 private:
  friend class Cache;
  Result() = default;
  Status status_ = Status::kMiss;
  Value value_;
};

// An open cache. Movable, not copyable; closes on destruction.
class Cache {
 public:
  // Opens read-only; throws Error (kIo, kLayout, ...) naming the path.
  static Cache Open(const std::string& path) {
    tc_cache* c = nullptr;
    const int rc = tc_cache_open(path.c_str(), &c);
    if (rc != 0) throw Error(static_cast<Status>(rc), "tenantcache: cannot open " + path);
    return Cache(c);
  }

  Cache(Cache&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  Cache& operator=(Cache&& o) noexcept {
    if (this != &o) {
      tc_cache_close(c_);
      c_ = std::exchange(o.c_, nullptr);
    }
    return *this;
  }
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;
  ~Cache() { tc_cache_close(c_); }

  // The id of namespace `name`; throws Error(kNoNamespace).
  tc_ns Namespace(const char* name) const {
    tc_ns ns = 0;
    const int rc = tc_namespace(c_, name, &ns);
    if (rc != 0) throw Error(static_cast<Status>(rc), std::string("tenantcache: namespace ") + name);
    return ns;
  }

  // Shared memory only; see tc_cache_get.
  Result Get(tc_ns ns, std::string_view key) const {
    Result r;
    r.status_ = static_cast<Status>(
        tc_cache_get(c_, ns, key.data() != nullptr ? key.data() : "", key.size(), &r.value_.v_));
    return r;
  }

  tc_info Info() const {
    tc_info info{};
    tc_cache_info(c_, &info);
    return info;
  }

  tc_cache* get() const noexcept { return c_; }

 private:
  explicit Cache(tc_cache* c) : c_(c) {}
  tc_cache* c_;
};

}  // namespace tenantcache

#endif  // TENANTCACHE_TENANTCACHE_HPP_
