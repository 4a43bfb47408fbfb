// The per-process maps the benchmarks compare the cache with: keyed by
// std::string, looked up by std::string_view (as the cache is), so that a
// lookup builds no string.
#ifndef TENANTCACHE_BENCH_STRING_MAP_H_
#define TENANTCACHE_BENCH_STRING_MAP_H_

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace tenantcache::bench {

struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

template <class V>
using StringMap = std::unordered_map<std::string, V, StringViewHash, std::equal_to<>>;

}  // namespace tenantcache::bench

#endif  // TENANTCACHE_BENCH_STRING_MAP_H_
