// Concurrency: one writer rewriting, invalidating, bumping tenants and the
// epoch as fast as it can over a deliberately small cache, while readers check
// every value they get. Run with real processes sharing the real mapping, and
// with threads (the variant ThreadSanitizer checks).
//
// Each key k has a version that only grows. A value written for version v
// carries k and v in several fields whose lengths depend on v, so a copy torn
// between two writes cannot decode consistently. Whenever the writer has
// completed an invalidation that covers k (key, tenant or epoch), it publishes
// dead_through[k] = the newest version so far (a release store after the
// invalidation returned). A reader loads dead_through[k] (acquire) before its
// read; a value with version <= that is a value served after its invalidation
// was reported complete.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache {
namespace {

constexpr uint32_t kKeys = 48;
constexpr uint32_t kTenants = 4;

struct Shared {
  std::atomic<uint64_t> dead_through[kKeys];
  std::atomic<uint32_t> stop;
  std::atomic<uint32_t> writer_rounds;
  std::atomic<uint64_t> reads, found, negative, missed, unavailable;
  std::atomic<uint64_t> torn, foreign, stale, other;
  std::atomic<uint32_t> reported;
  char first_violation[512];
};

std::string Key(uint32_t k) { return test::Uuid(1'000'000 + k); }
std::string Tenant(uint32_t k) { return test::Uuid(9'000 + k % kTenants); }

std::string Pad(uint64_t v) { return std::string(v % 61, static_cast<char>('a' + v % 26)); }
std::string Mix(uint64_t v) { return std::to_string(v * 2654435761u % 1000000007u); }

EntryData Value(uint32_t k, uint64_t v, std::vector<std::string>& storage) {
  storage = {Mix(v), Key(k) + "/" + std::to_string(v) + "/" + Pad(v), std::to_string(v), Tenant(k)};
  return EntryData{storage[3], {storage[0], storage[1], storage[2]}};
}

void Report(Shared* s, std::atomic<uint64_t>& counter, const std::string& what) {
  counter.fetch_add(1);
  if (s->reported.exchange(1) == 0)
    std::snprintf(s->first_violation, sizeof s->first_violation, "%s", what.c_str());
}

// Checks one value; returns its version (0 if it was rejected).
uint64_t Check(Shared* s, uint32_t k, const tc_value* v) {
  size_t len = 0;
  const char* key = tc_value_key(v, &len);
  if (key == nullptr || std::string(key, len) != Key(k)) {
    Report(s, s->foreign, "key " + Key(k) + " returned the value of " + (key ? std::string(key, len) : "?"));
    return 0;
  }
  const char* tenant = tc_value_tenant(v, &len);
  if (tenant == nullptr || std::string(tenant, len) != Tenant(k)) {
    Report(s, s->foreign, "key " + Key(k) + " returned another tenant");
    return 0;
  }
  const char *code, *url, *role;
  size_t code_len, url_len, role_len;
  if (tc_value_field(v, 0, nullptr, &code, &code_len) != 0 ||
      tc_value_field(v, 1, nullptr, &url, &url_len) != 0 ||
      tc_value_field(v, 2, nullptr, &role, &role_len) != 0 || code == nullptr || url == nullptr ||
      role == nullptr) {
    Report(s, s->torn, "fields missing");
    return 0;
  }
  uint64_t version = 0;
  std::from_chars(role, role + role_len, version);
  const std::string want_url = Key(k) + "/" + std::to_string(version) + "/" + Pad(version);
  if (version == 0 || std::string(code, code_len) != Mix(version) || std::string(url, url_len) != want_url) {
    Report(s, s->torn,
           "torn value for " + Key(k) + ": " + std::string(role, role_len) + " " + std::string(url, url_len));
    return 0;
  }
  return version;
}

void ReaderLoop(Shared* s, tc_cache* c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  tc_value v;
  while (s->stop.load(std::memory_order_relaxed) == 0) {
    const auto k = static_cast<uint32_t>(rng() % kKeys);
    const std::string key = Key(k);
    const uint64_t dead = s->dead_through[k].load(std::memory_order_acquire);
    const int rc = tc_cache_get(c, 0, key.data(), key.size(), &v);
    s->reads.fetch_add(1, std::memory_order_relaxed);
    switch (rc) {
      case TC_FOUND: {
        s->found.fetch_add(1, std::memory_order_relaxed);
        const uint64_t version = Check(s, k, &v);
        if (version != 0 && version <= dead)
          Report(s, s->stale,
                 "key " + key + " served version " + std::to_string(version) +
                     " after versions <= " + std::to_string(dead) + " were invalidated");
        break;
      }
      case TC_NOT_FOUND:
        s->negative.fetch_add(1, std::memory_order_relaxed);
        break;
      case TC_MISS:
        s->missed.fetch_add(1, std::memory_order_relaxed);
        break;
      case TC_E_UNAVAILABLE:
        s->unavailable.fetch_add(1, std::memory_order_relaxed);
        break;
      default:
        Report(s, s->other, "unexpected status " + std::to_string(rc));
    }
  }
}

void WriterLoop(Shared* s, CacheWriter* w, std::chrono::milliseconds duration, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> version(kKeys, 0);
  std::vector<std::string> storage;
  const auto end = std::chrono::steady_clock::now() + duration;
  uint32_t rounds = 0;
  auto publish = [&](uint32_t k) { s->dead_through[k].store(version[k], std::memory_order_release); };
  while (std::chrono::steady_clock::now() < end) {
    w->Heartbeat();
    for (int i = 0; i < 200; ++i) {
      const auto k = static_cast<uint32_t>(rng() % kKeys);
      const uint64_t op = rng() % 100;
      if (op < 70) {
        const Lease lease = w->BeginFill();
        ++version[k];
        // An overwrite retires every older version.
        if (w->Put(0, Key(k), Value(k, version[k], storage), 0, lease) == PutResult::kStored)
          s->dead_through[k].store(version[k] - 1, std::memory_order_release);
      } else if (op < 85) {
        w->Invalidate(0, Key(k));
        publish(k);
      } else if (op < 92) {
        const Lease lease = w->BeginFill();
        ++version[k];
        if (w->PutNegative(0, Key(k), 0, lease) == PutResult::kStored) publish(k);
      } else if (op < 99) {
        w->InvalidateTenant(Tenant(k));
        for (uint32_t j = k % kTenants; j < kKeys; j += kTenants) publish(j);
      } else {
        w->Flush();
        for (uint32_t j = 0; j < kKeys; ++j) publish(j);
      }
    }
    ++rounds;
  }
  s->writer_rounds.store(rounds);
}

class StressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    void* p = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    shared_ = new (p) Shared{};
    // 10 buckets for 48 keys: constant overwrites, evictions and slot reuse.
    options_ = test::FleetOptions(dir_.File("cache"), 64);
    writer_ = test::OpenSynced(options_);
  }
  void TearDown() override { munmap(shared_, sizeof(Shared)); }

  void ExpectClean() {
    const Shared& s = *shared_;
    std::printf(
        "reads=%llu found=%llu negative=%llu miss=%llu unavailable=%llu writer_rounds=%u\n",
        static_cast<unsigned long long>(s.reads.load()), static_cast<unsigned long long>(s.found.load()),
        static_cast<unsigned long long>(s.negative.load()), static_cast<unsigned long long>(s.missed.load()),
        static_cast<unsigned long long>(s.unavailable.load()), s.writer_rounds.load());
    EXPECT_EQ(s.torn.load(), 0u) << s.first_violation;
    EXPECT_EQ(s.foreign.load(), 0u) << s.first_violation;
    EXPECT_EQ(s.stale.load(), 0u) << s.first_violation;
    EXPECT_EQ(s.other.load(), 0u) << s.first_violation;
    // The run must have exercised what it claims to check.
    EXPECT_GT(s.found.load(), 10000u);
    EXPECT_GT(s.negative.load(), 100u);
    EXPECT_GT(s.missed.load(), 100u);
    EXPECT_GT(s.writer_rounds.load(), 10u);
  }

  test::TempDir dir_;
  CacheOptions options_;
  std::unique_ptr<CacheWriter> writer_;
  Shared* shared_ = nullptr;
};

TEST_F(StressTest, ReaderProcessesNeverSeeTornStaleOrForeignValues) {
  constexpr int kReaders = 3;
  std::vector<pid_t> readers;
  for (int r = 0; r < kReaders; ++r) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      tc_cache* c = nullptr;
      if (tc_cache_open(options_.path.c_str(), &c) != 0) _exit(2);
      ReaderLoop(shared_, c, 1000 + static_cast<uint64_t>(r));
      tc_cache_close(c);
      _exit(0);
    }
    readers.push_back(pid);
  }
  const pid_t writer = fork();
  ASSERT_GE(writer, 0);
  if (writer == 0) {
    WriterLoop(shared_, writer_.get(), std::chrono::milliseconds(3000), 7);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(writer, &status, 0), writer);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  shared_->stop.store(1);
  for (pid_t pid : readers) {
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "reader exit status " << status;
  }
  ExpectClean();
}

TEST_F(StressTest, ReaderThreadsNeverSeeTornStaleOrForeignValues) {
  tc_cache* c = nullptr;
  ASSERT_EQ(tc_cache_open(options_.path.c_str(), &c), 0);
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) readers.emplace_back(ReaderLoop, shared_, c, 2000 + static_cast<uint64_t>(r));
  WriterLoop(shared_, writer_.get(), std::chrono::milliseconds(3000), 11);
  shared_->stop.store(1);
  for (auto& t : readers) t.join();
  tc_cache_close(c);
  ExpectClean();
}

}  // namespace
}  // namespace tenantcache
