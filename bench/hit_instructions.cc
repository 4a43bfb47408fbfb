// Instructions per hit, for callgrind: a figure that, unlike time on a
// shared VM, does not move between runs (packaging/bench.sh runs this twice
// under callgrind with different lookup counts and prints the difference per
// lookup in section 11 of bench/RESULTS.md).
//
//   hit_instructions LOOKUPS
//
// It fills a cache of 20k users (36-character UUIDs, the fleet example's
// namespaces) through the writer, opens it as a worker does, and makes
// LOOKUPS random hits, each tc_cache_get and one tc_value_field read, as
// cache_bench's lookups are.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "cache_writer.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace {

// Out of line, so that its instructions are the lookups' and the loop's.
[[gnu::noinline]] size_t Lookups(tc_cache* cache, tc_ns user, const std::vector<std::string>& keys,
                                 const std::vector<uint32_t>& order, size_t lookups) {
  size_t total = 0;
  tc_value v;
  for (size_t n = 0; n < lookups; ++n) {
    const uint32_t i = order[n % order.size()];
    if (tc_cache_get(cache, user, keys[i].data(), keys[i].size(), &v) != TC_FOUND) std::abort();
    const char* role = nullptr;
    size_t len = 0;
    tc_value_field(&v, 2, nullptr, &role, &len);
    total += len;
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tenantcache;
  if (argc != 2 || std::atol(argv[1]) <= 0) {
    std::fprintf(stderr, "usage: hit_instructions LOOKUPS\n");
    return 2;
  }
  constexpr size_t kUsers = 20'000;
  test::TempDir dir;
  auto opts = test::FleetOptions(dir.File("cache"), kUsers * 11 / 10);
  opts.stale_after_ns = 3600'000'000'000ull;  // no heartbeat runs
  auto writer = test::OpenSynced(opts);
  std::vector<std::string> keys;
  for (size_t i = 0; i < kUsers; ++i) {
    keys.push_back(test::Uuid(i * 7919 + 13));
    const std::string n = std::to_string(i % 1000);
    (void)writer->Put(
        0, keys.back(),
        EntryData{test::Uuid(i % 1000),
                  {"YACHT" + n, "https://yacht" + n + ".fleet.example.com", i % 5 == 0 ? "captain" : "crew"}},
        0, writer->BeginFill());
  }
  tc_cache* cache = nullptr;
  tc_ns user = 0;
  if (tc_cache_open(opts.path.c_str(), &cache) != 0 || tc_namespace(cache, "user", &user) != 0) return 1;
  // Only keys the cache holds (an over-full bucket evicts a few).
  std::vector<uint32_t> held;
  tc_value v;
  for (uint32_t i = 0; i < kUsers; ++i)
    if (tc_cache_get(cache, user, keys[i].data(), keys[i].size(), &v) == TC_FOUND) held.push_back(i);
  // The same random order whatever LOOKUPS is, so that only the lookups
  // grow with it.
  std::vector<uint32_t> order(1 << 16);
  std::mt19937_64 rng(42);
  for (auto& x : order) x = held[rng() % held.size()];
  const auto lookups = static_cast<size_t>(std::atol(argv[1]));
  std::printf("%zu lookups, %zu bytes of role read\n", lookups, Lookups(cache, user, keys, order, lookups));
  tc_cache_close(cache);
  return 0;
}
