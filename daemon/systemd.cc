#include "systemd.h"

#if defined(TC_HAVE_SYSTEMD)
#include <systemd/sd-daemon.h>

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>
#endif

namespace tenantcache::systemd {

#if defined(TC_HAVE_SYSTEMD)
namespace {

// sd_notify sends a datagram with a blocking sendmsg: when the receiver does
// not read (the kernel queues only net.unix.max_dgram_qlen datagrams, 10 by
// default), it blocks. The event loop must never block, so messages go
// through a queue to one thread that sends them, in order. A STATUS replaces
// a STATUS queued last, a WATCHDOG ping is dropped while one is queued, and
// when the receiver keeps the queue full the oldest message gives way (what
// follows it supersedes it: a later READY, STOPPING or STATUS).
class Notifier {
 public:
  enum Kind { kState, kStatus, kWatchdog };

  void Post(std::string message, Kind kind) {
    std::lock_guard lock(mu_);
    if (!thread_.joinable()) {
      try {
        thread_ = std::thread([this] { Run(); });
      } catch (const std::system_error&) {
        return;  // no thread: systemd misses this message, the loop goes on
      }
    }
    if (kind == kStatus && !queue_.empty() && queue_.back().kind == kStatus) {
      queue_.back().message = std::move(message);
      return;
    }
    if (kind == kWatchdog)
      for (const auto& q : queue_)
        if (q.kind == kWatchdog) return;
    if (queue_.size() >= kMaxQueued) queue_.pop_front();
    queue_.push_back({std::move(message), kind});
    cv_.notify_all();
  }

  // Waits up to `timeout` for everything queued to be sent, then ends the
  // thread (or leaves it, when the receiver keeps it blocked: exit ends it).
  void Finish(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    if (!thread_.joinable()) return;
    const bool sent = cv_.wait_for(lock, timeout, [this] { return queue_.empty() && !sending_; });
    stop_ = true;
    cv_.notify_all();
    lock.unlock();
    if (sent)
      thread_.join();
    else
      thread_.detach();
  }

 private:
  static constexpr size_t kMaxQueued = 16;
  struct Message {
    std::string message;
    Kind kind;
  };

  void Run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping
      const std::string message = std::move(queue_.front().message);
      queue_.pop_front();
      sending_ = true;
      lock.unlock();
      sd_notify(0, message.c_str());
      lock.lock();
      sending_ = false;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Message> queue_;
  bool sending_ = false, stop_ = false;
  std::thread thread_;
};

// Never destroyed: its thread may still be blocked in sendmsg at exit.
Notifier* const notifier = std::getenv("NOTIFY_SOCKET") != nullptr ? new Notifier : nullptr;

void Notify(std::string state, Notifier::Kind kind) {
  if (notifier != nullptr) notifier->Post(std::move(state), kind);
}

}  // namespace

void Ready(const std::string& status) { Notify("READY=1\nSTATUS=" + status, Notifier::kState); }
void Reloading() { Notify("RELOADING=1", Notifier::kState); }
void Stopping() { Notify("STOPPING=1\nSTATUS=stopping", Notifier::kState); }
void Status(const std::string& status) { Notify("STATUS=" + status, Notifier::kStatus); }
void WatchdogPing() { Notify("WATCHDOG=1", Notifier::kWatchdog); }
void Finish(std::chrono::milliseconds timeout) {
  if (notifier != nullptr) notifier->Finish(timeout);
}
uint64_t WatchdogUsec() {
  uint64_t usec = 0;
  return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}
#else
void Ready(const std::string&) {}
void Reloading() {}
void Stopping() {}
void Status(const std::string&) {}
void WatchdogPing() {}
void Finish(std::chrono::milliseconds) {}
uint64_t WatchdogUsec() { return 0; }
#endif

}  // namespace tenantcache::systemd
