// Logging what peers can make the daemon say. Anything a database role can put
// in a NOTIFY payload, or a local user can send to the control socket, reaches
// the log only through these two: Printable() so that it cannot forge a line
// (or a terminal escape), LogLimiter so that a flood of it cannot flood the
// journal. A suppressed line is still counted, and the next line that is let
// through says how many were not logged.
#ifndef TENANTCACHE_DAEMON_LOG_LIMIT_H_
#define TENANTCACHE_DAEMON_LOG_LIMIT_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace tenantcache {

// `text` for a log line: printable ASCII kept, everything else (newlines,
// escapes, bytes >= 0x7f) written as \n, \t, \\ or \xHH, and cut after `max`
// input bytes with "..." appended.
std::string Printable(std::string_view text, size_t max = 200);

// At most one line per `every`. Not thread-safe (one per event-loop site).
class LogLimiter {
 public:
  // `what` names the suppressed lines in suffix() and TakeSummary(), e.g.
  // "peers refused".
  explicit LogLimiter(std::chrono::milliseconds every, std::string what = "lines")
      : every_(every), what_(std::move(what)) {}

  // True when a line may be logged now; then suffix() describes what was
  // suppressed since the last admitted line ("" when nothing was).
  bool Admit();
  const std::string& suffix() const { return suffix_; }
  // For a periodic timer, so that a flood that stopped is still summed up:
  // once `every` has passed since the last admitted line, "N more <what> in
  // the last S s" for the lines suppressed since (and they are then counted
  // as told); "" otherwise.
  std::string TakeSummary();

 private:
  std::chrono::milliseconds every_;
  std::string what_;
  std::chrono::steady_clock::time_point last_{};
  bool logged_ = false;
  uint64_t suppressed_ = 0;
  std::string suffix_;
};

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_LOG_LIMIT_H_
