// A throwaway PostgreSQL cluster for integration tests: initdb in a private
// temporary directory (as the unprivileged "postgres" user when the tests run
// as root, since initdb refuses root), fsync off, a private unix socket
// directory and a free port, stopped and removed when the cluster object dies.
//
// Tests get conninfo strings; PgEnvironment starts one cluster per test binary
// and prints the server log's tail when a test fails.
#ifndef TENANTCACHE_TESTS_SUPPORT_PG_CLUSTER_H_
#define TENANTCACHE_TESTS_SUPPORT_PG_CLUSTER_H_

#include <libpq-fe.h>
#include <sys/types.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace tenantcache::test {

class PgError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class PgCluster {
 public:
  PgCluster();   // initdb + start; throws PgError with the tool's output
  ~PgCluster();  // immediate stop, directory removed
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  // "host=<socket dir> port=<port> dbname=<db> user=<user>".
  std::string Conninfo(const std::string& dbname = "postgres", const std::string& user = "postgres") const;
  const std::string& socket_dir() const { return socket_dir_; }
  int port() const { return port_; }
  // The server's binaries (pg_ctl, pg_basebackup, ...).
  const std::string& bin_dir() const { return bin_dir_; }
  // A fresh, empty database; its name.
  std::string CreateDatabase();
  // The last `bytes` of the server log, from offset `since` on.
  std::string LogTail(size_t bytes = 8000, size_t since = 0) const;
  // The server log's current size (an offset for LogTail).
  size_t LogSize() const;
  // pg_ctl restart (fast mode): every connection is dropped.
  void Restart();
  void Stop();

 private:
  void Run(const std::vector<std::string>& args, const std::string& what) const;
  void Start();

  std::string bin_dir_, root_, data_dir_, socket_dir_, log_file_;
  int port_ = 0;
  int next_db_ = 0;
  bool running_ = false;
};

// The cluster shared by the tests of one binary (started on first use).
PgCluster& SharedCluster();

// A libpq connection that throws PgError (with the server's message) on
// failure. Closed on destruction.
class PgConn {
 public:
  explicit PgConn(const std::string& conninfo);
  ~PgConn();
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  PGconn* get() const { return conn_; }
  // Runs one or more statements; returns the last result's rows as text
  // (NULL as "<null>"). Throws PgError on any error.
  std::vector<std::vector<std::string>> Exec(const std::string& sql);
  // The single value of a one-row, one-column query.
  std::string Scalar(const std::string& sql);
  // Runs `sql` expecting an error; returns its message (throws if none).
  std::string ExecError(const std::string& sql);

 private:
  PGconn* conn_;
};

// A LISTENing connection that collects notification payloads.
class PgListener {
 public:
  PgListener(const std::string& conninfo, const std::string& channel);
  // Every payload received within `wait` (returns early only at the deadline,
  // so use it to prove that nothing else arrives).
  std::vector<std::string> Drain(std::chrono::milliseconds wait);
  // Waits until `n` payloads arrived (or the deadline); returns all so far.
  std::vector<std::string> WaitFor(size_t n, std::chrono::milliseconds deadline = std::chrono::seconds(10));

 private:
  void Poll(std::chrono::milliseconds timeout);
  PgConn conn_;
  std::vector<std::string> pending_;
};

// The repository's sql/ directory.
std::string SqlDir();
// A free TCP port on the loopback interface.
int FreePort();
// A private directory for a throwaway server (a cluster, a standby, a
// PgBouncer): TC_PG_ROOT (or /tmp)/<prefix>-XXXXXX, mode 0755, with a sock/
// directory of mode `socket_mode`, both owned by the postgres user when the
// tests run as root (servers refuse to run as root).
std::string ServerRoot(const std::string& prefix, unsigned socket_mode);
// The text of a file.
std::string ReadFile(const std::string& path);

}  // namespace tenantcache::test

#endif  // TENANTCACHE_TESTS_SUPPORT_PG_CLUSTER_H_
