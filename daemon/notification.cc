#include "notification.h"

namespace tenantcache {
namespace {

Notification Malformed(const char* why) {
  Notification n;
  n.error = why;
  return n;
}

// Splits off the next space-terminated field.
bool NextField(std::string_view& rest, std::string_view* field) {
  const size_t sp = rest.find(' ');
  if (sp == std::string_view::npos) return false;
  *field = rest.substr(0, sp);
  rest.remove_prefix(sp + 1);
  return true;
}

bool ParseSeq(std::string_view s, std::optional<uint64_t>* out) {
  if (s == "-") {
    out->reset();
    return true;
  }
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

bool ValidNamespace(std::string_view ns) {
  if (ns.empty() || ns.size() > 63) return false;
  for (char c : ns)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

}  // namespace

Notification ParseNotification(std::string_view payload) {
  std::string_view rest = payload;
  std::string_view version, kind, seq;
  if (!NextField(rest, &version)) return Malformed("no version field");
  if (version != "1") return Malformed("unknown format version");
  if (!NextField(rest, &kind)) {
    kind = rest;
    rest = {};
    if (kind != "f") return Malformed("truncated message");
  }
  Notification n;
  if (kind == "h") {
    if (rest.empty()) return Malformed("heartbeat without token");
    n.kind = Notification::kHeartbeat;
    n.value = rest;
    return n;
  }
  if (kind == "f") {
    if (!ParseSeq(rest, &n.seq)) return Malformed("bad sequence number");
    n.kind = Notification::kFlush;
    return n;
  }
  if (!NextField(rest, &seq) || !ParseSeq(seq, &n.seq)) return Malformed("bad sequence number");
  if (kind == "t") {
    if (rest.empty()) return Malformed("tenant message without tenant id");
    n.kind = Notification::kTenant;
    n.value = rest;
    return n;
  }
  if (kind == "k") {
    if (!NextField(rest, &n.ns) || !ValidNamespace(n.ns)) return Malformed("bad namespace");
    if (rest.empty()) return Malformed("key message without key");
    n.kind = Notification::kKey;
    n.value = rest;
    return n;
  }
  return Malformed("unknown message kind");
}

}  // namespace tenantcache
