// A thin C++ layer over tenantcache.h: an RAII handle and results that
// cannot be misread (a value is reachable only from a result that found one).
// The C header's notes on threads, fork and fail-closed behaviour apply as is.
// Requires C++17 (std::string_view, std::optional): compile with -std=c++17
// or later.
//
// Reads report their outcome as a Result's status and never throw; opening,
// naming a namespace, commands and statistics throw Error.
//
//   auto cache = tenantcache::Cache::Open();  // TC_DEFAULT_CACHE_PATH
//   const auto user = cache.Namespace("user");
//   auto r = cache.Lookup(user, user_id, 50);
//   if (r.found()) {
//     std::string_view role = r.value().field("role").value_or("");
//   } else if (r.needs_database()) {
//     // query PostgreSQL yourself
//   } else {
//     // no such user (not_found(), or an invalid key)
//   }
#ifndef TENANTCACHE_TENANTCACHE_HPP_
#define TENANTCACHE_TENANTCACHE_HPP_

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "tenantcache.hpp requires C++17 or later (-std=c++17); C code includes tenantcache.h"
#endif

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
  bool invalid_key() const noexcept { return status_ == Status::kInvalidKey; }
  // True when the cache could not answer and the caller must query the
  // database itself: a miss (after Get; Lookup asks the daemon first), an
  // unavailable cache, a busy daemon, a timeout or a failed daemon query.
  // found(), not_found() and invalid_key() are answers.
  bool needs_database() const noexcept {
    return status_ == Status::kMiss || status_ == Status::kUnavailable || status_ == Status::kBusy ||
           status_ == Status::kTimeout || status_ == Status::kDaemon;
  }
  // The value; throws Error unless found().
  const Value& value() const {
    if (!found()) throw Error(status_, "tenantcache: result holds no value");
    return value_;
  }
  const Value* operator->() const { return &value(); }
  // What the daemon said about a failed Lookup (tc_last_error_detail), e.g.
  // the database's error for kDaemon; "" otherwise.
  const std::string& detail() const noexcept { return detail_; }
  explicit operator bool() const = delete;  // say found(), needs_database(), not_found() or miss()

 private:
  friend class Cache;
  Result() = default;
  Status status_ = Status::kMiss;
  Value value_;
  std::string detail_;
};

// An open cache. Movable, not copyable; closes on destruction.
class Cache {
 public:
  // Opens read-only; throws Error (kIo, kLayout, ...) naming the path.
  static Cache Open(const std::string& path = TC_DEFAULT_CACHE_PATH) {
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

  // Get, and on a miss asks the daemon, waiting at most timeout_ms; see
  // tc_cache_lookup. Never throws: TC_E_TIMEOUT, TC_E_BUSY, ... are the
  // Result's status (needs_database()).
  Result Lookup(tc_ns ns, std::string_view key, int timeout_ms) const {
    Result r;
    r.status_ = static_cast<Status>(tc_cache_lookup(c_, ns, key.data() != nullptr ? key.data() : "",
                                                    key.size(), timeout_ms, &r.value_.v_));
    if (static_cast<int>(r.status_) < 0) r.detail_ = tc_last_error_detail();
    return r;
  }

  // Commands to the daemon (tc_cache_invalidate, tc_cache_invalidate_tenant,
  // tc_cache_flush): return once applied; throw Error on any failure
  // (kInvalidKey, kBusy: rate-limited, kTimeout, kUnavailable, ...).
  void Invalidate(tc_ns ns, std::string_view key, int timeout_ms = 1000) const {
    Check(tc_cache_invalidate(c_, ns, key.data() != nullptr ? key.data() : "", key.size(), timeout_ms),
          "tenantcache: invalidate");
  }
  void InvalidateTenant(std::string_view tenant, int timeout_ms = 1000) const {
    Check(tc_cache_invalidate_tenant(c_, tenant.data() != nullptr ? tenant.data() : "", tenant.size(),
                                     timeout_ms),
          "tenantcache: invalidate tenant");
  }
  void Flush(int timeout_ms = 1000) const { Check(tc_cache_flush(c_, timeout_ms), "tenantcache: flush"); }

  // This process's reads through this handle; see tc_cache_stats.
  tc_stats Stats() const {
    tc_stats st{};
    const int rc = tc_cache_stats(c_, &st);  // local: no daemon detail applies
    if (rc != 0) throw Error(static_cast<Status>(rc), "tenantcache: stats");
    return st;
  }

  // The daemon's statistics as JSON; see tc_cache_daemon_stats. Throws Error.
  std::string DaemonStats(int timeout_ms = 1000) const {
    std::string buf(64 * 1024, '\0');
    const int n = tc_cache_daemon_stats(c_, buf.data(), buf.size(), timeout_ms);
    Check(n < 0 ? n : 0, "tenantcache: daemon stats");
    buf.resize(static_cast<size_t>(n));
    return buf;
  }

  tc_info Info() const {
    tc_info info{};
    tc_cache_info(c_, &info);
    return info;
  }

  tc_cache* get() const noexcept { return c_; }

 private:
  explicit Cache(tc_cache* c) : c_(c) {}
  static void Check(int rc, const char* what) {
    if (rc != 0) throw Error(static_cast<Status>(rc), what, tc_last_error_detail());
  }
  tc_cache* c_;
};

}  // namespace tenantcache

#endif  // TENANTCACHE_TENANTCACHE_HPP_
