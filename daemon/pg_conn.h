// One asynchronous libpq connection driven by the libuv loop.
//
// The libpq socket is foreign to libuv, so this class follows one protocol:
//  1. The poll handle is stopped before any libpq call that may close or
//     replace the socket (PQconnectPoll, PQfinish); after PQconnectPoll the
//     handle is re-created if PQsocket() changed.
//  2. Writable interest is armed only while PQflush() returns 1 (or while
//     PQconnectPoll asks to write); readable interest is always armed once
//     connected, so notifications arrive while idle.
//  3. After every PQconsumeInput every pending PQnotifies() is drained before
//     anything else, and results are read only while !PQisBusy(), so the loop
//     never blocks inside libpq.
//  4. The poll handle's memory is freed only in its close callback; the
//     connection may be destroyed at any time outside its own callbacks.
//
// One query is in flight at a time; Query() while busy is a programming error.
// Every callback runs on the loop thread.
//
// Behind a transaction-pooling PgBouncer each Sync may reach another server
// connection: whatever must happen on one server connection is sent before
// one Sync (PrepareAndDescribe uses libpq's pipeline mode for that, and
// Query with parameters is Parse/Bind/Execute/Sync).
#ifndef TENANTCACHE_DAEMON_PG_CONN_H_
#define TENANTCACHE_DAEMON_PG_CONN_H_

#include <libpq-fe.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "resolver.h"

namespace tenantcache {

// The search_path of a connection that runs the daemon's own queries: any
// database role that may create objects in a schema of the default path
// (public, before PostgreSQL 15) could otherwise put a function or an
// operator there that matches their arguments better than pg_catalog's
// (format(text, regclass, regclass), int2 & int4) and have the daemon run
// it with its role's rights.
inline constexpr const char* kPinnedSearchPath = "SET search_path = pg_catalog, pg_temp";

struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

class PgConn {
 public:
  // Results of one query (one per statement), or an error message.
  using ResultCallback = std::function<void(const std::vector<PgResult>& results, const std::string& error)>;
  using NotifyCallback = std::function<void(std::string_view channel, std::string_view payload)>;
  // Connected (error empty) or failed/lost (error says why).
  using StateCallback = std::function<void(const std::string& error)>;

  PgConn(uv_loop_t* loop, std::string name);
  ~PgConn();
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  void set_on_state(StateCallback cb) { on_state_ = std::move(cb); }
  void set_on_notify(NotifyCallback cb) { on_notify_ = std::move(cb); }
  // SQL run on every new connection before on_state reports it connected
  // (its failure fails the connection): for a connection that runs only the
  // daemon's own queries, pinning search_path (kPinnedSearchPath).
  void set_session_setup(std::string sql) { session_setup_ = std::move(sql); }

  // Starts connecting (dropping any current connection): resolves the host
  // names off the loop (resolver.h), then connects. on_state reports the
  // outcome. fallback_application_name is set to "tenantcached <name>".
  void Connect(const std::string& conninfo);
  // Drops the connection; a query in flight gets `why` as its error.
  void Disconnect(const std::string& why);

  bool connected() const { return state_ == State::kReady || state_ == State::kBusy; }
  bool idle() const { return state_ == State::kReady; }
  // Resolving host names (see resolver.h): Connect again would start over.
  bool resolving() const { return state_ == State::kResolving; }
  const std::string& name() const { return name_; }
  int backend_pid() const { return conn_ != nullptr ? PQbackendPID(conn_) : 0; }
  // The database role it logged in as ("" before connecting).
  std::string user() const { return conn_ != nullptr ? PQuser(conn_) : ""; }

  // Sends `sql` with text parameters (nullopt = NULL); a multi-statement
  // string is allowed when there are no parameters.
  void Query(const std::string& sql, const std::vector<std::optional<std::string>>& params,
             ResultCallback cb);
  // Prepares `sql` as `stmt` ("" = the unnamed statement) and describes its
  // parameters and result columns (nothing runs), both before one Sync, so
  // they reach one server connection even through a transaction pooler. The
  // results: the prepare's, then the describe's (PGRES_PIPELINE_ABORTED when
  // the prepare failed).
  void PrepareAndDescribe(const std::string& stmt, const std::string& sql, ResultCallback cb);
  // The pid of the server backend that answers a query, or 0 and the error.
  // A pooler answers the startup with a BackendKeyData of its own, so a pid
  // other than backend_pid() says that the connection reaches PostgreSQL
  // through a pooler (PgBouncer), whose next transaction may run on another
  // server connection.
  void ServerPid(std::function<void(int pid, const std::string& error)> cb);
  void QueryPrepared(const std::string& stmt, const std::vector<std::optional<std::string>>& params,
                     ResultCallback cb);

 private:
  enum class State { kDisconnected, kResolving, kConnecting, kReady, kBusy };

  static void OnPoll(uv_poll_t* handle, int status, int events);
  void Watch(int events);  // (re)arms the poll handle on the current socket
  void StopPoll();
  void ClosePoll();
  void Start(ConnParams params);  // libpq's part of Connect
  void ContinueConnect();
  void SetUpSession();  // session_setup_, then on_state_("")
  void Flush();
  void ReadInput();
  void Fail(const std::string& error);
  void Finish(const std::string& error);  // completes the query in flight
  bool Sent(int ok, ResultCallback cb);
  void EndPipeline();

  uv_loop_t* loop_;
  std::string name_;
  PGconn* conn_ = nullptr;
  State state_ = State::kDisconnected;
  Resolution* resolving_ = nullptr;  // while kResolving
  uv_poll_t* poll_ = nullptr;
  int poll_fd_ = -1;
  int poll_events_ = 0;  // the events poll_ was last started with
  ResultCallback pending_;
  std::vector<PgResult> results_;
  bool pipeline_ = false;  // a PrepareAndDescribe is in flight (pipeline mode)
  bool between_ = false;   // pipeline: the last PQgetResult ended one query's results
  StateCallback on_state_;
  NotifyCallback on_notify_;
  std::string session_setup_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_PG_CONN_H_
