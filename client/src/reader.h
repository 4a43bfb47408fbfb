// The read side of the cache file: mapping, validation of the layout, and the
// lock-free lookup. Internal; the C ABI in tenantcache.cc wraps it.
//
// Thread safety: a Reader is immutable after Open except for the recency
// stamps it writes into the shared recency segment (relaxed stores, see
// "Recency" in cache_layout.h) and the segment it maps them from (rule 7:
// replaced in place, at the same address), so Get may run on any number of
// threads.
#ifndef TENANTCACHE_READER_H_
#define TENANTCACHE_READER_H_

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cache_layout.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache {

// CLOCK_MONOTONIC_COARSE is served by the vDSO without a system call and
// costs a few nanoseconds; it lags CLOCK_MONOTONIC (what the daemon writes)
// by up to one kernel tick, its resolution.
inline uint64_t CoarseNowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// CLOCK_MONOTONIC_COARSE's resolution (one kernel tick), read at load time.
extern const uint64_t kCoarseResolutionNs;

// The readers' "now" for the fail-closed and expiry checks: the coarse clock
// plus one tick, so never earlier than CLOCK_MONOTONIC. The heartbeat's age
// is then never underestimated, and the bound holds to the nanosecond.
inline uint64_t ReaderNowNs() { return CoarseNowNs() + kCoarseResolutionNs; }

inline uint64_t MonotonicNowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Checks that `base` (`size` bytes) holds a complete cache file of this
// layout. Returns nullptr or a static description of the first problem.
const char* ValidateLayout(const void* base, size_t size);

// What a tc_value's private words hold besides its data (set by
// tc_cache_get and tc_cache_lookup).
struct ValueMeta {
  uint16_t key_len;
  uint16_t tenant_len;
  uint32_t field_count;
};

// One thread's read counters for one handle. Written only by that thread
// (plain relaxed load + store, no read-modify-write), read by whoever sums them.
struct ThreadStats;
// On the miss path: when the daemon published a different recency segment
// (it restarted and could not keep the old one), maps the new one over the
// old at the same address. One atomic load when nothing changed.
void RefreshRecency(const tc_cache* cache);
// tc_cache_get without counting the read in the handle's statistics, which
// the daemon sums as the host's hit rate: for reads no worker made, such as
// tenantcachectl's timing loop.
int GetWithoutStats(const tc_cache* cache, tc_ns ns, const char* key, size_t key_len, tc_value* out);
// Sends the handle's final counters to the daemon if a connection is idle.
void ReportOnClose(tc_cache* cache);
// In a process forked after the handle was opened (only the forking thread
// exists there): re-creates the handle's mutexes, which another thread may
// have held at fork(), and drops the parent's sockets. Cheap when not forked.
void AfterFork(tc_cache* cache);

struct alignas(64) ThreadStats {
  std::atomic<uint64_t> hits{0}, negative_hits{0}, misses{0}, unavailable{0};
};

}  // namespace tenantcache

struct tc_cache {
  const unsigned char* base = nullptr;
  size_t size = 0;
  const tenantcache::layout::FileHeader* header = nullptr;
  const tenantcache::layout::BucketTags* tags = nullptr;
  const unsigned char* slots = nullptr;
  const std::atomic<uint64_t>* tenant_gens = nullptr;
  uint64_t tenant_gen_mask = 0;
  uint64_t bucket_count = 0;
  uint32_t slot_size = 0;
  uint32_t namespace_count = 0;
  uint64_t ns_seed[tenantcache::layout::kMaxNamespaces] = {};
  // A private copy, so names handed out stay valid and cannot change under us.
  tenantcache::layout::NamespaceDesc namespaces[tenantcache::layout::kMaxNamespaces];

  // Recency stamps: the daemon's segment when it could be attached read-write
  // and is provably this file's (rule 7), otherwise private anonymous memory
  // (then idle timeouts are not checked). Always at recency_base: a segment
  // published later is mapped over the current one, so `stamps` never moves.
  uint32_t* stamps = nullptr;
  unsigned char* recency_base = nullptr;
  size_t recency_size = 0;
  std::atomic<bool> recency_shared{false};
  std::atomic<int32_t> recency_seen{tenantcache::layout::kNoRecency};  // the header's id last acted on
  uid_t owner = 0;  // the cache file's owner: its segment must be created and owned by the same user

  // Idle connections to the daemon's control socket (see lookup.cc), owned
  // by the process that opened them.
  std::mutex pool_mu;
  std::vector<int> idle_fds;
  std::atomic<pid_t> pool_pid{0};  // the process the pool and mutexes belong to
  uint32_t next_request_id = 0;

  // Read statistics: per-thread blocks in this process's memory (never in
  // the shared file), summed by tc_cache_stats and reported to the daemon
  // along with the next request (see lookup.cc).
  uint64_t stats_id = 0;  // unique per handle, so threads can cache their block
  std::mutex stats_mu;
  std::vector<std::unique_ptr<tenantcache::ThreadStats>> thread_stats;
  std::chrono::steady_clock::time_point last_report{};
};

#endif  // TENANTCACHE_READER_H_
