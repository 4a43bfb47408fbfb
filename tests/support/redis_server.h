// A throwaway Redis for integration tests: Debian's redis-server (or
// TC_REDIS_SERVER) on 127.0.0.1 and a free port, no persistence, its files in
// a private temporary directory, as a child process. Stop (SIGKILL, a crash)
// and Start again on the same port is a failover as clients see it; Pause
// (SIGSTOP) leaves every connection open and silent.
#ifndef TENANTCACHE_TESTS_SUPPORT_REDIS_SERVER_H_
#define TENANTCACHE_TESTS_SUPPORT_REDIS_SERVER_H_

#include <sys/types.h>

#include <string>

#include "support/test_cache.h"

namespace tenantcache::test {

class RedisServer {
 public:
  RedisServer();  // started; throws std::runtime_error with its log when it does not answer
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // "127.0.0.1:<port>", the daemon's [[source]].redis.
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string Log() const;
  void Stop();    // SIGKILL, then waits for it
  void Start();   // on the same port; waits until it answers PING
  void Pause();   // SIGSTOP
  void Resume();  // SIGCONT
  // Runs one command with redis-cli (e.g. "PUBLISH ch msg"); its output.
  std::string Cli(const std::string& args) const;

 private:
  TempDir dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace tenantcache::test

#endif  // TENANTCACHE_TESTS_SUPPORT_REDIS_SERVER_H_
