#include "redis_link.h"

#include <arpa/inet.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <charconv>
#include <cstring>

#include "uv_handle.h"

namespace tenantcache {
namespace {

struct Address {
  std::string ip, unix_path;
  int port = 0;
};

bool Parse(const std::string& address, Address* out, std::string* why) {
  if (address.rfind("unix:", 0) == 0) {
    out->unix_path = address.substr(5);
    if (out->unix_path.empty() || out->unix_path.size() >= sizeof(sockaddr_un{}.sun_path)) {
      *why = "a unix socket path of 1 to 107 bytes after \"unix:\"";
      return false;
    }
    return true;
  }
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    *why = "IP:PORT (an IP address: the daemon does not resolve host names for Redis) or unix:PATH";
    return false;
  }
  std::string ip = address.substr(0, colon);
  if (ip.size() > 2 && ip.front() == '[' && ip.back() == ']') ip = ip.substr(1, ip.size() - 2);
  unsigned char buf[sizeof(in6_addr)];
  if (inet_pton(AF_INET, ip.c_str(), buf) != 1 && inet_pton(AF_INET6, ip.c_str(), buf) != 1) {
    *why =
        "IP:PORT with an IP address (\"" + ip +
        "\" is not one: the daemon does not resolve host names for Redis, which would block its event loop) "
        "or unix:PATH";
    return false;
  }
  const std::string port = address.substr(colon + 1);
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), out->port);
  if (ec != std::errc() || end != port.data() + port.size() || out->port < 1 || out->port > 65535) {
    *why = "IP:PORT with a port from 1 to 65535";
    return false;
  }
  out->ip = ip;
  return true;
}

// The libuv glue for hiredis's async context. Debian bookworm's hiredis
// (0.14) has a libuv adapter whose poll callback returns on an error status;
// but libuv reports a refused connect or a reset connection exactly so (a
// negative status, no events) and stops watching the socket, so the context
// never learns that its connection is gone: a relay would go on "publishing"
// into a dead socket. Here an error status hands the socket to hiredis as
// readable and writable, and hiredis finds the error when it reads or writes
// (later hiredis versions do the same).
struct UvEvents {
  redisAsyncContext* context;
  uv_poll_t poll;
  int events;
};

void OnPoll(uv_poll_t* handle, int status, int events) {
  auto* e = static_cast<UvEvents*>(handle->data);
  const int ready = status < 0 ? e->events : events;
  if (e->context != nullptr && (ready & UV_READABLE) != 0) redisAsyncHandleRead(e->context);
  if (e->context != nullptr && (ready & UV_WRITABLE) != 0) redisAsyncHandleWrite(e->context);
}

void Watch(UvEvents* e, int add, int remove) {
  e->events = (e->events | add) & ~remove;
  if (e->events != 0)
    uv_poll_start(&e->poll, e->events, OnPoll);
  else
    uv_poll_stop(&e->poll);
}

bool Attach(redisAsyncContext* ac, uv_loop_t* loop) {
  if (ac->ev.data != nullptr) return false;
  auto* e = new UvEvents{ac, {}, 0};
  if (uv_poll_init(loop, &e->poll, ac->c.fd) != 0) {
    delete e;
    return false;
  }
  e->poll.data = e;
  ac->ev.data = e;
  ac->ev.addRead = [](void* p) { Watch(static_cast<UvEvents*>(p), UV_READABLE, 0); };
  ac->ev.delRead = [](void* p) { Watch(static_cast<UvEvents*>(p), 0, UV_READABLE); };
  ac->ev.addWrite = [](void* p) { Watch(static_cast<UvEvents*>(p), UV_WRITABLE, 0); };
  ac->ev.delWrite = [](void* p) { Watch(static_cast<UvEvents*>(p), 0, UV_WRITABLE); };
  // The context is being freed: the handle goes once libuv has closed it.
  ac->ev.cleanup = [](void* p) {
    auto* ev = static_cast<UvEvents*>(p);
    ev->context = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&ev->poll),
             [](uv_handle_t* h) { delete static_cast<UvEvents*>(h->data); });
  };
  return true;
}

// What to do about a command Redis refused for want of AUTH.
std::string NoAuthHint(const std::string& err) {
  return err.rfind("NOAUTH", 0) == 0 ? " (Redis requires a password: set redis_password_file)" : "";
}

}  // namespace

std::string RedisAddressError(const std::string& address) {
  Address a;
  std::string why;
  return Parse(address, &a, &why) ? "" : why;
}

RedisLink::~RedisLink() {
  Disconnect();
  CloseTimer(connect_timer_);
}

void RedisLink::StopTimer() {
  if (connect_timer_ != nullptr) uv_timer_stop(connect_timer_);
}

void RedisLink::Connect(const std::string& address, const std::string& subscribe_channel,
                        OnMessage on_message) {
  Disconnect();
  channel_ = subscribe_channel;
  on_message_ = std::move(on_message);
  Address a;
  std::string why;
  if (!Parse(address, &a, &why)) {
    Lost("bad address \"" + address + "\": " + why);
    return;
  }
  redisAsyncContext* ac = a.unix_path.empty() ? redisAsyncConnect(a.ip.c_str(), a.port)
                                              : redisAsyncConnectUnix(a.unix_path.c_str());
  if (ac == nullptr) {
    Lost("cannot allocate a Redis connection");
    return;
  }
  if (ac->err != 0) {
    const std::string err = ac->errstr;
    redisAsyncFree(ac);
    Lost("cannot connect to " + address + ": " + err);
    return;
  }
  if (!Attach(ac, loop_)) {
    redisAsyncFree(ac);
    Lost("cannot watch the Redis connection on the event loop");
    return;
  }
  ac->data = this;
  ac_ = ac;
  unanswered_.clear();
  redisAsyncSetConnectCallback(ac, &RedisLink::OnConnect);
  redisAsyncSetDisconnectCallback(ac, &RedisLink::OnDisconnect);
  // Commands issued before the connection completes are sent in order once
  // it does: AUTH goes first.
  if (!password_.empty()) {
    if (user_.empty())
      redisAsyncCommand(ac, &RedisLink::OnAuth, nullptr, "AUTH %b", password_.data(), password_.size());
    else
      redisAsyncCommand(ac, &RedisLink::OnAuth, nullptr, "AUTH %b %b", user_.data(), user_.size(),
                        password_.data(), password_.size());
  }
  if (!channel_.empty())
    redisAsyncCommand(ac, &RedisLink::OnSubscription, nullptr, "SUBSCRIBE %b", channel_.data(),
                      channel_.size());
  if (connect_timer_ == nullptr) connect_timer_ = NewTimer(loop_, this);
  uv_timer_start(
      connect_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<RedisLink*>(t->data);
        if (self->ready_) return;
        self->Disconnect();
        self->Lost("no connection within " + std::to_string(kConnectTimeoutMs) + " ms");
      },
      kConnectTimeoutMs, 0);
}

void RedisLink::Disconnect() {
  ready_ = false;
  StopTimer();
  if (ac_ == nullptr) return;
  redisAsyncContext* ac = ac_;
  ac_ = nullptr;
  ac->data = nullptr;  // the callbacks run while freeing are not ours any more
  redisAsyncFree(ac);
}

void RedisLink::Lost(const std::string& why) {
  ready_ = false;
  StopTimer();
  if (on_state_) on_state_(why);
}

void RedisLink::OnConnect(const redisAsyncContext* ac, int status) {
  auto* self = static_cast<RedisLink*>(ac->data);
  if (self == nullptr) return;
  if (status != REDIS_OK) {
    // hiredis frees the context after this callback.
    self->ac_ = nullptr;
    self->Lost(std::string("cannot connect: ") + ac->errstr);
    return;
  }
  // A publisher is ready now, or once authenticated; a subscriber once
  // subscribed.
  if (self->password_.empty()) self->PublisherReady();
}

void RedisLink::PublisherReady() {
  if (!channel_.empty()) return;
  ready_ = true;
  if (on_state_) on_state_("");
}

RedisLink* RedisLink::Of(redisAsyncContext* ac, void* reply) {
  return reply == nullptr ? nullptr : static_cast<RedisLink*>(ac->data);
}

bool RedisLink::Refused(const redisReply* r, const std::string& what, const std::string& hint) {
  if (r->type != REDIS_REPLY_ERROR) return false;
  const std::string err(r->str, r->len);
  Disconnect();
  Lost(what + ": " + err + (hint.empty() ? NoAuthHint(err) : hint));
  return true;
}

void RedisLink::OnAuth(redisAsyncContext* ac, void* reply, void* /*privdata*/) {
  RedisLink* self = Of(ac, reply);
  if (self == nullptr) return;
  if (self->Refused(static_cast<redisReply*>(reply),
                    "Redis refused AUTH" + (self->user_.empty() ? std::string() : " as user " + self->user_),
                    " (check redis_user and redis_password_file)"))
    return;
  self->PublisherReady();
}

void RedisLink::OnDisconnect(const redisAsyncContext* ac, int status) {
  auto* self = static_cast<RedisLink*>(ac->data);
  if (self == nullptr) return;
  self->ac_ = nullptr;  // freed by hiredis after this callback
  // A subscriber's refused SUBSCRIBE arrives here: hiredis treats an error
  // reply in subscribe mode as the connection's error.
  self->Lost(status == REDIS_OK ? std::string("closed")
                                : std::string("lost: ") + ac->errstr + NoAuthHint(ac->errstr));
}

bool RedisLink::Publish(const std::string& channel, std::string_view message) {
  if (!ready_ || ac_ == nullptr) return false;
  const auto now = std::chrono::steady_clock::now();
  if (!unanswered_.empty() && now - unanswered_.front() > reply_timeout_) {
    Disconnect();
    Lost("Redis answered no PUBLISH for " +
         std::to_string(
             std::chrono::duration_cast<std::chrono::milliseconds>(now - unanswered_.front()).count()) +
         " ms");
    return false;
  }
  if (unanswered_.size() >= kMaxUnanswered) {
    Disconnect();
    Lost("Redis did not keep up: " + std::to_string(kMaxUnanswered) + " PUBLISH commands unanswered");
    return false;
  }
  if (redisAsyncCommand(ac_, &RedisLink::OnPublished, nullptr, "PUBLISH %b %b", channel.data(),
                        channel.size(), message.data(), message.size()) != REDIS_OK) {
    Disconnect();
    Lost("PUBLISH could not be sent");
    return false;
  }
  unanswered_.push_back(now);
  return true;
}

void RedisLink::OnPublished(redisAsyncContext* ac, void* reply, void* /*privdata*/) {
  RedisLink* self = Of(ac, reply);
  if (self == nullptr) return;
  if (!self->unanswered_.empty()) self->unanswered_.pop_front();
  self->Refused(static_cast<redisReply*>(reply), "PUBLISH failed");
}

void RedisLink::OnSubscription(redisAsyncContext* ac, void* reply, void* /*privdata*/) {
  RedisLink* self = Of(ac, reply);
  if (self == nullptr) return;
  auto* r = static_cast<redisReply*>(reply);
  if (self->Refused(r, "SUBSCRIBE failed")) return;
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || r->element[0]->type != REDIS_REPLY_STRING) return;
  const std::string_view kind(r->element[0]->str, r->element[0]->len);
  if (kind == "subscribe") {
    self->ready_ = true;
    if (self->on_state_) self->on_state_("");
  } else if (kind == "message" && r->element[2]->type == REDIS_REPLY_STRING && self->on_message_) {
    self->on_message_(std::string_view(r->element[2]->str, r->element[2]->len));
  }
}

}  // namespace tenantcache
