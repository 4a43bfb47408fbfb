// What keeps a miss's latency short: the sweep's bounded steps on the loop
// that serves fills, and the daemon's request for short scheduler slices.
// The real cache writer and reader, the real daemon binary on the real
// PostgreSQL of the harness.
#include <gtest/gtest.h>
#include <sys/utsname.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "cache_layout.h"
#include "cache_writer.h"
#include "support/daemon_process.h"
#include "support/fleet_test.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::test {
namespace {

class SweepBudget : public ::testing::Test {
 protected:
  void SetUp() override {
    // Room for the test's entries, so that none evicts another.
    options_ = FleetOptions(dir_.File("cache"), 20000);
    writer_ = OpenSynced(options_);
    buckets_ = writer_->stats().slots / layout::kSlotsPerBucket;
  }

  static constexpr uint64_t kEntries = 600;

  // `n` entries that are dead as soon as they are written (a TTL of 1 ns).
  void PutExpired(uint64_t n) {
    const std::string tenant = Uuid(1000);  // EntryData holds views
    for (uint64_t i = 0; i < n; ++i) {
      const EntryData e{tenant, {"ACME", "https://acme.example.com", "crew"}};
      ASSERT_EQ(writer_->Put(0, Uuid(i + 1), e, 1, writer_->BeginFill()), PutResult::kStored);
    }
  }

  TempDir dir_;
  CacheOptions options_;
  std::unique_ptr<CacheWriter> writer_;
  uint64_t buckets_ = 0;
};

TEST_F(SweepBudget, AnExhaustedBudgetStopsEachStepAfterOneStrideAndTheNextStepResumes) {
  PutExpired(kEntries);
  ASSERT_EQ(writer_->stats().entries, kEntries);
  // A budget of 0 is spent at the first clock read: every step covers
  // exactly one stride, so a pass takes one step per stride, and each step
  // leaves the rest of the file to the next.
  const uint64_t steps = (buckets_ + CacheWriter::kSweepStride - 1) / CacheWriter::kSweepStride;
  ASSERT_GT(steps, 2u) << "the test needs a file of several strides";
  uint64_t reclaimed = 0;
  for (uint64_t s = 0; s < steps / 2; ++s) {
    const size_t emptied = writer_->Sweep(buckets_, 0);
    EXPECT_LE(emptied, CacheWriter::kSweepStride * layout::kSlotsPerBucket) << "step " << s;
    reclaimed += emptied;
  }
  // The entries are spread over the whole file (hashed keys): half the steps
  // cover half the buckets.
  EXPECT_GT(reclaimed, kEntries / 4) << "the steps did not sweep";
  EXPECT_LT(reclaimed, kEntries * 3 / 4) << "the steps went past their stride";
  for (uint64_t s = steps / 2; s < steps; ++s) reclaimed += writer_->Sweep(buckets_, 0);
  EXPECT_EQ(reclaimed, kEntries) << "one pass of steps reclaims every dead slot";
  EXPECT_EQ(writer_->stats().entries, 0u);
}

TEST_F(SweepBudget, WithoutABudgetOneStepCoversAsManyBucketsAsAsked) {
  PutExpired(kEntries);
  EXPECT_EQ(writer_->Sweep(buckets_), kEntries);
  EXPECT_EQ(writer_->stats().entries, 0u);
}

// Linux gives SCHED_OTHER tasks a slice of their choosing since 6.12.
bool KernelTakesSliceRequests() {
  utsname u{};
  int major = 0, minor = 0;
  return uname(&u) == 0 && std::sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
         (major > 6 || (major == 6 && minor >= 12));
}

// The slice the scheduler uses for `pid`'s main thread, in ns (0: unknown).
uint64_t SchedSlice(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/sched");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("se.slice", 0) == 0) return std::stoull(line.substr(line.find(':') + 1));
  return 0;
}

class DaemonSlices : public FleetTest {};

TEST_F(DaemonSlices, TheEventLoopRunsWithTheShortestSlice) {
  if (!KernelTakesSliceRequests()) GTEST_SKIP() << "this kernel has no per-task slices (Linux < 6.12)";
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), FleetConfig(dir_.path(), Conninfo()));
  ASSERT_TRUE(daemon_->WaitReady());
  // The request is made just before the loop runs, READY comes from inside it.
  EXPECT_EQ(SchedSlice(daemon_->pid()), 100'000u)
      << "the daemon's loop thread did not get the short slice it asks for";
  // A miss is still answered with the row (the loop works as before).
  ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &cache_), 0);
  tc_ns user = 0;
  ASSERT_EQ(tc_namespace(cache_, "user", &user), 0);
  const std::string id = UserId(1);
  tc_value v;
  ASSERT_EQ(tc_cache_lookup(cache_, user, id.data(), id.size(), 5000, &v), TC_FOUND)
      << tc_last_error_detail();
  EXPECT_EQ(tc_cache_get(cache_, user, id.data(), id.size(), &v), TC_FOUND) << "the fill was written";
}

}  // namespace
}  // namespace tenantcache::test
