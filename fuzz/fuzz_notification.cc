// libFuzzer target: NOTIFY payloads as the listener receives them. Checks that
// parsing never fails unsafely and that what it accepts is exactly the
// documented format (sql/install.sql): rebuilding the payload from the parsed
// fields gives the input back.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "notification.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

bool Inside(std::string_view part, std::string_view whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A heap copy of exactly `size` bytes, so ASan sees any read past the end.
  const std::string payload(reinterpret_cast<const char*>(data), size);
  const std::string_view p(payload);
  const tenantcache::Notification n = tenantcache::ParseNotification(p);
  using N = tenantcache::Notification;
  Check(Inside(n.ns, p) && Inside(n.value, p));
  // The sequence field as sent: "-" or decimal digits (leading zeros are
  // accepted) that parsed to n.seq.
  std::string seq;
  if (n.kind == N::kKey || n.kind == N::kTenant || n.kind == N::kFlush) {
    const std::string_view rest = p.substr(std::min<size_t>(4, p.size()));
    seq = std::string(rest.substr(0, rest.find(' ')));
    if (n.seq) {
      Check(!seq.empty() && seq.find_first_not_of("0123456789") == std::string::npos);
      Check(std::strtoull(seq.c_str(), nullptr, 10) == *n.seq);
    } else {
      Check(seq == "-");
    }
  }
  switch (n.kind) {
    case N::kMalformed:
      Check(n.error != nullptr && n.error[0] != '\0');
      break;
    case N::kKey:
      Check(!n.ns.empty());
      Check(p == "1 k " + seq + " " + std::string(n.ns) + " " + std::string(n.value));
      break;
    case N::kTenant:
      Check(p == "1 t " + seq + " " + std::string(n.value));
      break;
    case N::kFlush:
      Check(p == "1 f " + seq);
      break;
    case N::kHeartbeat:
      Check(!n.seq && p == "1 h " + std::string(n.value));
      break;
  }
  return 0;
}
