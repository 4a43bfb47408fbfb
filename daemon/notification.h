// Parsing of NOTIFY payloads (format version 1, see sql/install.sql):
//
//   1 k <seq> <namespace> <key>    1 t <seq> <tenant id>    1 f <seq>    1 h <token>
//
// <seq> is a decimal sequence number or "-". The last field is the rest of the
// payload, verbatim. Anything else is malformed; the caller treats a malformed
// message as a flush (it cannot know what the sender meant to invalidate).
#ifndef TENANTCACHE_DAEMON_NOTIFICATION_H_
#define TENANTCACHE_DAEMON_NOTIFICATION_H_

#include <cstdint>
#include <optional>
#include <string_view>

namespace tenantcache {

struct Notification {
  enum Kind { kKey, kTenant, kFlush, kHeartbeat, kMalformed } kind = kMalformed;
  std::optional<uint64_t> seq;  // absent for "-" and for heartbeats
  std::string_view ns;          // kKey
  std::string_view value;       // kKey: the key; kTenant: the id; kHeartbeat: the token
  const char* error = nullptr;  // kMalformed: why
};

// Views point into `payload`.
Notification ParseNotification(std::string_view payload);

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_NOTIFICATION_H_
