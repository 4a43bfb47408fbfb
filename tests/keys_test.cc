// Validation tables for each key kind. Keys come from requests (user ids in
// tokens, slugs in paths, Host headers), so hostile input is the normal case.
#include "keys.h"

#include <gtest/gtest.h>

#include <string>

namespace tenantcache {
namespace {

struct Case {
  std::string in;
  std::string want;  // empty: must be refused
};

void Check(uint32_t kind, uint32_t max_len, const std::vector<Case>& cases) {
  for (const auto& c : cases) {
    char out[layout::kMaxKeyLen + 8];
    const KeyResult r = NormalizeKey(kind, max_len, c.in.data(), c.in.size(), out);
    if (c.want.empty()) {
      EXPECT_FALSE(r.ok()) << KeyKindName(kind) << " accepted '" << c.in << "' as '"
                           << std::string(out, r.len) << "'";
      EXPECT_NE(r.error, nullptr);
    } else {
      ASSERT_TRUE(r.ok()) << KeyKindName(kind) << " refused '" << c.in << "': " << r.error;
      EXPECT_EQ(std::string(out, r.len), c.want) << "input '" << c.in << "'";
    }
  }
}

TEST(KeyKinds, UuidIsCanonicalisedToLowerCase) {
  const std::string canon = "123e4567-e89b-42d3-a456-426614174000";
  Check(layout::kUuid, 0,
        {
            {canon, canon},
            {"123E4567-E89B-42D3-A456-426614174000", canon},
            {"{123e4567-e89b-42d3-a456-426614174000}", canon},
            {"123e4567e89b42d3a456426614174000", canon},
            {"123E4567E89B42D3A456426614174000", canon},
            {"", ""},
            {"123e4567-e89b-42d3-a456-42661417400", ""},    // 35
            {"123e4567-e89b-42d3-a456-4266141740000", ""},  // 37
            {"123e4567_e89b-42d3-a456-426614174000", ""},   // wrong separator
            {"123e4567-e89b-42d3-a456-42661417400g", ""},   // not hex
            {"123e4567-e89b42d3-a456-4266141740000", ""},   // misplaced dash
            {"{123e4567-e89b-42d3-a456-426614174000", ""},  // one brace
            {"123e4567-e89b-42d3-a456-42661417400\xC3\xA9", ""},
            {std::string("123e4567-e89b-42d3-a456-42661417400\0", 36), ""},
            {std::string(300, 'a'), ""},
        });
}

// The hit path's fast check of a 36-character uuid (CanonicalUuid, inline in
// NormalizeKey) must accept exactly what the full check accepts, and give
// the same key: every byte value at every position of a valid uuid.
TEST(KeyKinds, UuidFastPathAgreesWithTheFullCheckOnEveryByte) {
  const std::string canon = "123e4567-E89B-42d3-a456-426614174000";
  size_t accepted = 0;
  for (size_t at = 0; at < canon.size(); ++at) {
    for (int c = 0; c < 256; ++c) {
      std::string in = canon;
      in[at] = static_cast<char>(c);
      char fast[layout::kMaxKeyLen + 8], full[layout::kMaxKeyLen + 8];
      const KeyResult a = NormalizeKey(layout::kUuid, 0, in.data(), in.size(), fast);
      const KeyResult b = NormalizeAnyKey(layout::kUuid, 0, in.data(), in.size(), full);
      ASSERT_EQ(a.ok(), b.ok()) << "byte " << c << " at " << at;
      if (!a.ok()) continue;
      ++accepted;
      ASSERT_EQ(std::string(fast, a.len), std::string(full, b.len)) << "byte " << c << " at " << at;
    }
  }
  // 22 hex digits per position but the dashes' (which take only '-').
  EXPECT_EQ(accepted, 32u * 22 + 4);
}

TEST(KeyKinds, SlugAllowsLowerAlnumAndDashUpTo63) {
  Check(layout::kSlug, 0,
        {
            {"acme", "acme"},
            {"Acme-Marine-2", "acme-marine-2"},
            {std::string(63, 'a'), std::string(63, 'a')},
            {std::string(64, 'a'), ""},
            {"", ""},
            {"acme marine", ""},
            {"acme_marine", ""},
            {"acme/../x", ""},
            {"caf\xC3\xA9", ""},
            {std::string("acme\0x", 6), ""},
        });
}

TEST(KeyKinds, HostFollowsRfc1123AndRefusesHostileValues) {
  const std::string label63(63, 'a');
  // 4 labels of 63 + 3 dots = 255: too long; trimmed to 253 in total below.
  const std::string host253 = label63 + "." + label63 + "." + label63 + "." + std::string(61, 'b');
  ASSERT_EQ(host253.size(), 253u);
  Check(layout::kHost, 0,
        {
            {"acme.example.com", "acme.example.com"},
            {"ACME.Example.COM", "acme.example.com"},
            {"acme.example.com.", "acme.example.com"},
            {"acme.example.com:8443", "acme.example.com"},
            {"acme.example.com.:443", "acme.example.com"},
            {"localhost", "localhost"},
            {"10.0.0.1", "10.0.0.1"},
            {"xn--caf-dma.example", "xn--caf-dma.example"},
            {"a-b.c-d", "a-b.c-d"},
            {host253, host253},
            {host253 + ".", host253},
            {host253 + "c", ""},              // 254 bytes
            {label63 + "a.example.com", ""},  // 64-byte label
            {"", ""},
            {".", ""},
            {"acme..example.com", ""},
            {".acme.example.com", ""},
            {"acme.example.com..", ""},
            {"-acme.example.com", ""},
            {"acme-.example.com", ""},
            {"acme.example.com-", ""},
            {"acme_1.example.com", ""},
            {"café.example.com", ""},                  // unicode must be punycoded
            {std::string("acme\0.evil.com", 14), ""},  // embedded NUL
            {"acme.example.com\r\nX-Injected: 1", ""},
            {"acme.example.com/path", ""},
            {"user@acme.example.com", ""},
            {"[::1]", ""},
            {"[::1]:80", ""},
            {"acme.example.com:", ""},
            {"acme.example.com:0", ""},
            {"acme.example.com:65536", ""},
            {"acme.example.com:99999999999999999999", ""},
            {"acme.example.com:80x", ""},
            {"acme.example.com:80:80", ""},
            {" acme.example.com", ""},
            {std::string(10000, 'a'), ""},
        });
}

TEST(KeyKinds, TextIsLengthBoundUtf8WithoutNul) {
  Check(layout::kText, 8,
        {
            {"abc", "abc"},
            {"Mixed Case", ""},  // 10 > 8
            {"Ab C", "Ab C"},
            {"caf\xC3\xA9", "caf\xC3\xA9"},
            {"", ""},
            {std::string("a\0b", 3), ""},
            {"\xC3", ""},              // truncated sequence
            {"\xC0\xAF", ""},          // overlong
            {"\xED\xA0\x80", ""},      // surrogate
            {"\xF4\x90\x80\x80", ""},  // > U+10FFFF
            {"\xFF", ""},
        });
  Check(layout::kText, 0, {{std::string(255, 'x'), std::string(255, 'x')}, {std::string(256, 'x'), ""}});
}

TEST(KeyKinds, UnknownKindAndNullInputAreErrors) {
  char out[layout::kMaxKeyLen + 8];
  EXPECT_FALSE(NormalizeKey(99, 0, "x", 1, out).ok());
  EXPECT_FALSE(NormalizeKey(layout::kSlug, 0, nullptr, 0, out).ok());
  EXPECT_EQ(ParseKeyKind("host"), layout::kHost);
  EXPECT_EQ(ParseKeyKind("HOST"), 0u);
  EXPECT_STREQ(KeyKindName(layout::kUuid), "uuid");
}

}  // namespace
}  // namespace tenantcache
