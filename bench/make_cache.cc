// Writes a cache file for read benchmarks that need no daemon: the fleet
// namespaces, `entries` users (ids as fleet.user_id(n) in sql/examples), a
// staleness bound of an hour so no heartbeat is needed meanwhile.
//
//   make_cache PATH [entries, default 100000]
#include <cstdio>
#include <cstdlib>

#include "cache_writer.h"
#include "support/test_cache.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s PATH [entries]\n", argv[0]);
    return 2;
  }
  const uint64_t entries = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 100000;
  auto options = tenantcache::test::FleetOptions(argv[1], entries + entries / 5);
  options.stale_after_ns = 3600ull * 1000000000ull;
  auto w = tenantcache::test::OpenSynced(options);
  char id[64], tenant[64], code[16], url[64];
  for (uint64_t n = 1; n <= entries; ++n) {
    std::snprintf(id, sizeof id, "00000000-0001-4000-8000-%012llx", static_cast<unsigned long long>(n));
    const uint64_t t = 1 + (n - 1) % 1000;
    std::snprintf(tenant, sizeof tenant, "00000000-0000-4000-8000-%012llx",
                  static_cast<unsigned long long>(t));
    std::snprintf(code, sizeof code, "Y%05llu", static_cast<unsigned long long>(t));
    std::snprintf(url, sizeof url, "https://yacht-%llu.fleet.example.com",
                  static_cast<unsigned long long>(t));
    (void)w->Put(0, id, tenantcache::EntryData{tenant, {code, url, n % 5 == 0 ? "captain" : "crew"}}, 0,
                 w->BeginFill());
  }
  std::printf("%s: %llu entries\n", argv[1], static_cast<unsigned long long>(w->stats().entries));
  return 0;
}
