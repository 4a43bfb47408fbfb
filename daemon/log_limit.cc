#include "log_limit.h"

#include <cstdio>

namespace tenantcache {

std::string Printable(std::string_view text, size_t max) {
  std::string out;
  const std::string_view shown = text.substr(0, max);
  out.reserve(shown.size() + 8);
  for (const char ch : shown) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c >= 0x7f) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += ch;
    }
  }
  if (text.size() > max) out += "...";
  return out;
}

namespace {

int64_t SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

bool LogLimiter::Admit() {
  const auto now = std::chrono::steady_clock::now();
  if (logged_ && now - last_ < every_) {
    ++suppressed_;
    return false;
  }
  suffix_ = suppressed_ == 0 ? std::string()
                             : " (+" + std::to_string(suppressed_) + " more " + what_ + " in the last " +
                                   std::to_string(SecondsSince(last_)) + " s not logged)";
  logged_ = true;
  last_ = now;
  suppressed_ = 0;
  return true;
}

std::string LogLimiter::TakeSummary() {
  const auto now = std::chrono::steady_clock::now();
  if (suppressed_ == 0 || now - last_ < every_) return {};
  std::string summary = std::to_string(suppressed_) + " more " + what_ + " in the last " +
                        std::to_string(SecondsSince(last_)) + " s";
  suppressed_ = 0;
  last_ = now;
  return summary;
}

}  // namespace tenantcache
