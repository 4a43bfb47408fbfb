// Checks a namespace's query against the database before it is trusted: the
// query is prepared and described (nothing runs), and what it returns is
// compared with the namespace's tenant_column and fields. A mismatch is named
// with the FILE:LINE of the query, what is missing and what the query does
// return, e.g.
//
//   tenantcached.toml:42: namespace member: the query returns no column
//   "plann" (it returns: tenant_id, role, plan)
//
// One piece of code serves every place the check runs:
//  * `tenantcached --check-config --connect` and the daemon's start run a
//    QueryCheck on a private loop before anything else;
//  * a reload runs one on the daemon's loop for the namespaces it changes;
//  * every loader connection checks each statement it prepares with
//    CheckStatement (daemon/loader.cc), which covers a database that was
//    down at start or whose schema changed since.
// CheckStatement prepares and describes before one Sync: through a
// transaction-pooling PgBouncer both reach the same server connection.
#ifndef TENANTCACHE_DAEMON_QUERY_CHECK_H_
#define TENANTCACHE_DAEMON_QUERY_CHECK_H_

#include <libpq-fe.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "pg_conn.h"

namespace tenantcache {

// "" when the described statement `described` (PQdescribePrepared's result)
// takes one parameter and returns the tenant column and every field;
// otherwise what is wrong, prefixed "FILE:LINE: namespace NAME: ".
std::string QueryShapeError(const NamespaceConfig& ns, const PGresult* described);

// "FILE:LINE: namespace NAME: the query cannot be prepared: MESSAGE".
std::string PrepareError(const NamespaceConfig& ns, const std::string& message);

// True when `r` failed because the connection did not keep a prepared
// statement between two messages (it does not exist, or one of that name
// already does): what a transaction-pooling PgBouncer before 1.21 does. That
// says nothing about the query, so it never marks one broken.
bool StatementNotKept(const PGresult* r);
extern const char* const kStatementNotKeptHint;

// What preparing and describing one namespace's query showed.
struct StatementCheck {
  enum Kind {
    kSound,             // it returns what the namespace needs
    kBroken,            // message: PrepareError or QueryShapeError
    kNotKept,           // StatementNotKept; message: the database's
    kConnectionFailed,  // message: why (the connection's owner reconnects)
  };
  Kind kind;
  std::string message;
};
using StatementCheckCallback = std::function<void(const StatementCheck&)>;

// Prepares `ns.query` as `stmt` on `pg` ("" = the unnamed statement, which
// leaves nothing behind on a pooled server connection), describes it and
// classifies the outcome. `done` runs on the loop.
void CheckStatement(PgConn* pg, const std::string& stmt, const NamespaceConfig& ns,
                    StatementCheckCallback done);

// Prepares and describes the queries of `namespaces` on one connection per
// source, the sources one after the other, each within `timeout`.
class QueryCheck {
 public:
  struct Outcome {
    std::vector<std::string> problems;     // queries that do not match their namespace
    std::vector<std::string> unreachable;  // "source main: cannot connect: ..." (not checked)
  };
  using DoneCallback = std::function<void(const Outcome&)>;

  // `done` runs on the loop, outside any libpq callback, so it may destroy
  // this QueryCheck.
  QueryCheck(uv_loop_t* loop, const Config& config, std::vector<NamespaceConfig> namespaces, Millis timeout,
             DoneCallback done);
  ~QueryCheck();
  QueryCheck(const QueryCheck&) = delete;
  QueryCheck& operator=(const QueryCheck&) = delete;

  void Start();

 private:
  void NextSource();
  void CheckNext(size_t k);
  void SourceDone(const std::string& unreachable);
  void Finish();

  uv_loop_t* loop_;
  std::vector<SourceConfig> sources_;
  std::vector<NamespaceConfig> namespaces_;
  Millis timeout_;
  DoneCallback done_;
  Outcome outcome_;
  size_t source_ = 0;
  std::vector<const NamespaceConfig*> current_;  // the namespaces of sources_[source_ - 1]
  std::unique_ptr<PgConn> pg_;
  uv_timer_t* timer_ = nullptr;  // the source's deadline, then the deferred `done`
  bool finished_ = false;
};

// Runs a QueryCheck of every namespace of `config` to completion on a private
// loop (for --check-config and the start, before the daemon's loop exists).
QueryCheck::Outcome CheckQueriesNow(const Config& config, Millis timeout);

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_QUERY_CHECK_H_
