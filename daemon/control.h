// The control socket: a unix stream socket speaking client/src/protocol.h.
//
// Every peer can be hostile, so everything a peer can repeat at will is
// bounded:
//  - Credentials: peers are checked on SO_PEERCRED and their supplementary
//    groups from SO_PEERGROUPS (Linux >= 4.13), against group ids resolved
//    when the configuration is loaded or reloaded: no name-service lookup
//    per connection. Without SO_PEERGROUPS, the groups' member lists (also
//    resolved at load) stand in for the peer's supplementary groups.
//  - Connections: at most max_clients (clamped to what RLIMIT_NOFILE leaves,
//    see SetClientBudget); more are refused, except kOperatorReserve more
//    for root and the daemon's own user, so that an operator can still ask
//    for stats or flush while workers (or an attacker among them) hold every
//    slot. A connection holding an
//    incomplete request longer than partial_frame_timeout, or silent longer
//    than idle_timeout, is closed (clients reconnect transparently).
//  - Requests: a malformed or oversized one closes that connection only. A
//    client whose unread answers pile up past kMaxQueuedBytes is closed.
//    flush, invalidate-tenant and invalidate make every worker of the host
//    miss (and query), so they pass global token buckets; the excess is
//    answered TC_E_BUSY and not applied. Lookups are bounded by the sources'
//    queue_bound.
//  - Logging: each kind of refusal is logged at most once per warn_interval;
//    the others are counted (stats: control_log_suppressed) and summed up in
//    the next warning.
// Reads and writes are asynchronous: a slow client cannot stall the loop.
#ifndef TENANTCACHE_DAEMON_CONTROL_H_
#define TENANTCACHE_DAEMON_CONTROL_H_

#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "log_limit.h"

namespace tenantcache {

class Daemon;

// A token bucket: `burst` operations at once, refilled at `per_second`.
struct RateLimit {
  double burst;
  double per_second;
};

struct ControlLimits {
  // A request is at most protocol::kMaxRequest bytes and clients write it in
  // one call: one still incomplete after this long is a broken or hostile
  // client holding a descriptor.
  std::chrono::milliseconds partial_frame_timeout{5000};
  // Clients keep connections for reuse and reconnect when one was closed, so
  // a connection silent this long is reclaimed at little cost.
  std::chrono::milliseconds idle_timeout{10 * 60 * 1000};
  // Commands a peer can repeat that make every worker of the host miss.
  // Operators and applications invalidate now and then; only a loop or an
  // attack exceeds these.
  RateLimit flush{5, 1};
  RateLimit invalidate_tenant{200, 100};
  RateLimit invalidate_key{2000, 1000};
  std::chrono::milliseconds warn_interval{10000};
};

class ControlServer {
 public:
  static constexpr size_t kMaxQueuedBytes = 4 << 20;
  // Connections beyond max_clients for root and the daemon's user (taken
  // from the daemon's spare descriptors).
  static constexpr size_t kOperatorReserve = 4;

  explicit ControlServer(Daemon* daemon, ControlLimits limits = {});
  ~ControlServer();

  // Binds config().control_socket (replacing a stale socket file) with its
  // mode and resolves allowed_groups. Throws std::runtime_error.
  void Start();
  void Stop();
  // Applies the reloaded allowed_groups and max_clients.
  void Reload();
  // The number of descriptors RLIMIT_NOFILE leaves for clients; max_clients
  // beyond it is clamped, with a warning.
  void SetClientBudget(size_t descriptors);
  // max_clients as applied.
  size_t max_clients() const;
  size_t clients() const { return clients_.size(); }

  struct Client;

 private:
  static void OnConnection(uv_stream_t* server, int status);
  // Whether the peer may connect; *who describes it, *pid is its pid (0 if
  // the kernel cannot name it), *operator_peer is set for root and the
  // daemon's own user.
  bool Allowed(int fd, std::string* who, uint32_t* pid, bool* operator_peer);
  void ResolveGroups();
  // A warning a peer can trigger at will: logged at most once per
  // warn_interval, the rest counted (control_log_suppressed).
  void Warn(LogLimiter* limiter, const std::string& message);
  void Sweep();
  bool Admit(uint8_t op, const std::string& who);

  struct Bucket {
    RateLimit limit;
    double tokens;
    uint64_t last_ms = 0;
  };

  Daemon* daemon_;
  ControlLimits limits_;
  uv_pipe_t* server_ = nullptr;
  uv_timer_t* sweep_timer_ = nullptr;
  std::set<std::shared_ptr<Client>> clients_;
  std::vector<gid_t> allowed_gids_;
  std::vector<uid_t> member_uids_;  // allowed groups' listed members, without SO_PEERGROUPS
  bool peergroups_missing_ = false;
  size_t client_budget_ = std::numeric_limits<size_t>::max();
  size_t warned_max_clients_ = 0;  // the clamped max_clients last warned about
  Bucket flush_bucket_, tenant_bucket_, key_bucket_;
  LogLimiter refused_{limits_.warn_interval, "peers refused (not in allowed_groups)"};
  LogLimiter full_{limits_.warn_interval, "connections refused (max_clients reached)"};
  LogLimiter accept_failed_{limits_.warn_interval, "connections that could not be accepted"};
  LogLimiter timed_out_{limits_.warn_interval, "connections closed (incomplete request)"};
  LogLimiter rate_limited_{limits_.warn_interval, "commands answered busy (rate limit)"};
};

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_CONTROL_H_
