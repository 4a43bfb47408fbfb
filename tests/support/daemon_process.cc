#include "support/daemon_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "protocol.h"
#include "stats_format.h"
#include "support/pg_cluster.h"

namespace tenantcache::test {

std::string FleetConfig(const std::string& dir, const std::string& conninfo, const std::string& cache,
                        const std::string& source, const std::string& extra) {
  return "[daemon]\nlog_level = \"debug\"\n\n"
         "[cache]\npath = \"" +
         dir +
         "/cache\"\ncapacity = 10000\nstale_after = \"2s\"\n"
         "heartbeat_interval = \"200ms\"\n" +
         cache +
         "\n"
         "[control]\nsocket = \"" +
         dir +
         "/ctl.sock\"\n\n"
         "[[source]]\nname = \"main\"\nconninfo = \"" +
         conninfo +
         "\"\n"
         "reconnect_min = \"20ms\"\nreconnect_max = \"200ms\"\n" +
         source +
         "\n"
         "[[namespace]]\nname = \"user\"\nkind = \"uuid\"\n"
         "query = \"\"\"SELECT r.id::text AS tenant_id, r.yacht_code AS tenant_code, r.tenant_url, u.role\n"
         "  FROM fleet.user_accounts u JOIN fleet.fleet_registry r ON r.id = u.yacht_id\n"
         " WHERE u.id = $1::uuid AND u.active\"\"\"\n"
         "tenant_column = \"tenant_id\"\nfields = [\"tenant_code\", \"tenant_url\", \"role\"]\n\n"
         "[[namespace]]\nname = \"tenant\"\nkind = \"uuid\"\n"
         "query = \"SELECT id::text AS tenant_id, yacht_code, slug, host, tenant_url FROM "
         "fleet.fleet_registry "
         "WHERE id = $1::uuid\"\n"
         "tenant_column = \"tenant_id\"\nfields = [\"yacht_code\", \"slug\", \"host\", \"tenant_url\"]\n\n"
         "[[namespace]]\nname = \"tenant_by_slug\"\nkind = \"slug\"\n"
         "query = \"SELECT id::text AS tenant_id, yacht_code FROM fleet.fleet_registry WHERE slug = $1\"\n"
         "tenant_column = \"tenant_id\"\nfields = [\"yacht_code\"]\n\n"
         "[[namespace]]\nname = \"tenant_by_host\"\nkind = \"host\"\n"
         "query = \"SELECT id::text AS tenant_id, yacht_code FROM fleet.fleet_registry WHERE lower(host) = "
         "$1\"\n"
         "tenant_column = \"tenant_id\"\nfields = [\"yacht_code\"]\n\n" +
         extra;
}

DaemonProcess::DaemonProcess(const std::string& dir, const std::string& config,
                             const std::map<std::string, std::string>& env, unsigned nofile)
    : dir_(dir) {
  Rewrite(config);
  const std::string notify_path = dir + "/notify.sock";
  notify_fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", notify_path.c_str());
  unlink(notify_path.c_str());
  if (notify_fd_ < 0 || bind(notify_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw std::runtime_error("cannot bind the notify socket " + notify_path);
  const std::string log = dir + "/daemon.log";
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    setenv("NOTIFY_SOCKET", notify_path.c_str(), 1);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    if (nofile != 0) {
      const rlimit lim{nofile, nofile};
      if (setrlimit(RLIMIT_NOFILE, &lim) != 0) _exit(126);
    }
    const std::string cfg = config_path();
    execl(TC_DAEMON_BIN, "tenantcached", "--config", cfg.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
}

DaemonProcess::~DaemonProcess() {
  if (!exited_ && pid_ > 0) {
    // Every daemon a test started must stop cleanly on SIGTERM (exit 0: the
    // loop closed, and under the sanitizers, nothing leaked).
    kill(pid_, SIGTERM);
    const auto status = Wait(std::chrono::seconds(10));
    if (!status) {
      kill(pid_, SIGKILL);
      Wait(std::chrono::seconds(10));
      ADD_FAILURE() << "tenantcached did not stop on SIGTERM";
    } else if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      const std::string log = Log();
      ADD_FAILURE() << "tenantcached exited with status " << *status << " on SIGTERM:\n"
                    << log.substr(log.size() > 6000 ? log.size() - 6000 : 0);
    }
  }
  if (notify_fd_ >= 0) close(notify_fd_);
}

void DaemonProcess::Rewrite(const std::string& config) const {
  std::ofstream(config_path(), std::ios::trunc) << config;
}

bool DaemonProcess::WaitNotify(const std::string& what, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    // Everything already sent first: a daemon may send and exit at once.
    char buf[4096];
    for (ssize_t n; (n = recv(notify_fd_, buf, sizeof buf, 0)) > 0;)
      notified_.append(buf, static_cast<size_t>(n)).append("\n");
    const size_t at = notified_.find(what);
    if (at != std::string::npos) {
      notified_.erase(0, at + what.size());
      return true;
    }
    if (exited_) return false;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{notify_fd_, POLLIN, 0};
    poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 50)));
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      status_ = status;
    }
  }
}

bool DaemonProcess::WaitReady(std::chrono::milliseconds timeout) { return WaitNotify("READY=1", timeout); }

void DaemonProcess::Signal(int sig) { kill(pid_, sig); }

std::optional<int> DaemonProcess::Wait(std::chrono::milliseconds timeout) {
  if (exited_) return status_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      status_ = status;
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return std::nullopt;
}

std::string DaemonProcess::control_socket() const {
  const std::string config = ReadFile(config_path());
  const size_t table = config.find("[control]");
  const size_t at = config.find("socket = \"", table == std::string::npos ? 0 : table);
  if (at == std::string::npos) return "";
  const size_t begin = at + 10;
  return config.substr(begin, config.find('"', begin) - begin);
}

std::string DaemonProcess::Log() const {
  try {
    return ReadFile(dir_ + "/daemon.log");
  } catch (...) {
    return "";
  }
}

CommandResult RunDaemonCommand(const std::string& args) {
  return RunCommand(std::string(TC_DAEMON_BIN) + " " + args);
}

std::string ControlRequest(const std::string& socket_path, uint8_t op, const std::string& payload) {
  const int fd = ConnectControl(socket_path);
  if (fd < 0) return "";
  std::string out;
  protocol::AppendFrame(&out, op, 0, 42, payload);
  std::string in;
  if (send(fd, out.data(), out.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(out.size())) {
    char buf[4096];
    for (;;) {
      protocol::Frame f;
      size_t used = 0;
      const char* err = nullptr;
      if (protocol::ParseFrame(in, protocol::kMaxResponse, &f, &used, &err) == protocol::Parse::kFrame) {
        std::string answer(f.payload);
        close(fd);
        return answer;
      }
      const ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return "";
}

std::map<std::string, std::string> DaemonStats(const DaemonProcess& d) {
  return ParseFlatJson(ControlRequest(d.control_socket(), protocol::kStats));
}

int ConnectControl(const std::string& socket_path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", socket_path.c_str());
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

bool ClosedByPeer(int fd) {
  char b[64];
  for (;;) {
    const ssize_t n = recv(fd, b, sizeof b, 0);
    if (n == 0) return true;
    if (n < 0) return false;
  }
}

std::string TenantId(int n) {
  char b[64];
  std::snprintf(b, sizeof b, "00000000-0000-4000-8000-%012x", n);
  return b;
}

std::string UserId(int n) {
  char b[64];
  std::snprintf(b, sizeof b, "00000000-0001-4000-8000-%012x", n);
  return b;
}

}  // namespace tenantcache::test
