// libFuzzer target: the key validators/normalisers every lookup key passes
// through (client, daemon and writer). The first byte picks the kind, the
// second the text length bound; the rest is the key. Checks: no out-of-bounds
// access, a clear error for a refused key, and for an accepted one a bounded,
// canonical result that normalises to itself; and NormalizeKey's inline fast
// path (a 36-character uuid) gives what the full check gives.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "keys.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace layout = tenantcache::layout;
  if (size < 2) return 0;
  const uint32_t kind = data[0] % 6;  // 0 and 5 are unknown kinds
  const uint32_t max_len = data[1];
  const size_t len = size - 2;
  // An exact-size heap copy so that ASan catches a read past the key.
  auto in = std::make_unique<char[]>(len == 0 ? 1 : len);
  std::memcpy(in.get(), data + 2, len);
  char out[layout::kMaxKeyLen];
  const auto r = tenantcache::NormalizeKey(kind, max_len, in.get(), len, out);
  char full[layout::kMaxKeyLen];
  const auto f = tenantcache::NormalizeAnyKey(kind, max_len, in.get(), len, full);
  Check(r.ok() == f.ok() && (!r.ok() || (r.len == f.len && std::memcmp(out, full, r.len) == 0)));
  if (!r.ok()) {
    Check(r.error[0] != '\0');
    return 0;
  }
  Check(kind >= layout::kUuid && kind <= layout::kText);
  Check(r.len >= 1 && r.len <= layout::kMaxKeyLen);
  if (kind == layout::kUuid) Check(r.len == 36);
  if (kind == layout::kText) Check(r.len == len && r.len <= (max_len == 0 ? layout::kMaxKeyLen : max_len));
  if (kind != layout::kText) {
    for (size_t i = 0; i < r.len; ++i) Check(!(out[i] >= 'A' && out[i] <= 'Z'));
  }
  char again[layout::kMaxKeyLen];
  const auto r2 = tenantcache::NormalizeKey(kind, max_len, out, r.len, again);
  Check(r2.ok() && r2.len == r.len && std::memcmp(out, again, r.len) == 0);
  return 0;
}
