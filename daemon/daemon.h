// The daemon's core: owns the cache writer, one Listener and one LoaderPool
// per source, and the statistics; the listeners, loaders and control socket
// report to it. Everything runs on the one libuv loop thread.
#ifndef TENANTCACHE_DAEMON_DAEMON_H_
#define TENANTCACHE_DAEMON_DAEMON_H_

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "cache_writer.h"
#include "config.h"
#include "log_limit.h"
#include "protocol.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache {

class Listener;
class LoaderPool;
class WalMarker;

struct Stats {
  uint64_t lookups = 0;      // miss requests from clients
  uint64_t fills = 0;        // queries run
  uint64_t fill_errors = 0;  // queries that failed
  uint64_t fill_timeouts = 0;
  uint64_t coalesced = 0;         // lookups that joined a fill already under way
  uint64_t answered_cached = 0;   // lookups answered from the cache (filled since the client's miss)
  uint64_t busy = 0;              // lookups refused: queue full
  uint64_t leases_revoked = 0;    // fills invalidated while in flight (not cached)
  uint64_t uncached_answers = 0;  // answered without caching (revoked repeatedly, too large)
  uint64_t notifications = 0;
  uint64_t malformed_notifications = 0;
  // Key messages naming a namespace this daemon does not serve (a typo in a
  // watch_table() keys spec, or a namespace missing from the config).
  uint64_t unknown_namespace_messages = 0;
  uint64_t invalidations_key = 0, invalidations_tenant = 0, flushes = 0;
  uint64_t reconnects = 0;
  uint64_t heartbeats_sent = 0, heartbeats_received = 0;
  // Shared heartbeats whose signature did not verify (sent by a role that
  // cannot read the heartbeat key): ignored.
  uint64_t heartbeats_rejected = 0;
  // Relaying through Redis: messages a relay published and sessions it
  // began; messages a subscriber received in order, those that did not
  // verify, and numbers skipped (a session left).
  uint64_t relayed_published = 0, relayed_notifications = 0, relay_sessions = 0;
  uint64_t relayed_received = 0, relayed_rejected = 0, relay_gaps = 0;
  // Fills from a hot standby (daemon/replica.h): those that waited for its
  // replay, and those answered timeout because it stayed behind.
  uint64_t replica_waits = 0, replica_timeouts = 0;
  uint64_t control_connections = 0, control_errors = 0;
  // Control-socket limits (daemon/control.h): peers refused for their
  // credentials, connections refused at max_clients or failed to accept,
  // connections closed holding an incomplete request or idle, commands
  // answered busy by the rate limits, warnings not logged (throttled).
  uint64_t control_refused = 0, control_full = 0, control_accept_errors = 0;
  uint64_t control_timeouts = 0, control_idle_closed = 0, control_rate_limited = 0;
  uint64_t control_log_suppressed = 0;
  uint64_t control_clients = 0, control_max_clients = 0;  // gauges
  double notification_queue_usage = 0;
  // Invalidation log pruning (daemon/log_pruner.h): calls that succeeded,
  // rows they deleted, calls that failed, and when the last one succeeded
  // (the clock's epoch: never).
  uint64_t log_prune_runs = 0, log_pruned_rows = 0, log_prune_errors = 0;
  std::chrono::steady_clock::time_point last_log_prune{};
  std::chrono::steady_clock::duration unsynced_time{};
};

// How a lookup ended, for the control socket.
struct LookupAnswer {
  int status = 0;       // TC_FOUND, TC_NOT_FOUND, TC_E_*
  std::string value;    // protocol::EncodeValue payload for TC_FOUND
  std::string message;  // for errors
};
using LookupCallback = std::function<void(const LookupAnswer&)>;

class Daemon {
 public:
  Daemon(uv_loop_t* loop, Config config, std::unique_ptr<CacheWriter> writer);
  ~Daemon();

  // Connects every source and starts the timers. `on_ready` runs once, the
  // first time every listener has LISTEN active and is synced.
  void Start(std::function<void()> on_ready);
  // Marks the cache unavailable and closes every connection and timer.
  void Stop();
  // Applies the reloadable settings of `config` (the caller checked that
  // nothing else changed).
  void Reload(const Config& config);

  // Invalidations, from the listeners and the control socket. Keys arrive as
  // sent and are normalised per namespace; unknown namespaces and keys that
  // no lookup could produce have nothing to invalidate. InvalidateKey returns
  // false when this daemon has no namespace `ns` (the caller reports it).
  bool InvalidateKey(std::string_view ns, std::string_view key);
  void InvalidateTenant(std::string_view tenant);
  void Flush(const std::string& why);

  // A miss from a client: answered from the cache if it was filled meanwhile,
  // else through the namespace's loaders.
  void Lookup(std::string_view ns, std::string_view key, LookupCallback cb);

  // A source's listener changed state; the cache is synced only while every
  // source is.
  void SourceSynced(size_t source, bool synced);

  // A client process's cumulative read counters (hits never reach us).
  // `peer_pid` is the sending process as the kernel names it to us
  // (SO_PEERCRED), 0 when it cannot (a pid namespace we do not see).
  void ClientReport(uint32_t peer_pid, const protocol::Report& report);
  // Folds the reports of processes that have exited into the totals, so that
  // reporting_clients counts the processes alive now. A process is gone when
  // kill(pid, 0) says it does not exist and none of the control connections
  // (`connected`: their peers' pids) is its own: only then has every report
  // it sent been read, so none can arrive after the fold and be counted twice.
  // Reports whose sender the kernel could not name are kept (bounded).
  void ForgetExitedClients(const std::set<uint32_t>& connected);

  // The primary's WAL position for fills of source `source` from a standby.
  WalMarker& wal_marker(size_t source);
  const WalMarker& wal_marker(size_t source) const;

  CacheWriter& writer() { return *writer_; }
  const Config& config() const { return config_; }
  Stats& stats() { return stats_; }
  bool synced() const;
  // The oldest of the sources' Listener::proven_ns().
  uint64_t ProvenNs() const;
  std::string StatsJson() const;
  std::string StatusLine() const;  // for systemd's STATUS=
  uv_loop_t* loop() const { return loop_; }

 private:
  void Beat();  // heartbeat into the cache file, sweep, unsynced time
  // Client processes (not handles) among reports_: reporting_clients.
  size_t ReportingClients() const;
  void StartPrometheus();
  void WritePrometheus();

  uv_loop_t* loop_;
  Config config_;
  std::unique_ptr<CacheWriter> writer_;
  // The daemon's own read-only handle on its file: a lookup for a key that
  // was filled (or negatively cached) after the client's miss is answered
  // from it instead of querying again.
  tc_cache* reader_ = nullptr;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::unique_ptr<LoaderPool>> loaders_;
  std::vector<bool> source_synced_;
  std::function<void()> on_ready_;
  bool ready_sent_ = false;
  uv_timer_t* beat_timer_ = nullptr;
  uv_timer_t* prometheus_timer_ = nullptr;
  std::chrono::steady_clock::time_point unsynced_since_;
  bool was_synced_ = false;
  std::chrono::steady_clock::time_point last_prometheus_error_{};
  LogLimiter flush_log_{std::chrono::seconds(1), "flushes"};
  Stats stats_;
  // Latest report per (peer pid, reported pid, handle); reports of exited
  // processes and of handles pushed out of the bounded map are folded into
  // retired_.
  std::map<std::tuple<uint32_t, uint32_t, uint64_t>, protocol::Report> reports_;
  protocol::Report retired_;
};

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_DAEMON_H_
