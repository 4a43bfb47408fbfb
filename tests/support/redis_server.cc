#include "support/redis_server.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "support/pg_cluster.h"
#include "support/test_cache.h"

namespace tenantcache::test {
namespace {

std::string Binary() {
  const char* b = std::getenv("TC_REDIS_SERVER");
  return b != nullptr && *b != '\0' ? b : "/usr/bin/redis-server";
}

}  // namespace

RedisServer::RedisServer() : port_(FreePort()) { Start(); }

RedisServer::~RedisServer() {
  Resume();
  Stop();
}

std::string RedisServer::Log() const { return ReadFile(dir_.File("redis.log")); }

void RedisServer::Start() {
  if (pid_ > 0) return;
  const std::string binary = Binary();
  const std::string port = std::to_string(port_);
  const std::string log = dir_.File("redis.log");
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork: " + std::string(std::strerror(errno)));
  if (pid == 0) {
    if (freopen("/dev/null", "w", stdout) == nullptr) _exit(125);
    execl(binary.c_str(), "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1", "--save", "",
          "--appendonly", "no", "--dir", dir_.path().c_str(), "--logfile", log.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  pid_ = pid;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("redis-server exited at start (status " + std::to_string(status) + "):\n" +
                               Log());
    }
    if (Cli("PING").find("PONG") != std::string::npos) return;
    // Polling a process that is starting: nothing to wait on but its port.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Stop();
  throw std::runtime_error("redis-server did not answer PING within 20 s:\n" + Log());
}

void RedisServer::Stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

void RedisServer::Pause() {
  if (pid_ > 0) kill(pid_, SIGSTOP);
}

void RedisServer::Resume() {
  if (pid_ > 0) kill(pid_, SIGCONT);
}

std::string RedisServer::Cli(const std::string& args) const {
  return RunCommand("redis-cli -h 127.0.0.1 -p " + std::to_string(port_) + " " + args + " 2>&1").output;
}

}  // namespace tenantcache::test
