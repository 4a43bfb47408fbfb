// A streaming hot standby of a test's PgCluster, for the tests of fills from
// read replicas: pg_basebackup -R of the primary (as "postgres" when the
// tests run as root, like initdb), its own data directory, socket directory
// and port, hot_standby on, recovery_min_apply_delay settable, replay
// pausable. Every wait has a deadline; nothing sleeps to synchronise.
#ifndef TENANTCACHE_TESTS_SUPPORT_STANDBY_H_
#define TENANTCACHE_TESTS_SUPPORT_STANDBY_H_

#include <chrono>
#include <string>

#include "support/pg_cluster.h"

namespace tenantcache::test {

class Standby {
 public:
  // Base backup of `primary` (every database it has now), started with
  // `apply_delay`; returns once it accepts connections and streams. Throws
  // PgError with the tool's output.
  explicit Standby(const PgCluster& primary, std::chrono::milliseconds apply_delay = {});
  ~Standby();  // immediate stop, directory removed
  Standby(const Standby&) = delete;
  Standby& operator=(const Standby&) = delete;

  std::string Conninfo(const std::string& dbname, const std::string& user = "postgres") const;
  // Sets recovery_min_apply_delay (reload); returns once the server uses it.
  void SetApplyDelay(std::chrono::milliseconds delay);
  // pg_wal_replay_pause() / pg_wal_replay_resume(); return once in force.
  void PauseReplay();
  void ResumeReplay();
  // Waits until it has replayed every transaction the primary committed
  // before the call; false at the deadline.
  bool CatchUp(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  std::string LogTail(size_t bytes = 6000) const;

 private:
  void Run(const std::string& command, const std::string& what) const;
  std::string Admin(const std::string& sql) const;  // one value, on database postgres
  std::string Poll(const std::string& sql) const;   // Admin, "" on any error (for waits)

  const PgCluster& primary_;
  std::string root_, data_dir_, socket_dir_, log_file_;
  int port_ = 0;
  bool running_ = false;
};

}  // namespace tenantcache::test

#endif  // TENANTCACHE_TESTS_SUPPORT_STANDBY_H_
