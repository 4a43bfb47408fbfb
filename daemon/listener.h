// A source's listener: the dedicated LISTEN connection, never inside a
// transaction, and its heartbeat connection. Both reach the primary
// (listener_conninfo, else conninfo): NOTIFY and every write the daemon
// makes fail on a hot standby, where loaders may be (daemon/replica.h).
//
// Synchronisation protocol (see DESIGN "Invalidation"):
//  * On connection loss the source is marked unsynced at once (the cache
//    fails closed), and the listener reconnects with exponential backoff and
//    jitter.
//  * On (re)connect: LISTEN first; then, if it holds a sync point (a
//    snapshot) and the invalidation log is on and still reaches back to it,
//    it replays every logged message of a transaction not visible in that
//    snapshot; otherwise it flushes (bumps the epoch). Only then is the
//    source synced. The replay query's own snapshot becomes the sync point.
//  * The sync point advances with the heartbeat: every heartbeat_interval the
//    heartbeat connection runs, in one statement, txid_current_snapshot() and
//    pg_notify('1 h <token>'), the token 128 random bits that no other role
//    can predict (any role may LISTEN and NOTIFY). NOTIFY delivers in commit order, so when the
//    listener receives that token, it has received every notification of
//    every transaction visible in that snapshot: the snapshot is a safe
//    place to replay from.
//  * Namespaces: from schema version 3 on, the listener records the names
//    of its source's namespaces in tenantcache.daemons (through the
//    heartbeat connection) once synced, on reload and every minute, so the database can report watched keys
//    that no daemon serves. A key message for a namespace the daemon does not have is counted
//    (unknown_namespace_messages) and logged, rate-limited.
//  * A listener connection that reaches PostgreSQL through a pooler
//    (PgConn::ServerPid) is refused before LISTEN: notifications reach only
//    the server session that listens, which a pooler shares with others.
//  * Log retention: from schema version 4 on, the heartbeat connection also
//    prunes the invalidation log by the rule of daemon/log_pruner.h (rows
//    older than the longest log_retention among the database's daemons), in
//    place of a heartbeat tick's namespace record, never of a heartbeat.
//  * Remote marker: once synced, the LISTEN connection also carries the
//    probes of the primary's WAL position that fills from a standby wait
//    for (WalMarker, daemon/replica.h); it is idle between them.
//  * Shared heartbeats (daemon/shared_heartbeat.h): from schema version 6
//    on, a heartbeat signed with the database's heartbeat key proves order to
//    every daemon that receives it, so only the leaders (or, lacking one, a
//    daemon that heard none for a while) send one; every daemon probes (its
//    snapshot and clock) each tick, and a heartbeat whose snapshot covers a
//    probe proves the probe's time and becomes the sync point.
//  * Liveness: a synced listener that has not received a heartbeat (its own,
//    or a verified shared one) for stale_after - heartbeat_interval is deaf
//    (a proxy, a stopped backend): it is treated as disconnected.
#ifndef TENANTCACHE_DAEMON_LISTENER_H_
#define TENANTCACHE_DAEMON_LISTENER_H_

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <utility>

#include "config.h"
#include "log_limit.h"
#include "log_pruner.h"
#include "pg_conn.h"
#include "redis_link.h"
#include "relay.h"
#include "replica.h"
#include "shared_heartbeat.h"

namespace tenantcache {

class Daemon;

// Why a listener connection of source `s` whose server backend `server_pid`
// is not the `announced_pid` libpq was given (a pooler answered the startup)
// is refused: names the setting to change. Shared by the listener and
// tenantcached --check-config --connect.
std::string ListenerBehindPooler(const SourceConfig& s, int server_pid, int announced_pid);

class Listener {
 public:
  Listener(Daemon* daemon, size_t source_index);
  ~Listener();

  void Start();
  void Stop();
  void Reload();  // applies a new heartbeat_interval
  bool synced() const { return synced_; }
  // While synced: a CLOCK_MONOTONIC time before which every committed change
  // of this source has been applied to the cache. It is when the catch-up
  // began, then the send time of each heartbeat whose token came back (NOTIFY
  // is delivered in commit order, so everything committed before that
  // heartbeat's transaction arrived before its token). The cache heartbeat
  // readers check is this proof's time, not the daemon's clock.
  uint64_t proven_ns() const { return proven_ns_; }
  int backend_pid() const { return conn_.backend_pid(); }
  // The listener's connection goes through a pooler and is refused.
  bool behind_pooler() const { return behind_pooler_; }
  WalMarker& marker() { return marker_; }
  // Heartbeats shared with the other daemons on the database (schema
  // version 6 and stale_after at least 4 heartbeat intervals), else each
  // daemon's own; and the leader slots this one holds (0 or 1).
  bool shares_heartbeats() const { return shared_.enabled(); }
  int leader_slots() const { return shared_.enabled() && shared_.slot() > 0 ? 1 : 0; }
  // Relaying through Redis (daemon/relay.h).
  bool relays() const { return source().redis_role == SourceConfig::RedisRole::kRelay; }
  bool subscribes() const { return source().redis_role == SourceConfig::RedisRole::kSubscribe; }
  bool redis_ready() const { return redis_.ready(); }
  size_t joined_sessions() const { return sessions_.joined_count(); }
  // What the last check of the watched tables found (RecordNamespaces): the
  // partitions without our TRUNCATE trigger, the BEFORE UPDATE triggers our
  // column triggers do not see.
  uint64_t untruncated_partitions() const { return untruncated_partitions_; }
  uint64_t unseen_before_triggers() const { return unseen_before_triggers_; }

 private:
  const SourceConfig& source() const;
  // The primary: listener_conninfo, else conninfo.
  const std::string& PrimaryConninfo() const;
  void Connect();
  void Lost(const std::string& why);
  // LISTEN needs a session of its own, which a transaction pooler does not
  // give: refused (logged at error, naming listener_conninfo), then Lost.
  void RefuseBehindPooler(int server_pid);
  void CatchUp();
  // The role lacks privileges (`why` says so, `error` is PostgreSQL's
  // message): names every missing one, then Lost.
  void RefusedSchema(const std::string& why, const std::string& error);
  void Replay(const std::string& snapshot);
  void MarkSynced(const std::string& snapshot);
  void OnNotify(std::string_view payload);
  void Tick();  // heartbeat, liveness, namespaces recorded
  // Tick's heartbeat: a token of this daemon's own, or the shared one.
  void OwnHeartbeat();
  void SharedHeartbeat();
  // After a tick's heartbeat: record the namespaces or prune the log.
  void AfterHeartbeat();
  // Reads the heartbeat key (schema version 6), then `next`.
  void ReadHeartbeatKey(int schema_version, std::function<void()> next);
  void OnSharedHeartbeat(std::string_view value);
  // A notification, from LISTEN or relayed (`proves`: its session is joined,
  // so a heartbeat in it proves).
  void Apply(std::string_view payload, bool proves);
  // Relay: publishes what LISTEN delivered (a read's worth at a time, see
  // RelayBatch); (re)connects Redis.
  void Relay(std::string_view payload);
  void PublishRelayed(const std::vector<std::string>& payloads);
  void ConnectRedis();
  // Subscriber: after the PostgreSQL connection, the key, then Redis, then a
  // first relayed message, then the catch-up.
  void Subscribe();
  void OnRelayed(std::string_view text);
  // Replays the log while synced to join the sessions seen so far.
  void Rejoin();
  // Replays the log since `since` on the listener's connection (or flushes
  // when the log no longer reaches back), then `done` with its snapshot.
  void ReplayThen(const std::string& since, std::function<void(const std::string& snapshot)> done);
  // Applies a replay's rows; false when the log no longer reaches back.
  bool ApplyReplay(const PGresult* r, std::string* snapshot);
  // Counts and logs a key message for a namespace this daemon does not have.
  void UnknownNamespace(std::string_view ns);
  // tenantcache.daemon_seen(): the namespaces this source serves; and the
  // checks of the watched tables.
  void RecordNamespaces();
  // Logs the partitions that lack our TRUNCATE trigger and the BEFORE
  // UPDATE triggers our column triggers do not see ("" none), each when its
  // list changes and hourly while it stands.
  void WarnAboutWatchedTables(const std::string& partitions, const std::string& before_triggers);
  // A problem of the watched tables, as the list of what it names.
  struct CatalogWarning {
    std::string last;  // what was last seen ("" none)
    std::chrono::steady_clock::time_point due{};
    // Whether to log `seen` now: it is not empty, and it changed or an hour passed.
    bool Due(const std::string& seen);
  };
  // This daemon's id in tenantcache.daemons: host name and cache path.
  std::string DaemonId() const;
  std::string Served(const char* separator) const;

  // How often the namespaces are recorded again while synced (the database
  // calls a daemon recent for 5 minutes).
  static constexpr std::chrono::seconds kRecordEvery{60};

  Daemon* daemon_;
  size_t index_;
  PgConn conn_;
  PgConn heartbeat_;
  WalMarker marker_;  // after conn_: it may hold a pointer to it
  uv_timer_t* reconnect_timer_ = nullptr;
  uv_timer_t* tick_timer_ = nullptr;
  bool stopped_ = false;
  bool synced_ = false;
  bool behind_pooler_ = false;
  uint64_t proven_ns_ = 0, catchup_started_ns_ = 0;
  int attempts_ = 0;
  std::optional<std::string> sync_point_;  // txid_snapshot text
  struct Heartbeat {
    std::string token;
    std::optional<std::string> snapshot;  // once the query's result is in
    bool received;                        // once the listener got the token
    uint64_t sent_ns;                     // CLOCK_MONOTONIC when it was sent
  };
  std::deque<Heartbeat> heartbeats_;
  std::chrono::steady_clock::time_point last_heartbeat_;
  LogLimiter malformed_log_{std::chrono::seconds(10), "malformed notifications"};
  LogLimiter unknown_ns_log_{std::chrono::seconds(10), "notifications for unknown namespaces"};
  LogLimiter record_log_{std::chrono::minutes(10), "failures to record the namespaces"};
  bool records_namespaces_ = false;  // schema version 3 or later
  bool mode_logged_ = false;         // the heartbeat mode was logged once
  LogPruner pruner_;
  SharedHeartbeats shared_;
  RedisLink redis_;
  uv_timer_t* redis_timer_ = nullptr;
  int redis_attempts_ = 0;
  std::string relay_session_;  // "" until Redis is ready
  uint64_t relay_seq_ = 0;
  RelayBatch relay_batch_;
  RelaySessions sessions_;
  uint64_t join_mark_ = 0;  // sessions seen when the catch-up began
  bool awaiting_first_ = false, rejoin_wanted_ = false, rejoining_ = false;
  LogLimiter redis_log_{std::chrono::seconds(10), "Redis connection failures"};
  LogLimiter relayed_log_{std::chrono::seconds(10), "relayed messages that do not verify"};
  LogLimiter rejected_log_{std::chrono::seconds(10), "heartbeats that do not verify"};
  std::chrono::steady_clock::time_point record_due_{};
  CatalogWarning untruncated_, unseen_before_;
  uint64_t untruncated_partitions_ = 0, unseen_before_triggers_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_LISTENER_H_
