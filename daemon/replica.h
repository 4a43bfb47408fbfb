// Fills from a hot standby with bounded staleness: the "remote marker".
//
// The idea. A standby answers from the past: it may not yet have replayed a
// change whose invalidation the daemon has already applied. A fill that
// began after that invalidation and read the standby would cache the old row
// again, with no notification left to remove it. So a fill from a standby
// runs only once the standby has replayed past every commit whose
// invalidation was applied before the fill began. Invalidations arriving
// while the fill runs revoke its lease and later ones evict its entry, as on
// a primary (loader.h), so no fill outlives a change by more than the
// listener's own delay, which readers already bound (stale_after).
//
// The data. Per source, a WalMarker on the listener's connection (the
// primary, idle outside transactions once synced) counts the invalidations
// applied (a generation) and probes the primary's WAL insert position:
//  * A probe sent after generation g was applied returns a position at or
//    past the end of the commit record of every invalidation of generation
//    <= g: each commit record is inserted before its notification is sent,
//    and the daemon applies a notification only after receiving it. The
//    insert position, not pg_current_wal_lsn(): with asynchronous commit the
//    write position may still lie before a commit whose notification has
//    been delivered.
//  * A fill begins when it takes its lease, and records the generation then,
//    in the same step (an invalidation between the two would be covered by
//    neither). The position required of it is the result of the first probe
//    sent once that generation was applied (a later one would be correct
//    too, only stricter: the marker keeps the last kProbes answers, and
//    answers an older generation with the oldest it kept). While no such
//    probe has answered, or the listener is not synced (invalidations may
//    be missing then, to be replayed or flushed at reconnect), the fill
//    waits.
//  * On a standby a fill begins when it is queued, not when a connection
//    takes it: the fills queued behind a waiting one then need positions the
//    standby has mostly replayed by the time their turn comes, instead of
//    each waiting the standby's whole delay again on its connection. The
//    price is a longer lease: an invalidation applied while a fill is
//    queued revokes it (it is run again). On a primary the lease is taken
//    again when the query is sent, as before.
//  * Probes coalesce: one in flight at a time, sent from the loop's next
//    turn (never inside the listener's notification callback), so a burst
//    of invalidations costs one round trip to the primary. They are sent
//    eagerly only while some loader of the source is on a standby.
//  * An insert position that points just past a page header (the first
//    record of a page goes there) names the same place in the WAL as the
//    page boundary, which is where a standby reports a replayed record that
//    ends the previous page: the header is subtracted, or the fill would
//    wait for the next record to be written.
//
// The standby side (LoaderPool, loader.cc). Each loader connection learns at
// connect, in the statement that sets statement_timeout (no extra round
// trip on a primary), whether its server is in recovery and how far it has
// replayed (kReplayStateQuery). When a standby connection takes a fill, it
// asks the WalMarker for the position of the fill's generation, then
// compares it with the replay position the connection last read; if that
// is behind it reads it again (backoff 0, 1, 2, 4, 8, then every 10 ms)
// until it is not, then sends the fill's own statement.
//  * The replay position must come from a statement that completed before
//    the fill's statement started. In the same statement it proves nothing:
//    the statement's snapshot is taken before its functions run, so
//    pg_last_wal_replay_lsn() may report a commit replayed after the
//    snapshot that the query's rows do not include.
//  * Replay is global to a server, so a position read on a connection holds
//    for that connection's next statement; connections do not share what
//    they read, since a multi-host conninfo may reach different standbys.
//  * Deadline: the fill's query_timeout covers the wait. When it passes the
//    fill is answered TC_E_TIMEOUT naming the standby's lag (counted in
//    replica_timeouts and fill_timeouts), never from the standby. Falling
//    back to the primary is not done: the loaders were moved to the standby
//    to spare the primary, and a standby that stops replaying (a paused
//    replay, a long query conflict) would otherwise send every fill to the
//    primary at once with nothing in the status to say so. The client's
//    fallback (its own query) decides where to go.
//  * Revocation: a fill revoked on each of its attempts is answered
//    TC_E_TIMEOUT (replica_timeouts), not from its last row as on a primary:
//    its lease spans the wait for the replay, so that row may be older than
//    the change that revoked it by more than the bound.
//  * Cost: the marker is one WAL position for the whole source, not one per
//    key (memcache's markers are per key). After any invalidation every fill
//    waits until the standby has replayed what the primary had written by
//    then, so under a steady write load a miss costs about the standby's
//    replay delay, whichever key it is for.
//  * Promotion: a connection whose server says it is no longer in recovery
//    is treated as a primary from then on (fills run at once). Changes the
//    old primary committed but never shipped are lost to the cache as they
//    are to the database; the listener must follow the new primary (a
//    listener_conninfo with target_session_attrs=read-write).
//
// Lag (status and metrics): replica_lag_bytes is the newest primary
// position probed minus the newest replay position read, and
// replica_lag_seconds how long ago the primary was first seen past where
// the standby is now (the marker keeps a few probes a second, for up to
// kHistory of them): both from the daemon's own observations, on its own
// monotonic clock, so no clock skew between servers and no NULL
// pg_last_xact_replay_timestamp() on a standby that replayed no commit yet.
// It is a lower bound, by at most the spacing of the probes kept. Both are
// refreshed every second while loaders are on a standby.
#ifndef TENANTCACHE_DAEMON_REPLICA_H_
#define TENANTCACHE_DAEMON_REPLICA_H_

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "log_limit.h"
#include "pg_conn.h"

namespace tenantcache {

// "16/B374D848" -> 0x16B374D848; 0 for anything else (NULL, garbage).
uint64_t ParseLsn(std::string_view text);

// A loader connection's view of its server: in recovery or not, and how far
// it has replayed.
struct ReplayState {
  bool standby = false;
  uint64_t replayed = 0;
};
// One row: pg_is_in_recovery(), pg_last_wal_replay_lsn() (NULL on a server
// that never was a standby).
extern const char* const kReplayStateQuery;
// Reads the last result of kReplayStateQuery; false with `error` set when
// the result is not that row.
bool ReadReplayState(const std::vector<PgResult>& results, ReplayState* state, std::string* error);

class WalMarker {
 public:
  using Ready = std::function<void(uint64_t lsn)>;

  WalMarker(uv_loop_t* loop, std::string source_name);
  ~WalMarker();
  WalMarker(const WalMarker&) = delete;
  WalMarker& operator=(const WalMarker&) = delete;

  // The listener's connection, from when it is synced until it is lost:
  // probes run on it only then.
  void Attach(PgConn* conn);
  void Detach();
  // Probe eagerly after invalidations (some loader of the source is on a
  // standby).
  void set_wanted(bool wanted);

  // An invalidation (key, tenant, epoch) was applied to the cache.
  void Applied();
  // The generation a fill beginning now records with its lease.
  uint64_t generation() const { return applied_; }
  // Calls `ready(lsn)` with the primary position a fill that began at
  // `generation` must see replayed: at once when the listener is synced and
  // a probe sent at or after that generation has answered, else when one
  // does (the fill's own deadline bounds the wait).
  void Required(uint64_t generation, Ready ready);
  // Asks for a fresh position for the lag gauges (no-op while one is in
  // flight).
  void Refresh();

  uint64_t latest() const { return latest_; }  // newest position probed, 0 before any
  // Seconds since the primary was first seen past `replayed` (0 when it
  // never was).
  double LagSeconds(uint64_t replayed) const;
  uint64_t probes() const { return probes_; }

 private:
  bool Unprobed() const;  // no probe answered since the last invalidation
  void Schedule();        // sends from the loop's next turn
  void Send();
  void Answered(uint64_t generation, uint64_t lsn);

  static constexpr size_t kHistory = 4096;
  static constexpr size_t kProbes = 1024;
  static constexpr uint64_t kHistorySpacingMs = 250;

  uv_loop_t* loop_;
  std::string source_;
  PgConn* conn_ = nullptr;
  uv_timer_t* timer_ = nullptr;
  bool wanted_ = false;
  bool refresh_ = false;
  bool in_flight_ = false;
  uint64_t applied_ = 0;  // invalidations applied (the generation)
  // Answered probes, oldest first, one per generation (the first sent at
  // it): (generation at sending, position).
  std::deque<std::pair<uint64_t, uint64_t>> probed_;
  uint64_t latest_ = 0;  // newest result of any probe
  uint64_t probes_ = 0;  // probes answered
  LogLimiter error_log_{std::chrono::seconds(10), "probe failures"};
  std::vector<std::pair<uint64_t, Ready>> waiters_;    // (generation needed, callback)
  std::deque<std::pair<uint64_t, uint64_t>> history_;  // (uv_now() ms, position), oldest first
};

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_REPLICA_H_
