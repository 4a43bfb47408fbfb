// The control socket: a unix stream socket speaking client/src/protocol.h.
// Peers are checked on their credentials (SO_PEERCRED). Every request is
// validated; a malformed or oversized one closes that connection only. A slow
// client cannot stall the loop: reads and writes are asynchronous, and a
// client whose unread answers pile up past kMaxQueuedBytes is disconnected.
#ifndef TENANTCACHE_DAEMON_CONTROL_H_
#define TENANTCACHE_DAEMON_CONTROL_H_

#include <uv.h>

#include <memory>
#include <set>
#include <string>

namespace tenantcache {

class Daemon;

class ControlServer {
 public:
  static constexpr size_t kMaxQueuedBytes = 4 << 20;

  explicit ControlServer(Daemon* daemon);
  ~ControlServer();

  // Binds config().control_socket (replacing a stale socket file) with its
  // mode. Throws std::runtime_error.
  void Start();
  void Stop();

  struct Client;

 private:
  static void OnConnection(uv_stream_t* server, int status);
  bool Allowed(int fd, std::string* who) const;

  Daemon* daemon_;
  uv_pipe_t* server_ = nullptr;
  std::set<std::shared_ptr<Client>> clients_;
};

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_CONTROL_H_
