#include "keys.h"

#include <cstring>

namespace tenantcache {
namespace {

constexpr size_t kSlugMax = 63;
constexpr size_t kHostMax = 253;
constexpr size_t kLabelMax = 63;

inline int HexValue(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

inline unsigned char Lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<unsigned char>(c | 0x20) : c;
}

KeyResult Fail(const char* why) { return KeyResult{0, why}; }

KeyResult NormalizeUuid(const char* in, size_t len, char* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  if (len == 38 && in[0] == '{' && in[37] == '}') {
    ++in;
    len -= 2;
  }
  const bool dashed = len == 36;
  if (!dashed && len != 32) return Fail("uuid must be 36 characters (8-4-4-4-12) or 32 hex digits");
  size_t o = 0;
  for (size_t i = 0; i < len; ++i) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (dashed && (i == 8 || i == 13 || i == 18 || i == 23)) {
      if (c != '-') return Fail("uuid has a misplaced '-'");
      out[o++] = '-';
      continue;
    }
    const int v = HexValue(c);
    if (v < 0) return Fail("uuid has a character that is not a hex digit");
    out[o++] = kHex[v];
    if (!dashed && (o == 8 || o == 13 || o == 18 || o == 23)) out[o++] = '-';
  }
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
    const unsigned char c = Lower(static_cast<unsigned char>(in[i]));
    if (c == '.') {
      if (label == 0) return Fail("host has an empty label");
      if (out[i - 1] == '-') return Fail("host label ends with '-'");
      label = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      ++label;
    } else if (c == '-') {
      if (label == 0) return Fail("host label starts with '-'");
      ++label;
    } else {
      return Fail("host may contain only a-z, 0-9, '-' and '.'");
    }
    if (label > kLabelMax) return Fail("host label is longer than 63 bytes");
    out[i] = static_cast<char>(c);
  }
  if (label == 0) return Fail("host has an empty label");
  if (out[len - 1] == '-') return Fail("host label ends with '-'");
  return KeyResult{len, nullptr};
}

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

KeyResult NormalizeText(uint32_t max_len, const char* in, size_t len, char* out) {
  const size_t bound = (max_len == 0 || max_len > layout::kMaxKeyLen) ? layout::kMaxKeyLen : max_len;
  if (len == 0) return Fail("text key is empty");
  if (len > bound) return Fail("text key is longer than the namespace allows");
  for (size_t i = 0; i < len; ++i)
    if (in[i] == '\0') return Fail("text key contains a NUL byte");
  if (!ValidUtf8(reinterpret_cast<const unsigned char*>(in), len))
    return Fail("text key is not valid UTF-8");
  std::memcpy(out, in, len);
  return KeyResult{len, nullptr};
}

}  // namespace

KeyResult NormalizeKey(uint32_t kind, uint32_t max_len, const char* in, size_t len, char* out) {
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
