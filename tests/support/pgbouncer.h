// A throwaway PgBouncer in transaction pooling mode in front of a PgCluster,
// for integration tests: the Debian package's binary (/usr/sbin/pgbouncer, or
// TC_PGBOUNCER), a generated ini in a private temporary directory (as the
// "postgres" user when the tests run as root, since pgbouncer refuses root),
// a private unix socket directory and a free port, no TCP listener,
// auth_type = trust, its pid in <dir>/pgbouncer.pid (packaging/test.sh and
// bench.sh stop what a dead test binary left there). It runs in the foreground as a child process; Stop
// (SIGTERM: immediate shutdown) drops every client and server connection, as
// an operator's restart does.
#ifndef TENANTCACHE_TESTS_SUPPORT_PGBOUNCER_H_
#define TENANTCACHE_TESTS_SUPPORT_PGBOUNCER_H_

#include <sys/types.h>

#include <chrono>
#include <string>

#include "support/pg_cluster.h"

namespace tenantcache::test {

class PgBouncer {
 public:
  // Starts it in front of `cluster` with `pool_size` server connections per
  // database and user (few, so that clients share them, as in production);
  // throws PgError with its log when it does not accept a query in time.
  explicit PgBouncer(const PgCluster& cluster, int pool_size = 2);
  ~PgBouncer();  // stopped, directory removed
  PgBouncer(const PgBouncer&) = delete;
  PgBouncer& operator=(const PgBouncer&) = delete;

  // "host=<socket dir> port=<port> dbname=<db> user=<user>" through PgBouncer.
  std::string Conninfo(const std::string& dbname, const std::string& user = "postgres") const;
  // Its log (connections, errors, pool events).
  std::string Log() const;
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  // Stops it and waits for the process to exit.
  void Stop();
  // Starts it again on the same socket and port; waits until it answers.
  void Start();
  // Stop, then Start: every connection through it is dropped.
  void Restart();

 private:
  std::string binary_, root_, socket_dir_, ini_, log_file_, server_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace tenantcache::test

#endif  // TENANTCACHE_TESTS_SUPPORT_PGBOUNCER_H_
