// Fail closed: whenever the daemon cannot vouch for the cache, every read is
// TC_E_UNAVAILABLE, whatever the entry says.
#include <gtest/gtest.h>

#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache {
namespace {

class FailClosedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_ = test::FleetOptions(dir_.File("cache"));
    options_.stale_after_ns = 300'000'000;  // 300 ms
    writer_ = test::OpenSynced(options_);
    ASSERT_EQ(tc_cache_open(options_.path.c_str(), &cache_), 0);
    for (uint64_t i = 0; i < 20; ++i)
      ASSERT_EQ(
          writer_->Put(0, test::Uuid(i), EntryData{test::Uuid(99), {"A", "u", "r"}}, 0, writer_->BeginFill()),
          PutResult::kStored);
    ASSERT_EQ(writer_->PutNegative(0, test::Uuid(500), 0, writer_->BeginFill()), PutResult::kStored);
    ASSERT_EQ(AllReads(), TC_FOUND);
  }
  void TearDown() override { tc_cache_close(cache_); }

  // The common status of every read (hits, the negative entry and a miss),
  // or 100 when they differ the way a healthy cache's do.
  int AllReads() {
    tc_value v;
    int common = 0;
    bool first = true;
    auto see = [&](int rc) {
      if (first) common = rc;
      if (rc != common) common = 100;
      first = false;
    };
    for (uint64_t i = 0; i < 20; ++i) {
      const std::string k = test::Uuid(i);
      see(tc_cache_get(cache_, 0, k.data(), k.size(), &v));
    }
    if (common == TC_FOUND) return TC_FOUND;
    const std::string neg = test::Uuid(500), miss = test::Uuid(600);
    see(tc_cache_get(cache_, 0, neg.data(), neg.size(), &v));
    see(tc_cache_get(cache_, 0, miss.data(), miss.size(), &v));
    return common;
  }

  test::TempDir dir_;
  CacheOptions options_;
  std::unique_ptr<CacheWriter> writer_;
  tc_cache* cache_ = nullptr;
};

TEST_F(FailClosedTest, NotSyncedMakesEveryReadUnavailable) {
  writer_->SetSynced(false);
  EXPECT_EQ(AllReads(), TC_E_UNAVAILABLE);
  tc_info info;
  ASSERT_EQ(tc_cache_info(cache_, &info), 0);
  EXPECT_EQ(info.synced, 0);
  EXPECT_EQ(info.available, 0);
  writer_->SetSynced(true);
  EXPECT_EQ(AllReads(), TC_FOUND);
}

TEST_F(FailClosedTest, StaleHeartbeatMakesEveryReadUnavailableWithinTheBound) {
  writer_->Heartbeat();
  const auto beat = std::chrono::steady_clock::now();
  // No more heartbeats: the daemon is dead or stopped.
  ASSERT_TRUE(test::WaitFor([&] { return AllReads() == TC_E_UNAVAILABLE; }, std::chrono::seconds(5)));
  const auto elapsed = std::chrono::steady_clock::now() - beat;
  EXPECT_GE(elapsed, std::chrono::milliseconds(290)) << "refused before the bound";
  EXPECT_LT(elapsed, std::chrono::milliseconds(300 + 1000)) << "served past the bound";
  tc_info info;
  ASSERT_EQ(tc_cache_info(cache_, &info), 0);
  EXPECT_GE(info.heartbeat_age_ns, 300'000'000u);
  EXPECT_EQ(info.stale_after_ns, 300'000'000u);
  writer_->Heartbeat();
  EXPECT_EQ(AllReads(), TC_FOUND);
}

TEST_F(FailClosedTest, RetiredFileIsUnavailable) {
  writer_->Retire();
  EXPECT_EQ(AllReads(), TC_E_UNAVAILABLE);
}

TEST_F(FailClosedTest, FreshFileIsUnavailableUntilTheDaemonSaysSynced) {
  test::TempDir d;
  auto o = test::FleetOptions(d.File("fresh"));
  auto w = CacheWriter::Open(o);
  tc_cache* c = nullptr;
  ASSERT_EQ(tc_cache_open(o.path.c_str(), &c), 0);
  tc_value v;
  const std::string k = test::Uuid(1);
  EXPECT_EQ(tc_cache_get(c, 0, k.data(), k.size(), &v), TC_E_UNAVAILABLE);
  w->Heartbeat();
  EXPECT_EQ(tc_cache_get(c, 0, k.data(), k.size(), &v), TC_E_UNAVAILABLE);
  w->SetSynced(true);
  EXPECT_EQ(tc_cache_get(c, 0, k.data(), k.size(), &v), TC_MISS);
  tc_cache_close(c);
}

TEST_F(FailClosedTest, InvalidKeysAreReportedEvenWhileUnavailable) {
  writer_->SetSynced(false);
  tc_value v;
  EXPECT_EQ(tc_cache_get(cache_, 0, "x", 1, &v), TC_E_INVALID_KEY);
}

}  // namespace
}  // namespace tenantcache
