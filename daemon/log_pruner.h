// A source's log retention: the daemon prunes tenantcache.invalidation_log
// itself, through tenantcache.daemon_prune_log() on the listener's heartbeat
// connection, so that the log stays bounded without a cron job.
//
// The rule, safe with several daemons on one database (written out with the
// function in sql/install.sql): each call records this daemon's
// log_retention in its row of tenantcache.daemons, and the database deletes
// only rows older than the LONGEST retention among the daemons that recorded
// theirs within twice that retention. A daemon needs log rows only to replay
// what it missed while disconnected; one whose rows were pruned sees it in
// tenantcache.log_horizon and flushes instead (safe, only colder). So:
//  * a disconnect shorter than log_retention (less the sync point's age, a
//    few heartbeats) is replayed; a longer one flushes, never serves stale;
//  * a daemon with a short retention never prunes what one with a longer
//    retention still needs; a stopped daemon holds the log for twice its
//    retention, then no more;
//  * pruning daemons do not fight: one DELETE at a time, in batches.
//
// Calls come every min(log_retention / 10, 5 min), jittered by +-25 % so
// that daemons started together spread out; after a full batch, at the next
// heartbeat, so that a backlog is worked off quickly in small transactions.
// Needs schema version 4: on an older one it says once, in the log, how to
// upgrade. Failures are counted and logged, rate-limited; pruning never
// affects whether the cache is synced.
#ifndef TENANTCACHE_DAEMON_LOG_PRUNER_H_
#define TENANTCACHE_DAEMON_LOG_PRUNER_H_

#include <chrono>
#include <cstdint>
#include <random>
#include <string>

#include "config.h"
#include "log_limit.h"
#include "pg_conn.h"

namespace tenantcache {

class Daemon;

class LogPruner {
 public:
  // For source `index` of the daemon's config, read at each call so that a
  // reload's log_retention applies.
  LogPruner(Daemon* daemon, size_t index, uint64_t seed);

  // The schema version the listener found after connecting.
  void SetSchemaVersion(int version);
  // Whether a call is due now (log_retention > 0, schema version 4 and the
  // interval has passed).
  bool Due() const;
  // Calls tenantcache.daemon_prune_log on `conn` (idle) for daemon `id`
  // (the id daemon_seen recorded).
  void Run(PgConn* conn, const std::string& id);
  // The next call comes one (new) interval from now.
  void Reschedule();

  // Rows deleted per call at most (as in daemon_prune_log).
  static constexpr int64_t kBatch = 10000;

 private:
  std::chrono::milliseconds Interval();
  const SourceConfig& source() const;

  Daemon* daemon_;
  size_t index_;
  int version_ = 0;
  bool hint_logged_ = false;
  std::chrono::steady_clock::time_point due_;
  LogLimiter error_log_{std::chrono::minutes(10), "log pruning failures"};
  std::mt19937_64 rng_;
};

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_LOG_PRUNER_H_
