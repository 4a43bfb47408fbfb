// The miss path of the C ABI: requests to the daemon over its control socket
// (protocol.h), with a deadline on every step. Sockets are non-blocking and
// waited on with poll(), so a call never outlives its timeout; a connection
// that timed out (its answer may still come) is closed, never reused.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

#include "entry.h"
#include "keys.h"
#include "protocol.h"
#include "reader.h"
#include "tenantcache/tenantcache.h"

namespace {

namespace layout = tenantcache::layout;
namespace protocol = tenantcache::protocol;
using Clock = std::chrono::steady_clock;

// tc_last_error_detail's text: per thread, so that a caller reads the detail
// of its own last request; replaced by each request the thread makes.
thread_local std::string t_detail;

int RemainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(left);
}

// A connection from the pool (*reused set), or a new one; -1 with a status
// in *status.
int Acquire(const tc_cache* cc, int* status, bool* reused) {
  *reused = false;
  auto* c = const_cast<tc_cache*>(cc);
  {
    std::lock_guard<std::mutex> lock(c->pool_mu);
    if (!c->idle_fds.empty()) {
      const int fd = c->idle_fds.back();
      c->idle_fds.pop_back();
      *reused = true;
      return fd;
    }
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, c->current.load(std::memory_order_acquire)->control_socket,
              sizeof addr.sun_path - 1);
  if (addr.sun_path[0] == '\0') {
    *status = TC_E_UNAVAILABLE;
    return -1;
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *status = TC_E_NOMEM;
    return -1;
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    // ENOENT/ECONNREFUSED: no daemon; EAGAIN: its backlog is full.
    const int err = errno;
    *status = err == EAGAIN ? TC_E_BUSY : TC_E_UNAVAILABLE;
    t_detail = std::string("cannot connect to the daemon's control socket ") + addr.sun_path + ": " +
               std::strerror(err);
    close(fd);
    return -1;
  }
  return fd;
}

void Release(const tc_cache* cc, int fd) {
  auto* c = const_cast<tc_cache*>(cc);
  std::lock_guard<std::mutex> lock(c->pool_mu);
  if (c->idle_fds.size() < 64) {
    c->idle_fds.push_back(fd);
    return;
  }
  close(fd);
}

// Prepends the handle's read counters to a request, at most once a second
// (always when `force`), so the daemon's statistics include hits it never sees.
void AppendReport(const tc_cache* cc, std::string* out, bool force) {
  auto* c = const_cast<tc_cache*>(cc);
  const auto now = Clock::now();
  {
    std::lock_guard<std::mutex> lock(c->pool_mu);
    if (!force && now - c->last_report < std::chrono::seconds(1)) return;
    c->last_report = now;
  }
  tc_stats st;
  tc_cache_stats(cc, &st);
  protocol::Report r;
  r.pid = static_cast<uint32_t>(getpid());
  r.handle = cc->stats_id;
  r.hits = st.hits;
  r.negative_hits = st.negative_hits;
  r.misses = st.misses;
  r.unavailable = st.unavailable;
  protocol::AppendFrame(out, protocol::kReport, 0, 0, protocol::ReportPayload(r));
}

// One attempt at a request on one connection. *stale is set when a reused
// connection turned out to be closed before any answer (the daemon
// restarted): the caller may try once more on a new one.
int Attempt(const tc_cache* cc, uint8_t op, const std::string& payload, Clock::time_point deadline,
            int* answer_status, std::string* answer, bool* stale) {
  *stale = false;
  int status = 0;
  bool reused = false;
  const int fd = Acquire(cc, &status, &reused);
  if (fd < 0) return status;
  uint32_t id;
  {
    auto* c = const_cast<tc_cache*>(cc);
    std::lock_guard<std::mutex> lock(c->pool_mu);
    id = ++c->next_request_id;
  }
  std::string out;
  AppendReport(cc, &out, false);
  protocol::AppendFrame(&out, op, 0, id, payload);
  size_t sent = 0;
  while (sent < out.size()) {
    const ssize_t n = send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      close(fd);
      *stale = reused;
      return TC_E_UNAVAILABLE;
    }
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, RemainingMs(deadline)) == 0) {
      close(fd);
      return TC_E_TIMEOUT;
    }
  }
  std::string in;
  char buf[8192];
  for (;;) {
    protocol::Frame f;
    size_t used = 0;
    const char* err = nullptr;
    const auto parsed = protocol::ParseFrame(in, protocol::kMaxResponse, &f, &used, &err);
    if (parsed == protocol::Parse::kBad) {
      t_detail = "the daemon's answer is malformed";
      close(fd);
      return TC_E_DAEMON;
    }
    if (parsed == protocol::Parse::kFrame) {
      if (f.request_id != id || f.op != op || used != in.size()) {
        t_detail = "the daemon's answer does not match the request";
        close(fd);
        return TC_E_DAEMON;
      }
      *answer_status = f.status;
      answer->assign(f.payload);
      Release(cc, fd);
      return 0;
    }
    // Waited for before each read: the answer cannot have come yet when
    // the request has just been sent, so reading first would only fail.
    // At the deadline, poll only looks: an answer already there is read.
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, RemainingMs(deadline)) == 0) {
      close(fd);
      return TC_E_TIMEOUT;
    }
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      in.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      close(fd);
      *stale = reused && in.empty();
      return TC_E_UNAVAILABLE;
    }
  }
}

// One request and its answer. Returns 0 and fills status/payload, or a TC_E_*.
int Request(const tc_cache* cc, uint8_t op, const std::string& payload, int timeout_ms, int* answer_status,
            std::string* answer) {
  t_detail.clear();
  if (timeout_ms < 0) return TC_E_INVALID_ARG;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  bool stale = false;
  int rc = Attempt(cc, op, payload, deadline, answer_status, answer, &stale);
  if (rc != 0 && stale) rc = Attempt(cc, op, payload, deadline, answer_status, answer, &stale);
  // An error's payload is the daemon's message (protocol.h); a value or the
  // statistics are not.
  if (rc == 0 && *answer_status < 0) t_detail = *answer;
  return rc;
}

int Command(const tc_cache* cache, uint8_t op, const std::string& payload, int timeout_ms) {
  int status = 0;
  std::string answer;
  const int rc = Request(cache, op, payload, timeout_ms, &status, &answer);
  return rc != 0 ? rc : status;
}

}  // namespace

namespace tenantcache {

void ReportOnClose(tc_cache* c) {
  // Best effort, never blocking: only on an idle connection (a child has
  // closed the parent's at fork, reader rule 7).
  std::lock_guard<std::mutex> lock(c->pool_mu);
  if (c->idle_fds.empty()) return;
  std::string out;
  tc_stats st;
  tc_cache_stats(c, &st);
  protocol::Report r{
      static_cast<uint32_t>(getpid()), c->stats_id, st.hits, st.negative_hits, st.misses, st.unavailable};
  protocol::AppendFrame(&out, protocol::kReport, 0, 0, protocol::ReportPayload(r));
  (void)send(c->idle_fds.back(), out.data(), out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

int AskDaemon(const tc_cache* cache, tc_ns ns, const char* key, size_t key_len, int timeout_ms,
              tc_value* out) {
  int status = 0;
  std::string answer;
  const char* name = HandleNsName(cache, ns);
  const int r = Request(cache, protocol::kLookup, protocol::KeyPayload(name, std::string_view(key, key_len)),
                        timeout_ms, &status, &answer);
  if (r != 0) return r;
  if (status != TC_FOUND) {
    out->priv_status = static_cast<uint32_t>(status == TC_NOT_FOUND ? TC_NOT_FOUND : TC_MISS);
    return status;
  }
  protocol::ValuePayload v;
  EntryView e;
  // The file the handle reads now (it may have followed a replacement
  // meanwhile): the daemon that answered is that file's.
  const layout::NamespaceDesc* desc = CurrentDesc(cache, ns);
  if (desc == nullptr) return TC_E_NO_NAMESPACE;
  const auto& d = *desc;
  if (!protocol::ParseValue(answer, &v) || v.data.size() > sizeof out->priv_data ||
      v.field_count != d.field_count ||
      !DecodeEntry(reinterpret_cast<const unsigned char*>(v.data.data()), v.data.size(), v.key_len,
                   v.tenant_len, v.field_count, &e)) {
    // A daemon of another build, or a namespace changed under a live file.
    t_detail = "the daemon's value does not match this cache file's namespace " + std::string(d.name);
    return TC_E_DAEMON;
  }
  std::memcpy(out->priv_data, v.data.data(), v.data.size());
  PublishValue(out, &d, ValueMeta{v.key_len, v.tenant_len, v.field_count}, v.data.size());
  return TC_FOUND;
}

}  // namespace tenantcache

extern "C" {

const char* tc_last_error_detail(void) { return t_detail.c_str(); }

int tc_cache_lookup(const tc_cache* cache, tc_ns ns, const char* key, size_t key_len, int timeout_ms,
                    tc_value* out) {
  const int rc = tc_cache_get(cache, ns, key, key_len, out);
  if (rc != TC_MISS) return rc;
  return tenantcache::AskDaemon(cache, ns, key, key_len, timeout_ms, out);
}

int tc_cache_invalidate(const tc_cache* cache, tc_ns ns, const char* key, size_t key_len, int timeout_ms) {
  if (cache == nullptr || key == nullptr) return TC_E_INVALID_ARG;
  char norm[TC_MAX_KEY_LEN + 1];
  size_t len = 0;
  const int rc = tc_cache_normalize_key(cache, ns, key, key_len, norm, &len, nullptr);
  if (rc != 0) return rc;
  return Command(cache, protocol::kInvalidate,
                 protocol::KeyPayload(tenantcache::HandleNsName(cache, ns), std::string_view(norm, len)),
                 timeout_ms);
}

int tc_cache_invalidate_tenant(const tc_cache* cache, const char* tenant, size_t tenant_len, int timeout_ms) {
  if (cache == nullptr || tenant == nullptr) return TC_E_INVALID_ARG;
  char norm[tenantcache::kMaxTenantLen];
  const tenantcache::KeyResult r = tenantcache::NormalizeTenant(tenant, tenant_len, norm);
  if (!r.ok()) return TC_E_INVALID_KEY;
  return Command(cache, protocol::kInvalidateTenant, protocol::TenantPayload(std::string_view(norm, r.len)),
                 timeout_ms);
}

int tc_cache_daemon_stats(const tc_cache* cache, char* buf, size_t cap, int timeout_ms) {
  if (cache == nullptr || buf == nullptr || cap == 0) return TC_E_INVALID_ARG;
  int status = 0;
  std::string answer;
  const int rc = Request(cache, protocol::kStats, "", timeout_ms, &status, &answer);
  if (rc != 0) return rc;
  if (status != 0) return status;
  if (answer.size() + 1 > cap || answer.size() > 1u << 30) return TC_E_INVALID_ARG;
  std::memcpy(buf, answer.data(), answer.size());
  buf[answer.size()] = '\0';
  return static_cast<int>(answer.size());
}

int tc_cache_flush(const tc_cache* cache, int timeout_ms) {
  if (cache == nullptr) return TC_E_INVALID_ARG;
  return Command(cache, protocol::kFlush, "", timeout_ms);
}

}  // extern "C"
