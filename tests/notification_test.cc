// The NOTIFY payload parser: every message kind, and everything that must be
// recognised as malformed (which the daemon treats as a flush).
#include "notification.h"

#include <gtest/gtest.h>

namespace tenantcache {
namespace {

TEST(Notification, ParsesEveryKind) {
  auto n = ParseNotification("1 k 42 user 00000000-0001-4000-8000-000000000001");
  ASSERT_EQ(n.kind, Notification::kKey);
  EXPECT_EQ(n.seq, 42u);
  EXPECT_EQ(n.ns, "user");
  EXPECT_EQ(n.value, "00000000-0001-4000-8000-000000000001");

  n = ParseNotification("1 t - 00000000-0000-4000-8000-000000000001");
  ASSERT_EQ(n.kind, Notification::kTenant);
  EXPECT_FALSE(n.seq.has_value());
  EXPECT_EQ(n.value, "00000000-0000-4000-8000-000000000001");

  n = ParseNotification("1 f 7");
  ASSERT_EQ(n.kind, Notification::kFlush);
  EXPECT_EQ(n.seq, 7u);
  EXPECT_EQ(ParseNotification("1 f -").kind, Notification::kFlush);
  EXPECT_EQ(ParseNotification("1 f").kind, Notification::kMalformed) << "a flush carries its sequence field";

  n = ParseNotification("1 h 1234-5");
  ASSERT_EQ(n.kind, Notification::kHeartbeat);
  EXPECT_EQ(n.value, "1234-5");
}

TEST(Notification, TheLastFieldIsTakenVerbatim) {
  auto n = ParseNotification("1 k - label  two  spaces\nand a newline 1 k 5 user x");
  ASSERT_EQ(n.kind, Notification::kKey);
  EXPECT_EQ(n.value, " two  spaces\nand a newline 1 k 5 user x");
  n = ParseNotification("1 t 3 tenant with spaces");
  ASSERT_EQ(n.kind, Notification::kTenant);
  EXPECT_EQ(n.value, "tenant with spaces");
}

TEST(Notification, MalformedPayloadsAreRecognised) {
  for (const char* p : {"",
                        "1",
                        "1 ",
                        "garbage",
                        "2 k 1 user x",
                        "1 q 1 x",
                        "1 k",
                        "1 k 1",
                        "1 k 1 user",
                        "1 k 1 user ",
                        "1 k x user key",
                        "1 k -1 user key",
                        "1 k 99999999999999999999 user key",
                        "1 k 1 User key",
                        "1 k 1 bad-ns key",
                        "1 t 1",
                        "1 t 1 ",
                        "1 h",
                        "1 h ",
                        "1 f x",
                        "1 f 1 extra",
                        "01 k 1 user x"}) {
    const auto n = ParseNotification(p);
    EXPECT_EQ(n.kind, Notification::kMalformed) << '"' << p << '"';
    EXPECT_NE(n.error, nullptr) << p;
  }
}

}  // namespace
}  // namespace tenantcache
