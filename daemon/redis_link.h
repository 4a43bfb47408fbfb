// One connection to Redis on the daemon's event loop (hiredis's async API on
// libuv, see Attach in redis_link.cc): a relay PUBLISHes on it, a subscriber
// SUBSCRIBEs.
// The address is "IP:PORT" or "unix:PATH": hiredis resolves host names
// synchronously, which the event loop must never wait for.
#ifndef TENANTCACHE_DAEMON_REDIS_LINK_H_
#define TENANTCACHE_DAEMON_REDIS_LINK_H_

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>

struct redisAsyncContext;
struct redisReply;

namespace tenantcache {

// Checks a Redis address: "" when it is one, else why not.
std::string RedisAddressError(const std::string& address);

class RedisLink {
 public:
  // Called with "" once connected (and, for Subscribe, subscribed), or with
  // why the connection is gone (then nothing more is sent or received).
  using OnState = std::function<void(const std::string& error)>;
  using OnMessage = std::function<void(std::string_view message)>;

  RedisLink(uv_loop_t* loop, std::string name) : loop_(loop), name_(std::move(name)) {}
  ~RedisLink();
  RedisLink(const RedisLink&) = delete;
  RedisLink& operator=(const RedisLink&) = delete;

  void set_on_state(OnState cb) { on_state_ = std::move(cb); }
  // AUTH sent first on every connection when `password` is not empty, naming
  // `user` unless it is empty (Redis's default user then).
  void set_auth(std::string user, std::string password) {
    user_ = std::move(user);
    password_ = std::move(password);
  }
  // Connects, then (when `subscribe_channel` is not empty) subscribes to it
  // and passes every message on it to `on_message`.
  void Connect(const std::string& address, const std::string& subscribe_channel = "",
               OnMessage on_message = nullptr);
  void Disconnect();
  bool ready() const { return ready_; }
  // PUBLISH, in order. False when not ready; a failed PUBLISH, more than
  // kMaxUnanswered waiting for Redis, or one unanswered for longer than the
  // reply timeout (a hung Redis, or a peer gone without a reset, whose socket
  // only buffers), drops the connection (on_state says why).
  bool Publish(const std::string& channel, std::string_view message);
  void set_reply_timeout(std::chrono::milliseconds t) { reply_timeout_ = t; }

  static constexpr uint64_t kMaxUnanswered = 100000;

 private:
  static void OnConnect(const redisAsyncContext* ac, int status);
  static void OnDisconnect(const redisAsyncContext* ac, int status);
  static void OnPublished(redisAsyncContext* ac, void* reply, void* privdata);
  static void OnSubscription(redisAsyncContext* ac, void* reply, void* privdata);
  static void OnAuth(redisAsyncContext* ac, void* reply, void* privdata);
  // The opening every reply callback shares: the link a reply is for, or
  // null when there is nothing to handle (the link is gone, or hiredis gave
  // no reply because the connection is going away).
  static RedisLink* Of(redisAsyncContext* ac, void* reply);
  // An error reply drops the connection and reports it lost as `what`, the
  // error, and `hint` (when empty, what an AUTH error means). True when it
  // was one.
  bool Refused(const redisReply* r, const std::string& what, const std::string& hint = {});
  // Ready to publish (a subscriber is ready once subscribed).
  void PublisherReady();
  void Lost(const std::string& why);
  void StopTimer();

  // A connect that has not completed in this time is given up (a host that
  // drops packets leaves it pending for minutes).
  static constexpr uint64_t kConnectTimeoutMs = 2000;

  uv_loop_t* loop_;
  std::string name_;
  uv_timer_t* connect_timer_ = nullptr;
  redisAsyncContext* ac_ = nullptr;
  bool ready_ = false;
  std::string channel_;
  std::string user_, password_;
  OnMessage on_message_;
  OnState on_state_;
  // When each unanswered PUBLISH was sent, oldest first.
  std::deque<std::chrono::steady_clock::time_point> unanswered_;
  std::chrono::milliseconds reply_timeout_{5000};
};

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_REDIS_LINK_H_
