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

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "cache_layout.h"

namespace tenantcache {

struct KeyResult {
  size_t len = 0;               // normalised length, when ok
  const char* error = nullptr;  // static text, when not ok
  bool ok() const { return error == nullptr; }
};

// NormalizeKey without its fast path: every kind and every error.
KeyResult NormalizeAnyKey(uint32_t kind, uint32_t max_len, const char* in, size_t len, char* out);

#if defined(__SSE2__)
// 0xFF in each byte of `v` that is a hex digit, in either case. Range checks
// as one signed compare each: x + (0x80 - lo) is below -128 + n exactly when
// x is one of the n bytes from lo.
inline __m128i HexDigits(__m128i v) {
  const __m128i lower = _mm_or_si128(v, _mm_set1_epi8(0x20));
  const __m128i digit = _mm_cmplt_epi8(_mm_add_epi8(v, _mm_set1_epi8(static_cast<char>(0x80 - '0'))),
                                       _mm_set1_epi8(static_cast<char>(0x80 + 10)));
  const __m128i af = _mm_cmplt_epi8(_mm_add_epi8(lower, _mm_set1_epi8(static_cast<char>(0x80 - 'a'))),
                                    _mm_set1_epi8(static_cast<char>(0x80 + 6)));
  return _mm_or_si128(digit, af);
}

// One 16-byte step of CanonicalUuid: lower-cases `in` into `out` ('-' and
// the digits are unchanged) and returns 0xFF in each byte that is a hex
// digit where `dash` is 0, or '-' where it is 0xFF.
inline __m128i UuidStep(const unsigned char* in, char* out, __m128i dash) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_or_si128(v, _mm_set1_epi8(0x20)));
  const __m128i is_dash = _mm_cmpeq_epi8(v, _mm_set1_epi8('-'));
  return _mm_or_si128(_mm_andnot_si128(dash, HexDigits(v)), _mm_and_si128(dash, is_dash));
}

// The hit path's key: true when `in` (36 bytes) is a uuid in its hyphenated
// form, lower-cased into `out`. False leaves the verdict (and the error) to
// NormalizeAnyKey.
inline bool CanonicalUuid(const char* in, char* out) {
  const auto* u = reinterpret_cast<const unsigned char*>(in);
  // Dashes at 8, 13, 18 and 23: in the steps at 0, 16 and 20 (the last
  // rewrites 12 bytes with the same ones).
  const __m128i d0 = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 0, 0);
  const __m128i d1 = _mm_setr_epi8(0, 0, -1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m128i d2 = _mm_setr_epi8(0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m128i ok = _mm_and_si128(_mm_and_si128(UuidStep(u, out, d0), UuidStep(u + 16, out + 16, d1)),
                                   UuidStep(u + 20, out + 20, d2));
  return _mm_movemask_epi8(ok) == 0xFFFF;
}
#endif

// Normalises `in` of kind `kind` into `out`, which must hold kMaxKeyLen bytes.
// `max_len` bounds text keys (0 means kMaxKeyLen). Thread-safe, allocation-free.
// Inline, for the hit path: a canonical uuid is the common key.
inline KeyResult NormalizeKey(uint32_t kind, uint32_t max_len, const char* in, size_t len, char* out) {
#if defined(__SSE2__)
  if (kind == layout::kUuid && len == 36 && in != nullptr && CanonicalUuid(in, out))
    return KeyResult{36, nullptr};
#endif
  return NormalizeAnyKey(kind, max_len, in, len, out);
}

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
