// Key kinds: validation and normalisation of untrusted keys, shared by the
// writer (which stores normalised keys) and the readers (which normalise what
// a request handed them before hashing). A key that fails is an error to the
// caller and never reaches the cache or the database.
//
//   uuid  8-4-4-4-12 hex digits, also accepted braced ({...}) or as 32 bare
//         digits, any case; normalised to the canonical 36-byte lower case.
//   slug  [a-z0-9-]{1,63}; ASCII upper case is folded to lower case.
//   host  an RFC 1123 host name: labels of [a-z0-9-], 1-63 bytes, not starting
//         or ending with '-', at most 253 bytes in all. Upper case is folded,
//         one trailing dot is dropped, and a ":port" suffix (1-65535) as found
//         in an HTTP Host header is removed.
//   text  1..max_len bytes (at most 255) of valid UTF-8 without NUL, kept as
//         given.
#ifndef TENANTCACHE_KEYS_H_
#define TENANTCACHE_KEYS_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cache_layout.h"

namespace tenantcache {

struct KeyResult {
  size_t len = 0;               // normalised length, when ok
  const char* error = nullptr;  // static text, when not ok
  bool ok() const { return error == nullptr; }
};

// Normalises `in` of kind `kind` into `out`, which must hold kMaxKeyLen bytes.
// `max_len` bounds text keys (0 means kMaxKeyLen). Thread-safe, allocation-free.
KeyResult NormalizeKey(uint32_t kind, uint32_t max_len, const char* in, size_t len, char* out);

// Normalises a tenant id as given by an operator or a caller to the text the
// cache stores: the tenant column as PostgreSQL prints it. Uuid-shaped input
// (bare 32 hex digits, braced, any case) becomes the canonical lower-case
// hyphenated form, which is how PostgreSQL prints a uuid column; anything
// else is kept as given. Refused: empty, a control character or invalid
// UTF-8 (PostgreSQL text holds neither), and more than kMaxTenantLen bytes
// (no cached entry can hold it). `out` must hold kMaxTenantLen bytes.
inline constexpr size_t kMaxTenantLen = layout::kMaxDataSize;
KeyResult NormalizeTenant(const char* in, size_t len, char* out);

// Whether `len` bytes are well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF).
bool ValidUtf8(const unsigned char* s, size_t len);

// "uuid", "slug", "host", "text" <-> layout::KeyKind. ParseKeyKind returns 0
// for an unknown name; KeyKindName returns "unknown" for an unknown kind.
uint32_t ParseKeyKind(std::string_view name);
const char* KeyKindName(uint32_t kind);

}  // namespace tenantcache

#endif  // TENANTCACHE_KEYS_H_
