#include "keys.h"

#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace tenantcache {
namespace {

constexpr size_t kSlugMax = 63;
constexpr size_t kHostMax = 253;
constexpr size_t kLabelMax = 63;

// Character classes, one table lookup per byte on the hot path.
struct Tables {
  char hex_lower[256];   // canonical hex digit, or 0 for a non-hex byte
  char host_lower[256];  // lower-cased [a-z0-9-.], or 0
  constexpr Tables() : hex_lower(), host_lower() {
    for (int c = '0'; c <= '9'; ++c) hex_lower[c] = host_lower[c] = static_cast<char>(c);
    for (int c = 'a'; c <= 'f'; ++c) hex_lower[c] = hex_lower[c - 32] = static_cast<char>(c);
    for (int c = 'a'; c <= 'z'; ++c) host_lower[c] = host_lower[c - 32] = static_cast<char>(c);
    host_lower[static_cast<int>('-')] = '-';
    host_lower[static_cast<int>('.')] = '.';
  }
};
constexpr Tables kTables;

inline unsigned char Lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<unsigned char>(c | 0x20) : c;
}

KeyResult Fail(const char* why) { return KeyResult{0, why}; }

// Lower-cases `n` (16 or fewer) bytes of `in` into `out` and reports whether
// each is a hex digit, or one of the '-' positions in `dash_mask` (bit i set:
// byte i must be '-'; it is checked by the caller).
#if defined(__SSE2__)
inline bool HexLower16(const unsigned char* in, char* out, unsigned dash_mask) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_or_si128(v, _mm_set1_epi8(0x20)));
  const auto ok = static_cast<unsigned>(_mm_movemask_epi8(HexDigits(v)));
  return (ok | dash_mask) == 0xFFFF;
}
#endif

bool HexLower(const unsigned char* in, char* out, size_t n, unsigned dash_mask) {
  bool ok = true;
  size_t i = 0;
#if defined(__SSE2__)
  for (; i + 16 <= n; i += 16, dash_mask >>= 16) ok &= HexLower16(in + i, out + i, dash_mask & 0xFFFF);
#endif
  for (; i < n; ++i, dash_mask >>= 1) {
    const char c = (dash_mask & 1) ? '-' : kTables.hex_lower[in[i]];
    out[i] = c;
    ok &= c != 0;
  }
  return ok;
}

KeyResult NormalizeUuid(const char* in, size_t len, char* out) {
  if (len == 38 && in[0] == '{' && in[37] == '}') {
    ++in;
    len -= 2;
  }
  const auto* u = reinterpret_cast<const unsigned char*>(in);
  if (len == 36) {
    if (in[8] != '-' || in[13] != '-' || in[18] != '-' || in[23] != '-')
      return Fail("uuid has a misplaced '-'");
#if defined(__SSE2__)
    const bool hex = CanonicalUuid(in, out);
#else
    constexpr uint64_t kDashes = (1ull << 8) | (1ull << 13) | (1ull << 18) | (1ull << 23);
    // The last 4 characters are done as the 16 ending the string (its last
    // dash at 23 = 20 + 3), which rewrites 12 already done with the same bytes.
    const bool hex = HexLower(u, out, 32, static_cast<unsigned>(kDashes)) &&
                     HexLower(u + 20, out + 20, 16, static_cast<unsigned>(kDashes >> 20));
#endif
    if (!hex) return Fail("uuid has a character that is not a hex digit");
    return KeyResult{36, nullptr};
  }
  if (len != 32) return Fail("uuid must be 36 characters (8-4-4-4-12) or 32 hex digits");
  char digits[32];
  if (!HexLower(u, digits, 32, 0)) return Fail("uuid has a character that is not a hex digit");
  std::memcpy(out, digits, 8);
  std::memcpy(out + 9, digits + 8, 4);
  std::memcpy(out + 14, digits + 12, 4);
  std::memcpy(out + 19, digits + 16, 4);
  std::memcpy(out + 24, digits + 20, 12);
  out[8] = out[13] = out[18] = out[23] = '-';
  return KeyResult{36, nullptr};
}

KeyResult NormalizeSlug(const char* in, size_t len, char* out) {
  if (len == 0) return Fail("slug is empty");
  if (len > kSlugMax) return Fail("slug is longer than 63 bytes");
  for (size_t i = 0; i < len; ++i) {
    const unsigned char c = Lower(static_cast<unsigned char>(in[i]));
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
      return Fail("slug may contain only a-z, 0-9 and '-'");
    out[i] = static_cast<char>(c);
  }
  return KeyResult{len, nullptr};
}

// Strips ":port" when what follows the last ':' is a port number. A second
// ':' (an IPv6 literal) is left for the label check to refuse.
size_t StripPort(const char* in, size_t len, bool* bad_port) {
  *bad_port = false;
  size_t colon = len;
  for (size_t i = 0; i < len; ++i) {
    if (in[i] == ':') {
      if (colon != len) return len;
      colon = i;
    }
  }
  if (colon == len) return len;
  const size_t digits = len - colon - 1;
  uint32_t port = 0;
  for (size_t i = colon + 1; i < len; ++i) {
    const char c = in[i];
    if (c < '0' || c > '9' || port > 65535) {
      *bad_port = true;
      return len;
    }
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (digits == 0 || digits > 5 || port == 0 || port > 65535) *bad_port = true;
  return colon;
}

KeyResult NormalizeHost(const char* in, size_t len, char* out) {
  bool bad_port = false;
  len = StripPort(in, len, &bad_port);
  if (bad_port) return Fail("host has an invalid port");
  if (len > 0 && in[len - 1] == '.') --len;
  if (len == 0) return Fail("host is empty");
  if (len > kHostMax) return Fail("host is longer than 253 bytes");
  size_t label = 0;
  for (size_t i = 0; i < len; ++i) {
    const char c = kTables.host_lower[static_cast<unsigned char>(in[i])];
    if (c == 0) return Fail("host may contain only a-z, 0-9, '-' and '.'");
    if (c == '.') {
      if (label == 0) return Fail("host has an empty label");
      if (out[i - 1] == '-') return Fail("host label ends with '-'");
      label = 0;
    } else {
      if (c == '-' && label == 0) return Fail("host label starts with '-'");
      if (++label > kLabelMax) return Fail("host label is longer than 63 bytes");
    }
    out[i] = c;
  }
  if (label == 0) return Fail("host has an empty label");
  if (out[len - 1] == '-') return Fail("host label ends with '-'");
  return KeyResult{len, nullptr};
}

KeyResult NormalizeText(uint32_t max_len, const char* in, size_t len, char* out) {
  const size_t bound = (max_len == 0 || max_len > layout::kMaxKeyLen) ? layout::kMaxKeyLen : max_len;
  if (len == 0) return Fail("text key is empty");
  if (len > bound) return Fail("text key is longer than the namespace allows");
  for (size_t i = 0; i < len; ++i)
    if (in[i] == '\0') return Fail("text key contains a NUL byte");
  if (!ValidUtf8(reinterpret_cast<const unsigned char*>(in), len)) return Fail("text key is not valid UTF-8");
  std::memcpy(out, in, len);
  return KeyResult{len, nullptr};
}

}  // namespace

// Structural UTF-8 check (RFC 3629): no overlongs, no surrogates, <= U+10FFFF.
bool ValidUtf8(const unsigned char* s, size_t len) {
  size_t i = 0;
  while (i < len) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + n >= len) return false;
    if (s[i + 1] < lo || s[i + 1] > hi) return false;
    for (size_t k = 2; k <= n; ++k)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return false;
    i += n + 1;
  }
  return true;
}

KeyResult NormalizeTenant(const char* in, size_t len, char* out) {
  if (in == nullptr || len == 0) return Fail("tenant id is empty");
  if (len > kMaxTenantLen) return Fail("tenant id is longer than any cached tenant id can be");
  // A uuid tenant column prints canonically; what an operator pastes from a
  // log or another system (braced, upper case, without dashes) must name the
  // same tenant. (A text tenant column holding upper-case or braced
  // uuid-shaped ids cannot be invalidated by tenant; the README says so.)
  if ((len == 32 || len == 36 || len == 38) && NormalizeUuid(in, len, out).ok())
    return KeyResult{36, nullptr};
  const auto* u = reinterpret_cast<const unsigned char*>(in);
  for (size_t i = 0; i < len; ++i)
    if (u[i] < 0x20 || u[i] == 0x7F) return Fail("tenant id has a control character");
  if (!ValidUtf8(u, len)) return Fail("tenant id is not valid UTF-8");
  std::memcpy(out, in, len);
  return KeyResult{len, nullptr};
}

KeyResult NormalizeAnyKey(uint32_t kind, uint32_t max_len, const char* in, size_t len, char* out) {
  if (in == nullptr) return Fail("key is NULL");
  // Anything longer than the longest key of any kind is refused before it is
  // read, so a hostile multi-megabyte value costs nothing.
  // (The slack covers a Host header's ":port" and trailing dot.)
  if (len > layout::kMaxKeyLen + 8) return Fail("key is longer than 255 bytes");
  switch (kind) {
    case layout::kUuid:
      return NormalizeUuid(in, len, out);
    case layout::kSlug:
      return NormalizeSlug(in, len, out);
    case layout::kHost:
      return NormalizeHost(in, len, out);
    case layout::kText:
      return NormalizeText(max_len, in, len, out);
    default:
      return Fail("unknown key kind");
  }
}

uint32_t ParseKeyKind(std::string_view name) {
  if (name == "uuid") return layout::kUuid;
  if (name == "slug") return layout::kSlug;
  if (name == "host") return layout::kHost;
  if (name == "text") return layout::kText;
  return 0;
}

const char* KeyKindName(uint32_t kind) {
  switch (kind) {
    case layout::kUuid:
      return "uuid";
    case layout::kSlug:
      return "slug";
    case layout::kHost:
      return "host";
    case layout::kText:
      return "text";
    default:
      return "unknown";
  }
}

}  // namespace tenantcache
