#include "listener.h"

#include <spdlog/spdlog.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "daemon.h"
#include "log_limit.h"
#include "notification.h"
#include "reader.h"
#include "uv_handle.h"

namespace tenantcache {
namespace {

using Clock = std::chrono::steady_clock;

std::string Value(const std::vector<PgResult>& results, int row, int col) {
  if (results.empty()) return {};
  const PGresult* r = results.back().get();
  if (PQresultStatus(r) != PGRES_TUPLES_OK || row >= PQntuples(r) || col >= PQnfields(r) ||
      PQgetisnull(r, row, col))
    return {};
  return PQgetvalue(r, row, col);
}

// The first error among the results, or "".
std::string ResultError(const std::vector<PgResult>& results, const std::string& error) {
  if (!error.empty()) return error;
  for (const auto& r : results) {
    const auto st = PQresultStatus(r.get());
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
      std::string msg = PQresultErrorMessage(r.get());
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      return msg.empty() ? "query failed" : msg;
    }
  }
  return "";
}

// The SQLSTATE of the first failed result, or "" (no result failed, or the
// connection did).
std::string ResultSqlState(const std::vector<PgResult>& results) {
  for (const auto& r : results) {
    const auto st = PQresultStatus(r.get());
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) continue;
    const char* code = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    return code != nullptr ? code : "";
  }
  return "";
}

constexpr std::string_view kInsufficientPrivilege = "42501";

// Why a query on the tenantcache schema failed, said so that the reader
// knows what to do: a missing privilege names the one statement that grants
// everything the daemon needs; a missing object, the installation.
std::string SchemaError(const std::vector<PgResult>& results, const std::string& error,
                        const std::string& role) {
  const std::string e = ResultError(results, error);
  const std::string state = ResultSqlState(results);
  if (state == kInsufficientPrivilege)
    return "the daemon's database role \"" + role + "\" may not read the tenantcache schema (" + e +
           "); as the role that ran sql/install.sql, run: SELECT tenantcache.grant_daemon('" + role +
           "'); (schema version 3: run sql/install.sql again first if it is older)";
  // undefined_table, undefined_function, invalid_schema_name: not installed.
  if (state == "42P01" || state == "42883" || state == "3F000")
    return "cannot read the tenantcache schema (is sql/install.sql installed?): " + e;
  return "cannot read the tenantcache schema: " + e;
}

// The log since a sync point ($1). One statement, one snapshot: the rows it
// returns and the snapshot it reports are consistent. Row 's' carries the
// snapshot and whether the log was pruned past the sync point.
const char* const kReplay =
    "SELECT 's', txid_current_snapshot()::text, "
    "  (SELECT (pruned_max_xid >= txid_snapshot_xmin($1::txid_snapshot))::text FROM "
    "tenantcache.log_horizon), "
    "  NULL, 0::bigint "
    "UNION ALL "
    "SELECT kind::text, namespace, key, NULL, seq FROM tenantcache.invalidation_log "
    " WHERE xid >= txid_snapshot_xmin($1::txid_snapshot) AND NOT txid_visible_in_snapshot(xid, "
    "$1::txid_snapshot) "
    "ORDER BY 5";

// A heartbeat token: 128 bits from the kernel's CSPRNG, in hex. Any role can
// LISTEN on the channel and NOTIFY on it, so a token must be one nobody can
// send before the daemon's own transaction does: a forged token that arrives
// ahead of notifications still queued would "prove" that they were applied.
// Replaying a token seen on the channel proves nothing either: the copy is
// committed after the original, and the original is consumed on arrival.
// Empty when the kernel cannot give randomness (the heartbeat is skipped).
std::string NewToken() { return RandomHex(16); }

}  // namespace

Listener::Listener(Daemon* daemon, size_t index)
    : daemon_(daemon),
      index_(index),
      // A Redis subscriber's connection does not LISTEN: named for what it does.
      conn_(daemon->loop(), (daemon->config().sources[index].redis_role == SourceConfig::RedisRole::kSubscribe
                                 ? "subscriber "
                                 : "listener ") +
                                daemon->config().sources[index].name),
      heartbeat_(daemon->loop(), "heartbeat " + daemon->config().sources[index].name),
      marker_(daemon->loop(), daemon->config().sources[index].name),
      pruner_(daemon, index, static_cast<uint64_t>(getpid()) * 104729 + index),
      shared_(daemon->config().sources[index].channel, static_cast<uint64_t>(getpid()) * 6151 + index),
      redis_(daemon->loop(), "redis " + daemon->config().sources[index].name),
      relay_batch_(daemon->loop(),
                   [this](const std::vector<std::string>& payloads) { PublishRelayed(payloads); }),
      rng_(static_cast<uint64_t>(getpid()) * 7919 + index) {
  // Both run only the daemon's own queries.
  conn_.set_session_setup(kPinnedSearchPath);
  heartbeat_.set_session_setup(kPinnedSearchPath);
  redis_.set_auth(source().redis_user, source().redis_password);
  // A relay whose Redis stops answering gives the connection up once its
  // subscribers could no longer be proven current anyway.
  redis_.set_reply_timeout(daemon->config().stale_after);
  if (struct stat st{}; !source().redis_password_file.empty() &&
                        stat(source().redis_password_file.c_str(), &st) == 0 && (st.st_mode & S_IROTH) != 0)
    spdlog::warn(
        "source {}: redis_password_file {} is readable by every local user (mode {:04o}): chmod o-r it",
        source().name, source().redis_password_file, st.st_mode & 07777);
  conn_.set_on_state([this](const std::string& error) {
    if (!error.empty()) {
      Lost(error);
      return;
    }
    if (subscribes()) {
      Subscribe();
      return;
    }
    conn_.ServerPid([this](int server_pid, const std::string& pid_error) {
      if (!pid_error.empty()) {
        Lost(pid_error);
        return;
      }
      if (server_pid != conn_.backend_pid()) {
        RefuseBehindPooler(server_pid);
        return;
      }
      behind_pooler_ = false;
      // Rule: LISTEN first, then catch up, then synced.
      conn_.Query("LISTEN " + source().channel, {},
                  [this](const std::vector<PgResult>& results, const std::string& err) {
                    const std::string e = ResultError(results, err);
                    // read_only_sql_transaction: "cannot execute LISTEN during
                    // recovery". Loaders may use a standby; the listener may not.
                    if (!e.empty() && ResultSqlState(results) == "25006") {
                      Lost("LISTEN failed: " + e +
                           ": the listener's server is a hot standby, which sends no notifications; set "
                           "listener_conninfo of [[source]] " +
                           source().name + " to the primary");
                      return;
                    }
                    if (!e.empty()) {
                      Lost("LISTEN failed: " + e);
                      return;
                    }
                    CatchUp();
                  });
    });
  });
  conn_.set_on_notify([this](std::string_view, std::string_view payload) { OnNotify(payload); });
  heartbeat_.set_on_state([this](const std::string& error) {
    if (!error.empty() && !stopped_)
      spdlog::warn("source {}: heartbeat connection: {}", source().name, error);
  });
}

Listener::~Listener() {
  CloseTimer(reconnect_timer_);
  CloseTimer(tick_timer_);
  CloseTimer(redis_timer_);
}

// The daemon's config is updated in place on reload, so this always shows the
// reloadable values in force.
const SourceConfig& Listener::source() const { return daemon_->config().sources[index_]; }

const std::string& Listener::PrimaryConninfo() const {
  return source().listener_conninfo.empty() ? source().conninfo : source().listener_conninfo;
}

void Listener::Start() {
  stopped_ = false;
  tick_timer_ = NewTimer(daemon_->loop(), this);
  const auto interval = static_cast<uint64_t>(daemon_->config().heartbeat_interval.count());
  uv_timer_start(
      tick_timer_, [](uv_timer_t* t) { static_cast<Listener*>(t->data)->Tick(); }, interval, interval);
  if (relays()) ConnectRedis();
  Connect();
}

void Listener::Stop() {
  stopped_ = true;
  marker_.Detach();
  CloseTimer(reconnect_timer_);
  CloseTimer(tick_timer_);
  CloseTimer(redis_timer_);
  conn_.Disconnect("stopping");
  heartbeat_.Disconnect("stopping");
  redis_.set_on_state(nullptr);
  redis_.Disconnect();
  synced_ = false;
}

void Listener::Reload() {
  record_due_ = Clock::time_point{};  // say it again at the next tick
  pruner_.Reschedule();               // at the new log_retention's pace
  if (tick_timer_ != nullptr) {
    const auto interval = static_cast<uint64_t>(daemon_->config().heartbeat_interval.count());
    uv_timer_start(
        tick_timer_, [](uv_timer_t* t) { static_cast<Listener*>(t->data)->Tick(); }, interval, interval);
  }
}

void Listener::Connect() {
  if (stopped_) return;
  heartbeats_.clear();  // tokens of an earlier connection prove nothing
  shared_.Reset();      // nor do its probes
  // A relay's new LISTEN connection begins a new session: what came on the
  // old one is not continued by this one.
  // The old connection's last read is published in its session, never in
  // the next one (or dropped with its session when Redis is gone).
  if (relays()) relay_batch_.Flush();
  if (relays() && redis_.ready()) {
    relay_session_ = RandomHex(8);
    relay_seq_ = 0;
    ++daemon_->stats().relay_sessions;
  }
  if (subscribes()) {
    redis_.set_on_state(nullptr);
    redis_.Disconnect();
    sessions_.Clear();
    awaiting_first_ = rejoin_wanted_ = rejoining_ = false;
  }
  spdlog::info("source {}: connecting listener ({})", source().name, RedactConninfo(PrimaryConninfo()));
  conn_.Connect(PrimaryConninfo());
  if (!heartbeat_.connected() && !heartbeat_.resolving()) heartbeat_.Connect(PrimaryConninfo());
}

void Listener::Lost(const std::string& why) {
  if (stopped_) return;
  const bool was_synced = synced_;
  synced_ = false;
  marker_.Detach();
  conn_.Disconnect(why);
  // A heartbeat still in flight is stuck too (its backend may be the stopped
  // one, or blocked at commit): start its connection afresh as well.
  if (heartbeat_.connected() && !heartbeat_.idle()) heartbeat_.Disconnect(why);
  daemon_->SourceSynced(index_, false);  // fail closed at once
  // Exponential backoff with jitter: 50-100% of min * 2^attempts, capped.
  const auto base = source().reconnect_min.count() << std::min(attempts_, 20);
  const auto capped = std::min<int64_t>(base, source().reconnect_max.count());
  const auto delay = static_cast<uint64_t>(
      capped / 2 + static_cast<int64_t>(rng_() % static_cast<uint64_t>(capped / 2 + 1)));
  ++attempts_;
  ++daemon_->stats().reconnects;
  if (was_synced)
    spdlog::warn("source {}: listener lost ({}); cache unsynced, reconnecting in {} ms", source().name, why,
                 delay);
  else
    spdlog::warn("source {}: listener not connected ({}); retrying in {} ms", source().name, why, delay);
  if (reconnect_timer_ == nullptr) reconnect_timer_ = NewTimer(daemon_->loop(), this);
  uv_timer_start(
      reconnect_timer_, [](uv_timer_t* t) { static_cast<Listener*>(t->data)->Connect(); }, delay, 0);
}

std::string ListenerBehindPooler(const SourceConfig& s, int server_pid, int announced_pid) {
  return std::string(s.listener_conninfo.empty() ? "listener_conninfo is not set, so conninfo"
                                                 : "listener_conninfo") +
         " reaches PostgreSQL through a connection pooler such as PgBouncer (the server's backend pid " +
         std::to_string(server_pid) + " is not the pid " + std::to_string(announced_pid) +
         " the connection announced); LISTEN needs a session of its own: set listener_conninfo in "
         "[[source]] \"" +
         s.name + "\" to reach PostgreSQL directly";
}

void Listener::RefuseBehindPooler(int server_pid) {
  behind_pooler_ = true;
  const std::string why = ListenerBehindPooler(source(), server_pid, conn_.backend_pid());
  spdlog::error("source {}: listener refused: {}", source().name, why);
  Lost(why);
}

void Listener::CatchUp() {
  static const std::string kState =
      "SELECT txid_current_snapshot()::text, "
      "(SELECT log_enabled FROM tenantcache.settings)::text, "
      "tenantcache.schema_version(), pg_notification_queue_usage(), "
      "(SELECT count(*) FROM tenantcache.watched_tables)";
  // LISTEN is active: every change committed before now is either replayed
  // from the log (or covered by a flush) or notified.
  catchup_started_ns_ = MonotonicNowNs();
  join_mark_ = sessions_.Mark();
  conn_.Query(kState, {}, [this](const std::vector<PgResult>& results, const std::string& err) {
    if (!ResultError(results, err).empty()) {
      if (ResultSqlState(results) == kInsufficientPrivilege)
        RefusedSchema(SchemaError(results, err, conn_.user()), ResultError(results, err));
      else
        Lost(SchemaError(results, err, conn_.user()));
      return;
    }
    const std::string snapshot = Value(results, 0, 0);
    const bool log_enabled = Value(results, 0, 1) == "true";
    const std::string version = Value(results, 0, 2);
    daemon_->stats().notification_queue_usage = std::atof(Value(results, 0, 3).c_str());
    // Versions 1 to 6 send the same messages (5 only sends them for less; 6
    // adds the shared heartbeats' key);
    // version 1 let any role run code with the installer's rights, so it is
    // served with a warning. From version 3 on the daemon records the
    // namespaces it serves, from 4 on it prunes the log.
    if (version.size() != 1 || version < "1" || version > "6") {
      Lost("tenantcache schema version " + (version.empty() ? std::string("missing") : version) +
           " is not one this daemon speaks (1 to 6)");
      return;
    }
    records_namespaces_ = version != "1" && version != "2";
    pruner_.SetSchemaVersion(std::stoi(version));
    if (version == "1")
      spdlog::warn(
          "source {}: tenantcache schema version 1 lets any database role run code with the installer's "
          "rights; upgrade it by running sql/install.sql again",
          source().name);
    if (Value(results, 0, 4) == "0")
      spdlog::warn(
          "source {}: no table is watched (SELECT tenantcache.watch_table(...)): nothing will be invalidated",
          source().name);
    ReadHeartbeatKey(std::stoi(version), [this, snapshot, log_enabled] {
      if (subscribes() && !shared_.enabled()) {
        Lost(
            "a Redis subscriber verifies what it reads with the heartbeat key, which it cannot read: see the "
            "line above");
        return;
      }
      if (relays() && !shared_.enabled())
        spdlog::error(
            "source {}: relay: nothing is published to Redis: relayed messages are signed with the heartbeat "
            "key, which this daemon cannot read (see the line above), so subscribers would reject them",
            source().name);
      if (sync_point_ && log_enabled) {
        Replay(*sync_point_);
        return;
      }
      daemon_->Flush(sync_point_ ? "listener reconnected and the invalidation log is off"
                                 : "listener connected for the first time");
      MarkSynced(snapshot);
    });
  });
}

void Listener::ReadHeartbeatKey(int schema_version, std::function<void()> next) {
  const bool was_shared = shared_.enabled();
  const auto interval = daemon_->config().heartbeat_interval;
  // A shared heartbeat proves a probe up to two intervals later, and three
  // without a leader (daemon/shared_heartbeat.h): that must fit in the bound.
  if (schema_version < 6 || daemon_->config().stale_after < 4 * interval) {
    shared_.SetKey(std::nullopt);
    if (was_shared || !mode_logged_)
      spdlog::info(
          "source {}: heartbeats: this daemon's own, every {} ms ({})", source().name, interval.count(),
          schema_version < 6 ? "shared heartbeats need tenantcache schema version 6: run sql/install.sql"
                             : "shared heartbeats need cache.stale_after of at least 4 x "
                               "cache.heartbeat_interval");
    mode_logged_ = true;
    next();
    return;
  }
  conn_.Query(
      kHeartbeatKeyQuery, {},
      [this, was_shared, next = std::move(next)](const std::vector<PgResult>& results,
                                                 const std::string& err) {
        const std::string key = Value(results, 0, 0);
        if (!ResultError(results, err).empty() || key.empty()) {
          if (!ResultError(results, err).empty() && ResultSqlState(results) != kInsufficientPrivilege) {
            Lost("cannot read the heartbeat key: " + SchemaError(results, err, conn_.user()));
            return;
          }
          shared_.SetKey(std::nullopt);
          spdlog::warn(
              "source {}: heartbeats: this daemon's own, one NOTIFY per interval: the daemon's database "
              "role \"{}\" may not read tenantcache.heartbeat_key, so it cannot share heartbeats with "
              "the other daemons (every daemon then adds its own NOTIFYs to the primary's load); as the "
              "role that ran sql/install.sql, run: SELECT tenantcache.grant_daemon('{}')",
              source().name, conn_.user(), conn_.user());
          mode_logged_ = true;
          next();
          return;
        }
        shared_.SetKey(HeartbeatKey(key));
        if (!was_shared)
          spdlog::info("source {}: heartbeats: shared with the other daemons on the database", source().name);
        mode_logged_ = true;
        next();
      });
}

// The role may not read the schema: from version 3 on, the schema itself
// lists every privilege the role lacks (PostgreSQL names only the first
// object it was refused), so the log shows them all before the fix.
void Listener::RefusedSchema(const std::string& why, const std::string& error) {
  conn_.Query("SELECT array_to_string(tenantcache.daemon_missing_grants(), ', ')", {},
              [this, why, error](const std::vector<PgResult>& results, const std::string& err) {
                const std::string missing = Value(results, 0, 0);
                if (!ResultError(results, err).empty() || missing.empty()) {
                  Lost(why);
                  return;
                }
                Lost("the daemon's database role \"" + conn_.user() + "\" lacks " + missing +
                     " in schema tenantcache (" + error +
                     "); as the role that ran sql/install.sql, run: SELECT tenantcache.grant_daemon('" +
                     conn_.user() + "')");
              });
}

void Listener::Replay(const std::string& since) {
  ReplayThen(since, [this](const std::string& snapshot) { MarkSynced(snapshot); });
}

void Listener::ReplayThen(const std::string& since, std::function<void(const std::string& snapshot)> done) {
  conn_.Query(kReplay, {since},
              [this, done = std::move(done)](const std::vector<PgResult>& results, const std::string& err) {
                if (!ResultError(results, err).empty()) {
                  Lost("replaying the invalidation log failed: " + SchemaError(results, err, conn_.user()));
                  return;
                }
                std::string snapshot;
                if (!ApplyReplay(results.back().get(), &snapshot))
                  daemon_->Flush("the invalidation log no longer reaches back to the last sync point");
                done(snapshot);
              });
}

bool Listener::ApplyReplay(const PGresult* r, std::string* snapshot) {
  bool pruned = true;
  for (int i = 0; i < PQntuples(r); ++i) {
    if (std::string_view(PQgetvalue(r, i, 0)) == "s") {
      *snapshot = PQgetvalue(r, i, 1);
      pruned = std::string_view(PQgetvalue(r, i, 2)) != "false";
    }
  }
  if (pruned) return false;
  int replayed = 0;
  for (int i = 0; i < PQntuples(r); ++i) {
    const std::string_view kind = PQgetvalue(r, i, 0);
    if (kind == "k") {
      if (!daemon_->InvalidateKey(PQgetvalue(r, i, 1),
                                  std::string_view(PQgetvalue(r, i, 2), PQgetlength(r, i, 2))))
        UnknownNamespace(PQgetvalue(r, i, 1));
    } else if (kind == "t") {
      daemon_->InvalidateTenant(std::string_view(PQgetvalue(r, i, 2), PQgetlength(r, i, 2)));
    } else if (kind == "f") {
      daemon_->Flush("a flush was logged while the listener was away");
    } else {
      continue;
    }
    ++replayed;
  }
  spdlog::info("source {}: replayed {} logged invalidation(s) missed while disconnected", source().name,
               replayed);
  return true;
}

void Listener::MarkSynced(const std::string& snapshot) {
  if (!snapshot.empty()) sync_point_ = snapshot;
  synced_ = true;
  proven_ns_ = catchup_started_ns_;
  attempts_ = 0;
  last_heartbeat_ = Clock::now();
  record_due_ = Clock::time_point{};  // at the next tick
  if (subscribes()) {
    sessions_.Join(join_mark_);
    spdlog::info("source {}: reading Redis {} channel {} ({} relay session(s) joined), synced", source().name,
                 source().redis, source().redis_channel, sessions_.joined_count());
  } else {
    spdlog::info("source {}: listening on channel {} (backend pid {}), synced", source().name,
                 source().channel, conn_.backend_pid());
  }
  daemon_->SourceSynced(index_, true);
  marker_.Attach(&conn_);
}

void Listener::OnNotify(std::string_view payload) {
  if (relays()) Relay(payload);
  Apply(payload, true);
}

void Listener::Apply(std::string_view payload, bool proves) {
  ++daemon_->stats().notifications;
  const Notification n = ParseNotification(payload);
  switch (n.kind) {
    case Notification::kKey:
      if (!daemon_->InvalidateKey(n.ns, n.value)) UnknownNamespace(n.ns);
      return;
    case Notification::kTenant:
      daemon_->InvalidateTenant(n.value);
      return;
    case Notification::kFlush:
      daemon_->Flush("flush message");
      return;
    case Notification::kHeartbeat: {
      if (IsSharedHeartbeat(n.value)) {
        if (proves) OnSharedHeartbeat(n.value);
        return;
      }
      for (size_t i = 0; i < heartbeats_.size(); ++i) {
        if (heartbeats_[i].token != n.value) continue;
        ++daemon_->stats().heartbeats_received;
        last_heartbeat_ = Clock::now();
        proven_ns_ = std::max(proven_ns_, heartbeats_[i].sent_ns);
        heartbeats_[i].received = true;
        if (heartbeats_[i].snapshot && synced_) sync_point_ = heartbeats_[i].snapshot;
        // Earlier tokens would have arrived first (commit order): they are gone.
        heartbeats_.erase(heartbeats_.begin(),
                          heartbeats_.begin() + static_cast<long>(i) + (heartbeats_[i].snapshot ? 1 : 0));
        break;
      }
      return;
    }
    case Notification::kMalformed:
      break;
  }
  // Conservative: a message we cannot read may have meant anything.
  ++daemon_->stats().malformed_notifications;
  if (malformed_log_.Admit())
    spdlog::warn("source {}: malformed notification ({}), flushing the cache: \"{}\"{}", source().name,
                 n.error, Printable(payload), malformed_log_.suffix());
  daemon_->Flush("malformed notification");
}

void Listener::OnSharedHeartbeat(std::string_view value) {
  // A daemon that cannot verify (older schema, no grant) ignores them, as an
  // older daemon does, and proves its probes with its own.
  if (!shared_.enabled()) return;
  std::string why;
  const std::optional<SharedHeartbeats::Proof> proof = shared_.Received(value, &why);
  if (!proof) {
    ++daemon_->stats().heartbeats_rejected;
    if (rejected_log_.Admit())
      spdlog::warn(
          "source {}: ignored a heartbeat on channel {} that does not verify ({}): a role that cannot read "
          "tenantcache.heartbeat_key sends heartbeats, or daemons read different keys; it proves nothing{}",
          source().name, source().channel, why, rejected_log_.suffix());
    return;
  }
  ++daemon_->stats().heartbeats_received;
  last_heartbeat_ = Clock::now();
  proven_ns_ = std::max(proven_ns_, proof->proven_ns);
  if (synced_) sync_point_ = proof->snapshot;
}

// The names of this source's namespaces, comma-separated.
std::string Listener::Served(const char* separator) const {
  std::string out;
  for (const auto& ns : daemon_->config().namespaces) {
    if (ns.source_index != index_) continue;
    if (!out.empty()) out += separator;
    out += ns.name;
  }
  return out;
}

void Listener::UnknownNamespace(std::string_view ns) {
  ++daemon_->stats().unknown_namespace_messages;
  if (unknown_ns_log_.Admit())
    spdlog::warn(
        "source {}: a notification names namespace \"{}\", which this daemon does not serve (it serves: {}): "
        "ignored, so that data stays cached until its TTL. A tenantcache.watch_table() keys spec names it: "
        "compare SELECT table_name, keys, unserved_keys FROM tenantcache.watched_tables with the "
        "[[namespace]] "
        "names in {}{}",
        source().name, Printable(ns), Served(", "), daemon_->config().path, unknown_ns_log_.suffix());
}

// Who serves what is advisory (watch_table and watched_tables report keys no
// daemon serves), so a failure is logged, rate-limited, and never unsyncs.
std::string Listener::DaemonId() const {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown-host");
  return Printable(std::string(host) + ":" + daemon_->config().cache_path);
}

// With the record, two checks of the watched tables, read from the catalog
// (not from watched_tables, whose columns for them older schemas lack):
//  - the partitions of watched partitioned tables that have no TRUNCATE
//    trigger of ours (created or attached after watch_table ran, or watched
//    by a trigger spec older than 7): a TRUNCATE that names one sends
//    nothing;
//  - the BEFORE UPDATE row triggers of a watched table (or of its
//    partitions) whose UPDATE trigger is a column trigger (trigger spec 8
//    makes it one only where there were none): a change one makes to a
//    watched column that the UPDATE did not name sends nothing.
void Listener::RecordNamespaces() {
  static const std::string kRecord =
      "WITH untruncated AS ("
      "  SELECT DISTINCT format('%s (of %s)', p.relid::regclass, t.tgrelid::regclass) AS x "
      "    FROM pg_catalog.pg_trigger t, pg_catalog.pg_partition_tree(t.tgrelid) p "
      "   WHERE t.tgfoid = 'tenantcache.on_change()'::pg_catalog.regprocedure AND t.tgparentid = 0 "
      "     AND t.tgtype & 32 = 0 AND p.relid <> t.tgrelid "  // TRIGGER_TYPE_TRUNCATE is 32
      "     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger u "
      "                      WHERE u.tgrelid = p.relid AND u.tgfoid = t.tgfoid AND u.tgtype & 32 <> 0)), "
      "unseen AS ("
      "  SELECT DISTINCT format('%I on %s', b.tgname, b.tgrelid::regclass) AS x "
      "    FROM pg_catalog.pg_trigger t, pg_catalog.pg_trigger b "
      "   WHERE t.tgfoid = 'tenantcache.on_change()'::pg_catalog.regprocedure AND t.tgparentid = 0 "
      "     AND t.tgtype & 16 <> 0 AND cardinality(t.tgattr::pg_catalog.int2[]) > 0 "  // UPDATE OF
      "     AND (b.tgrelid = t.tgrelid OR b.tgparentid = 0 AND b.tgrelid IN "
      "            (SELECT p.relid FROM pg_catalog.pg_partition_tree(t.tgrelid) p)) "
      "     AND b.tgtype & 83 = 19 AND b.tgfoid <> t.tgfoid) "  // ROW | BEFORE | UPDATE, not INSTEAD
      "SELECT tenantcache.daemon_seen($1, $2::text[]), "
      "(SELECT string_agg(x, ', ' ORDER BY x) FROM untruncated), (SELECT count(*) FROM untruncated), "
      "(SELECT string_agg(x, ', ' ORDER BY x) FROM unseen), (SELECT count(*) FROM unseen)";
  record_due_ = Clock::now() + kRecordEvery;
  heartbeat_.Query(kRecord, {DaemonId(), "{" + Served(",") + "}"},
                   [this](const std::vector<PgResult>& results, const std::string& err) {
                     // A lost connection is the listener's to report.
                     if (!err.empty()) return;
                     if (ResultError(results, err).empty()) {
                       untruncated_partitions_ = std::strtoull(Value(results, 0, 2).c_str(), nullptr, 10);
                       unseen_before_triggers_ = std::strtoull(Value(results, 0, 4).c_str(), nullptr, 10);
                       WarnAboutWatchedTables(Value(results, 0, 1), Value(results, 0, 3));
                       return;
                     }
                     if (!record_log_.Admit()) return;
                     spdlog::warn(
                         "source {}: cannot record this daemon's namespaces in tenantcache.daemons, so "
                         "watch_table() and watched_tables cannot tell which keys it serves: {}{}",
                         source().name, SchemaError(results, err, heartbeat_.user()), record_log_.suffix());
                   });
}

bool Listener::CatalogWarning::Due(const std::string& seen) {
  const auto now = Clock::now();
  if (seen == last && now < due) return false;
  last = seen;
  due = now + std::chrono::hours(1);
  return !seen.empty();
}

void Listener::WarnAboutWatchedTables(const std::string& partitions, const std::string& before_triggers) {
  if (untruncated_.Due(partitions))
    spdlog::warn(
        "source {}: partitions {} have no tenantcache TRUNCATE trigger: a TRUNCATE that names one sends "
        "nothing, "
        "and the cache keeps its rows until their TTL. Run SELECT tenantcache.watch_table(...) again for "
        "their "
        "partitioned tables (sql/install.sql first if it is older than trigger spec 7); SELECT table_name, "
        "partitions_without_truncate_trigger FROM tenantcache.watched_tables lists them",
        source().name, partitions);
  if (unseen_before_.Due(before_triggers))
    spdlog::warn(
        "source {}: BEFORE UPDATE triggers {} were created after watch_table() ran for their tables, whose "
        "tenantcache UPDATE trigger fires only for an UPDATE that names a watched column: a change one of "
        "them "
        "makes to a watched column that the UPDATE did not name sends nothing, and the cache keeps the old "
        "value until its TTL. Run SELECT tenantcache.watch_table(...) again for those tables (it then "
        "compares every UPDATE); SELECT table_name, unseen_before_update_triggers FROM "
        "tenantcache.watched_tables lists them",
        source().name, before_triggers);
}

void Listener::Tick() {
  if (stopped_) return;
  const auto interval = daemon_->config().heartbeat_interval;
  const auto deaf_after = daemon_->config().stale_after - interval;
  if (synced_ && Clock::now() - last_heartbeat_ > deaf_after) {
    Lost("no heartbeat received for " +
         std::to_string(std::chrono::duration_cast<Millis>(Clock::now() - last_heartbeat_).count()) +
         " ms: the listener is connected but deaf");
    return;
  }
  // Shared heartbeats keep arriving when this daemon's own probes do not (its
  // heartbeat connection's backend stopped, say): nothing is proven then, the
  // readers fail closed at stale_after, and both connections start afresh.
  const auto unproven = std::chrono::nanoseconds(MonotonicNowNs() - proven_ns_);
  if (synced_ && shared_.enabled() && unproven > daemon_->config().stale_after) {
    Lost("nothing proven for " + std::to_string(std::chrono::duration_cast<Millis>(unproven).count()) +
         " ms although heartbeats arrive: they are older than this daemon's probes (what it listens to, or "
         "its "
         "relay, lags behind) or its probes do not come back");
    return;
  }
  if (!heartbeat_.connected()) {
    // A slow name lookup is let finish (it is bounded by the resolver's own
    // timeouts), not restarted at every tick.
    if (!heartbeat_.resolving()) heartbeat_.Connect(PrimaryConninfo());
    return;
  }
  if (subscribes() && synced_ && rejoin_wanted_ && !rejoining_ && conn_.idle()) Rejoin();
  if (!heartbeat_.idle() || !conn_.connected()) return;
  if (subscribes()) {
    // A subscriber probes and never sends: the relays' listeners hear the
    // heartbeats of the leaders among them.
    const uint64_t probe_ns = MonotonicNowNs();
    heartbeat_.Query("SELECT txid_current_snapshot()::text", {},
                     [this, probe_ns](const std::vector<PgResult>& results, const std::string& err) {
                       if (const std::string e = ResultError(results, err); !e.empty()) {
                         spdlog::warn("source {}: heartbeat probe failed: {}", source().name, e);
                         return;
                       }
                       shared_.Probed(probe_ns, Value(results, 0, 0));
                       AfterHeartbeat();
                     });
  } else if (shared_.enabled()) {
    SharedHeartbeat();
  } else {
    OwnHeartbeat();
  }
}

void Listener::ConnectRedis() {
  redis_.set_on_state([this](const std::string& error) {
    if (error.empty()) {
      redis_attempts_ = 0;
      relay_session_ = RandomHex(8);
      relay_seq_ = 0;
      ++daemon_->stats().relay_sessions;
      spdlog::info("source {}: relaying to Redis {} channel {} (session {})", source().name, source().redis,
                   source().redis_channel, relay_session_);
      return;
    }
    relay_session_.clear();
    if (redis_log_.Admit())
      spdlog::warn("source {}: relay: Redis {}: {}; its subscribers follow the other relays or fail closed{}",
                   source().name, source().redis, error, redis_log_.suffix());
    if (redis_timer_ == nullptr) redis_timer_ = NewTimer(daemon_->loop(), this);
    const auto delay = std::min<int64_t>(source().reconnect_min.count() << std::min(redis_attempts_++, 20),
                                         source().reconnect_max.count());
    uv_timer_start(
        redis_timer_, [](uv_timer_t* t) { static_cast<Listener*>(t->data)->ConnectRedis(); },
        static_cast<uint64_t>(delay), 0);
  });
  redis_.Connect(source().redis);
}

void Listener::Relay(std::string_view payload) {
  // A new session begins once Redis is back. Before the key is read (the
  // catch-up reads it) nothing is published: a subscriber joins a session
  // only after a message of it, and what arrived before that message is in
  // the log the subscriber replays.
  if (relay_session_.empty() || !redis_.ready() || !shared_.key()) return;
  relay_batch_.Add(payload);
}

void Listener::PublishRelayed(const std::vector<std::string>& payloads) {
  // Redis may have gone since the batch began: its session went with it.
  if (relay_session_.empty() || !redis_.ready() || !shared_.key()) return;
  if (redis_.Publish(source().redis_channel, EncodeRelayed(*shared_.key(), source().redis_channel,
                                                           relay_session_, ++relay_seq_, payloads))) {
    ++daemon_->stats().relayed_published;
    daemon_->stats().relayed_notifications += payloads.size();
  }
}

void Listener::Subscribe() {
  // The key first: every relayed message is verified with it.
  conn_.Query("SELECT tenantcache.schema_version()", {},
              [this](const std::vector<PgResult>& results, const std::string& err) {
                if (!ResultError(results, err).empty()) {
                  Lost(SchemaError(results, err, conn_.user()));
                  return;
                }
                const std::string version = Value(results, 0, 0);
                if (version.size() != 1 || version < "6") {
                  Lost("a Redis subscriber needs tenantcache schema version 6 (it has " + version +
                       "): run sql/install.sql");
                  return;
                }
                ReadHeartbeatKey(6, [this] {
                  if (!shared_.enabled()) {
                    Lost(
                        "a Redis subscriber verifies what it reads with the heartbeat key, which it cannot "
                        "read: see the line above");
                    return;
                  }
                  redis_.set_on_state([this](const std::string& error) {
                    if (!error.empty()) {
                      Lost("Redis " + source().redis + ": " + error);
                      return;
                    }
                    // Subscribed: what is published from now on arrives. The
                    // catch-up waits for a first message, whose session it
                    // then joins.
                    awaiting_first_ = true;
                    spdlog::info("source {}: subscribed to Redis {} channel {}; waiting for a relay",
                                 source().name, source().redis, source().redis_channel);
                  });
                  redis_.Connect(source().redis, source().redis_channel,
                                 [this](std::string_view text) { OnRelayed(text); });
                });
              });
}

void Listener::OnRelayed(std::string_view text) {
  std::string why;
  const std::optional<Relayed> m =
      shared_.key() ? DecodeRelayed(*shared_.key(), source().redis_channel, text, &why) : std::nullopt;
  if (!m) {
    ++daemon_->stats().relayed_rejected;
    if (relayed_log_.Admit())
      spdlog::warn(
          "source {}: ignored a message on Redis channel {} that does not verify ({}): whoever can "
          "PUBLISH there is not a relay of this database{}",
          source().name, source().redis_channel, why.empty() ? "no key" : why, relayed_log_.suffix());
    return;
  }
  const RelaySessions::Verdict v = sessions_.Accept(*m);
  if (v == RelaySessions::Verdict::kDuplicate) return;
  ++daemon_->stats().relayed_received;
  if (v == RelaySessions::Verdict::kGap) {
    ++daemon_->stats().relay_gaps;
    if (synced_ && !sessions_.any_joined()) {
      Lost("relay session " + m->session + " skipped a message and no other relay session is joined");
      return;
    }
  }
  if (v != RelaySessions::Verdict::kJoined) rejoin_wanted_ = true;
  for (const std::string& payload : m->payloads) Apply(payload, v == RelaySessions::Verdict::kJoined);
  if (awaiting_first_ && !synced_) {
    awaiting_first_ = false;
    CatchUp();
  }
}

void Listener::Rejoin() {
  if (!sync_point_) return;
  rejoin_wanted_ = false;
  rejoining_ = true;  // until done, or until a reconnect clears it
  const uint64_t mark = sessions_.Mark();
  ReplayThen(*sync_point_, [this, mark](const std::string&) {
    rejoining_ = false;
    if (synced_) sessions_.Join(mark);
  });
}

void Listener::OwnHeartbeat() {
  const std::string token = NewToken();
  if (token.empty()) {
    spdlog::warn("source {}: no heartbeat sent: getrandom failed: {}", source().name, std::strerror(errno));
    return;
  }
  heartbeats_.push_back(Heartbeat{token, std::nullopt, false, MonotonicNowNs()});
  while (heartbeats_.size() > 64) heartbeats_.pop_front();
  heartbeat_.Query("SELECT txid_current_snapshot()::text, pg_notify($1, $2)",
                   {source().channel, "1 h " + token},
                   [this, token](const std::vector<PgResult>& results, const std::string& err) {
                     const std::string e = ResultError(results, err);
                     if (!e.empty()) {
                       spdlog::warn("source {}: heartbeat failed: {}", source().name, e);
                       return;
                     }
                     ++daemon_->stats().heartbeats_sent;
                     AfterHeartbeat();
                     // The notification may have overtaken this result.
                     for (auto it = heartbeats_.begin(); it != heartbeats_.end(); ++it) {
                       if (it->token != token) continue;
                       it->snapshot = Value(results, 0, 0);
                       if (it->received) {
                         if (synced_) sync_point_ = it->snapshot;
                         heartbeats_.erase(heartbeats_.begin(), it + 1);
                       }
                       break;
                     }
                   });
}

void Listener::SharedHeartbeat() {
  // The probe's clock is read before its snapshot is taken: whatever
  // committed before it is in the snapshot.
  const uint64_t probe_ns = MonotonicNowNs();
  const int pid = heartbeat_.backend_pid();
  heartbeat_.Query(kSharedTickQuery, shared_.TickParams(pid),
                   [this, probe_ns, pid](const std::vector<PgResult>& results, const std::string& err) {
                     const std::string e = ResultError(results, err);
                     if (!e.empty()) {
                       spdlog::warn("source {}: heartbeat probe failed: {}", source().name, e);
                       return;
                     }
                     const std::string payload = shared_.Ticked(
                         probe_ns, Value(results, 0, 0), std::atoi(Value(results, 0, 1).c_str()), pid,
                         Clock::now(), last_heartbeat_, daemon_->config().heartbeat_interval);
                     if (payload.empty()) {
                       AfterHeartbeat();
                       return;
                     }
                     heartbeat_.Query("SELECT pg_notify($1, $2)", {source().channel, payload},
                                      [this](const std::vector<PgResult>& sent, const std::string& send_err) {
                                        const std::string se = ResultError(sent, send_err);
                                        if (!se.empty()) {
                                          spdlog::warn("source {}: heartbeat failed: {}", source().name, se);
                                          return;
                                        }
                                        ++daemon_->stats().heartbeats_sent;
                                        AfterHeartbeat();
                                      });
                   });
}

// On the heartbeat connection, not the listener's: a backend running a query
// holds back notifications. After the heartbeat, never instead of one: a
// skipped tick could exceed the deaf bound (stale_after - interval). Pruning
// needs the row daemon_seen writes, so it waits for a tick with no record due.
void Listener::AfterHeartbeat() {
  if (synced_ && records_namespaces_ && Clock::now() >= record_due_)
    RecordNamespaces();
  else if (synced_ && pruner_.Due())
    pruner_.Run(&heartbeat_, DaemonId());
}

}  // namespace tenantcache
