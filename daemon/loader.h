// A source's fill machinery: a pool of loader connections with one prepared
// statement per namespace, coalescing and leases.
//
//  * Statements: a connection that reaches PostgreSQL directly prepares one
//    named statement per namespace at connect (the plan is cached for every
//    fill) and sets statement_timeout for its session. Through a pooler
//    (PgConn::ServerPid: the server's pid is not the one the connection
//    announced), the next transaction may run on another server connection,
//    which other clients share: nothing may outlive a transaction there. Such
//    a connection checks each query with the unnamed statement and runs each
//    fill as one Parse/Bind/Execute/Sync of the unnamed statement, and sets
//    nothing (the fill's deadline still answers the waiters and replaces the
//    connection). A pooler the pid does not reveal shows itself when a named
//    statement is missing or already exists (StatementNotKept): that is
//    logged with the hint, and every connection of the pool uses unnamed
//    statements from then on.
//    TENANTCACHED_LOADER_STATEMENTS=named|unnamed in the environment skips
//    the detection (named: as if direct; unnamed: as if pooled), so that the
//    benchmark can measure both ways on one server and the tests can play a
//    pooler the detection misses.
//
//  * Coalescing: one Fill per (namespace, key). Any number of concurrent
//    misses for that key, from any number of clients, wait on the same Fill
//    and its one query.
//  * Leases: a Fill takes a lease (epoch, tenant sequence) before its query
//    is sent. An invalidation of its key while it is in flight revokes it
//    here; an epoch bump or an invalidation of the tenant the row turns out
//    to belong to makes the writer refuse it. A revoked fill is not written:
//    it is run again (up to kMaxAttempts) and then answered uncached.
//  * Every connection describes each statement it prepares and checks it
//    against the namespace (query_check.h). A namespace whose query does not
//    prepare or does not return its columns is broken: the error is logged
//    once (again when it changes) and its lookups are answered TC_E_DAEMON
//    with that message, never from a query that cannot fill it. A later
//    connection that finds the query sound (the schema was fixed) clears it.
//  * Fill errors are logged, at most one line a second with a count of the
//    rest, with the namespace and the database's message, which also goes
//    back to the client.
//  * Standby gate: a connection to a hot standby runs a fill's statement
//    only once the standby has replayed past every invalidation applied
//    before the fill began, or answers timeout at query_timeout
//    (daemon/replica.h has the protocol).
//  * The pending queue is bounded (queue_bound Fills); beyond it lookups are
//    answered busy. Each query has a deadline; on expiry its waiters are told
//    timeout and the connection is replaced (the server's statement_timeout
//    ends the query there too).
#ifndef TENANTCACHE_DAEMON_LOADER_H_
#define TENANTCACHE_DAEMON_LOADER_H_

#include <uv.h>

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cache_writer.h"
#include "config.h"
#include "daemon.h"
#include "log_limit.h"
#include "pg_conn.h"
#include "replica.h"

namespace tenantcache {

class LoaderPool {
 public:
  LoaderPool(Daemon* daemon, size_t source_index);
  ~LoaderPool();

  void Start();
  void Stop();

  // `ns` is a namespace of this source; `key` is normalised.
  void Lookup(uint32_t ns, const std::string& key, LookupCallback cb);
  // A key invalidation arrived: a fill of that key in flight must not be cached.
  void Revoke(uint32_t ns, const std::string& key);
  size_t pending() const { return fills_.size(); }
  // Namespaces whose query a loader found broken (their lookups fail).
  size_t broken() const { return broken_.size(); }
  // Loader connections on a hot standby now, and that standby's lag
  // (daemon/replica.h), 0 without any.
  size_t standby_loaders() const;
  uint64_t replica_lag_bytes() const;
  double replica_lag_seconds() const;

 private:
  static constexpr int kMaxAttempts = 3;

  struct Fill {
    uint32_t ns;
    std::string key;
    Lease lease;
    bool revoked = false;
    int attempts = 0;
    std::vector<LookupCallback> waiters;
    uv_timer_t* deadline = nullptr;  // data: this Fill (alive while running)
    LoaderPool* pool = nullptr;
    size_t conn = 0;  // the connection running it
    // Standby gate: the invalidations applied when the lease was taken
    // (WalMarker::generation); waiting for the primary's position or the
    // standby's replay; the position required (0 until known); replay reads
    // so far.
    uint64_t generation = 0;
    bool gated = false;
    uint64_t required = 0;
    int polls = 0;
  };
  struct Conn {
    LoaderPool* pool = nullptr;
    size_t index = 0;
    std::unique_ptr<PgConn> pg;
    bool prepared = false;  // every namespace's query checked
    bool pooled = false;    // reaches PostgreSQL through a pooler
    std::shared_ptr<Fill> running;
    uv_timer_t* retry = nullptr;  // data: this Conn
    int attempts = 0;
    ReplayState replay;                  // what kReplayStateQuery last said
    uv_timer_t* replay_timer = nullptr;  // data: this Conn; the gate's next read
  };

  const SourceConfig& source() const;
  void ConnectOne(size_t i);
  // The connection is up: finds out whether it goes through a pooler.
  void Connected(size_t i);
  void PrepareNext(size_t i, size_t k);
  // The statement that fills namespace `ns` on connection `i` ("" unnamed).
  std::string Statement(size_t i, uint32_t ns) const;
  // A named statement was not kept: unnamed statements from now on.
  void StatementsNotKept(const NamespaceConfig& ns, const std::string& message);
  void Dispatch();
  void Run(size_t conn, const std::shared_ptr<Fill>& fill);
  // Takes the lease and records the generation with it (daemon/replica.h).
  void Begin(Fill& fill);
  // The standby gate (daemon/replica.h), then Send.
  void Gate(size_t conn, const std::shared_ptr<Fill>& fill);
  void AwaitReplay(size_t conn, const std::shared_ptr<Fill>& fill);
  void ReadReplay(size_t conn);
  // The deadline passed while the fill was gated.
  void ReplicaTimeout(size_t conn, const std::shared_ptr<Fill>& fill);
  // Records a connection's kReplayStateQuery result; false when it is not one.
  bool SetReplay(size_t conn, const std::vector<PgResult>& results, std::string* error);
  void MonitorLag();
  // The newest replay position read on a connected standby connection;
  // false when there is none.
  bool NewestReplay(uint64_t* replayed) const;
  void Send(size_t conn, const std::shared_ptr<Fill>& fill);
  void Done(size_t conn, const std::shared_ptr<Fill>& fill, const std::vector<PgResult>& results,
            const std::string& error);
  void Answer(const std::shared_ptr<Fill>& fill, const LookupAnswer& answer);
  void Reconnect(size_t i, const std::string& why);
  // Records the outcome of a connection's check of namespace `ns`: "" sound.
  void SetBroken(uint32_t ns, const std::string& error);
  void Recheck();
  // Answers a fill with a database error and logs it (rate-limited).
  void FillError(const std::shared_ptr<Fill>& fill, const std::string& message);

  Daemon* daemon_;
  size_t index_;
  std::vector<uint32_t> namespaces_;  // the namespace ids this source fills
  std::vector<Conn> conns_;
  std::map<std::pair<uint32_t, std::string>, std::shared_ptr<Fill>> fills_;
  std::deque<std::shared_ptr<Fill>> queue_;
  std::map<uint32_t, std::string> broken_;  // namespace id -> why its query cannot fill it
  LogLimiter fill_error_log_{std::chrono::seconds(1), "fill errors"};
  uint64_t recheck_after_ = 0;  // uv_now() before which Recheck does nothing
  LogLimiter not_kept_log_{std::chrono::seconds(60), "prepared-statement warnings"};
  enum class Statements { kDetect, kNamed, kUnnamed };
  Statements statements_ = Statements::kDetect;  // TENANTCACHED_LOADER_STATEMENTS
  bool not_kept_ = false;                        // a named statement was not kept
  int logged_pooled_ = -1;                       // what the log said last: 1 pooled, 0 direct
  LogLimiter replica_log_{std::chrono::seconds(10), "standby timeouts"};
  uv_timer_t* lag_timer_ = nullptr;  // refreshes the lag while loaders are on a standby
  bool stopped_ = false;
};

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_LOADER_H_
