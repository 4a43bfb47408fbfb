// The real tenantcached binary as a child process, for integration tests: a
// config file written from the fleet example, a private NOTIFY_SOCKET to see
// READY/STOPPING exactly as systemd would, stderr captured to a file, and
// real signals.
#ifndef TENANTCACHE_TESTS_SUPPORT_DAEMON_PROCESS_H_
#define TENANTCACHE_TESTS_SUPPORT_DAEMON_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>

#include "support/test_cache.h"

namespace tenantcache::test {

// A config for the fleet example schema (sql/examples/fleet.sql) in `dir`.
// `extra` is appended (more [[namespace]] tables); `cache` and `source` add
// lines to those tables.
std::string FleetConfig(const std::string& dir, const std::string& conninfo, const std::string& cache = "",
                        const std::string& source = "", const std::string& extra = "");

class DaemonProcess {
 public:
  // Writes `config` to <dir>/tenantcached.toml and starts the daemon on it,
  // with `env` added to its environment.
  // With `nofile` non-zero, it runs with that RLIMIT_NOFILE (soft and hard).
  DaemonProcess(const std::string& dir, const std::string& config,
                const std::map<std::string, std::string>& env = {}, unsigned nofile = 0);
  ~DaemonProcess();  // SIGTERM, then SIGKILL if it does not exit

  // Waits for "READY=1" on the notify socket.
  bool WaitReady(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Waits for a notify message containing `what`.
  bool WaitNotify(const std::string& what, std::chrono::milliseconds timeout);
  void Signal(int sig);
  // Waits for the process to exit; its wait status, or nullopt on timeout.
  std::optional<int> Wait(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  pid_t pid() const { return pid_; }
  std::string Log() const;
  std::string config_path() const { return dir_ + "/tenantcached.toml"; }
  std::string cache_path() const { return dir_ + "/cache"; }
  // [control].socket of the config it runs on.
  std::string control_socket() const;
  void Rewrite(const std::string& config) const;

 private:
  std::string dir_;
  int notify_fd_ = -1;
  pid_t pid_ = -1;
  bool exited_ = false;
  std::optional<int> status_;
  std::string notified_;
};

// Runs tenantcached with `args`; its exit code and combined output.
CommandResult RunDaemonCommand(const std::string& args);

// Sends one request over the control socket at `socket_path`; the answer's
// payload (empty on any failure).
std::string ControlRequest(const std::string& socket_path, uint8_t op, const std::string& payload = "");

// The daemon's statistics (empty on failure).
std::map<std::string, std::string> DaemonStats(const DaemonProcess& d);

// Raw control-socket access, for what the client library never sends: a
// connected socket with a 5 s receive timeout, or -1.
int ConnectControl(const std::string& socket_path);
// Reads until the peer closes (true) or the receive timeout (false).
bool ClosedByPeer(int fd);

// The ids of sql/examples/fleet.sql's fleet.generate(): tenant n, user n.
std::string TenantId(int n);
std::string UserId(int n);

}  // namespace tenantcache::test

#endif  // TENANTCACHE_TESTS_SUPPORT_DAEMON_PROCESS_H_
