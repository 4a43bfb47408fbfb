// The read side of the cache file: mapping, validation of the layout, the
// lock-free lookup, and following the file when the daemon replaces it.
// Internal; the C ABI in tenantcache.cc wraps it.
//
// Thread safety. A handle (tc_cache) maps one file at a time, its `current`
// Mapping; a daemon that restarts with another geometry renames a new file
// over the path and retires the old one, and the handle then maps the new file
// and publishes it as `current` (Follow, off the hit path). The old file stays
// mapped until no thread can still read it; that is the whole difficulty, and
// it is solved with per-thread read sections (epoch-based reclamation):
//
//  1. Every read of mapped memory happens inside a read section: the thread's
//     `section` counter is odd while it is inside, even outside. Only its
//     thread writes it (a load and a store, never a read-modify-write),
//     except the fork handler in a child, where that thread does not exist
//     (rule 7), and it lives in the thread's own ThreadStats line, already
//     in that core's cache.
//  2. Entering stores the odd counter, then loads `current` (acquire). The
//     store must be visible before the load is performed (store-load order).
//     The reader pays for that with a compiler barrier only when the
//     reclaimer can impose a full barrier on every thread of the process with
//     membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) (as liburcu's membarrier
//     flavour does); where the kernel refuses membarrier the reader issues a
//     seq_cst fence instead (g_reader_fence).
//  3. Leaving stores the even counter with release, after every load from
//     the mapping.
//  4. The switching thread stores the new `current`, then forces the barrier
//     of rule 2 (membarrier, or a seq_cst fence in both), then reads every
//     thread's counter. A thread seen even cannot hold the old mapping: its
//     next section loads `current` after the barrier and sees the new one. A
//     thread seen odd may hold it, until its counter changes (rule 3,
//     acquire). The old file is unmapped once every such counter changed
//     (ReleaseRetired); nobody ever waits for a reader.
//  5. Mapping structures (not the memory they map) live until the handle is
//     closed, and so do the namespace descriptions handed out through
//     tc_value, so only loads from mapped memory need a section.
//  6. Namespace ids belong to the handle, not to a file: an id is assigned to
//     a name the first time a file carrying that name is mapped and keeps
//     meaning that name for the handle's lifetime. Each Mapping translates
//     handle ids to its file's namespace indices; an id whose name the current
//     file lacks answers TC_E_NO_NAMESPACE.
//  7. Fork: a process-wide registry lists every open handle, and
//     pthread_atfork handlers run over it. Before fork() the forking thread
//     takes every handle's follow_mu, pool_mu and stats_mu, in that order
//     (the order the code nests them: SwitchLocked takes stats_mu under
//     follow_mu, ReportOnClose under pool_mu), so that no other thread is
//     inside a change of the vectors they guard when the child's copy is
//     made; each such section is short and never waits for a reader. In the
//     child, before any thread can exist there, the handler marks every odd
//     counter ended (its thread was not copied; the forking thread is never
//     inside a section, because fork() from a signal handler that
//     interrupted a tc_* call is not supported), closes the parent's idle
//     sockets and releases the locks. Nothing on the read path asks which
//     process it runs in. The handlers only store, close and unlock: they
//     neither allocate nor wait, as a child handler must not.
//  8. A section is not re-entrant and must end: a signal handler that calls
//     tc_* while its thread is inside one would flip the counter's parity,
//     and a thread that leaves a tc_* call by longjmp or is cancelled inside
//     it keeps the retired file mapped until close (and makes later reads of
//     the handle try a release on every call). Both are excluded by the C
//     header (tc_* functions are not async-signal-safe).
//
// Recency stamps: relaxed stores into the shared recency segment (see
// "Recency" in cache_layout.h); the segment is replaced in place, at the same
// address (rule 7 there), inside a read section.
#ifndef TENANTCACHE_READER_H_
#define TENANTCACHE_READER_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
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

// What a tc_value's first private word holds besides its data (set by
// PublishValue): the entry's lengths. Each field is found and checked where
// it is read (FindValue in entry.h).
struct ValueMeta {
  uint16_t key_len;
  uint16_t tenant_len;
  uint32_t field_count;
};

// Makes `out` a found value of namespace `d`: out->priv_data holds data_len
// bytes of an entry whose head EntryHeadFits checked.
void PublishValue(tc_value* out, const layout::NamespaceDesc* d, const ValueMeta& vm, size_t data_len);

// One thread's read counters for one handle. Written only by that thread
// (plain relaxed load + store, no read-modify-write), read by whoever sums them.
struct ThreadStats;
struct Mapping;
// On the miss path: when the daemon published a different recency segment
// (it restarted and could not keep the old one), maps the new one over the
// old at the same address. One atomic load when nothing changed.
void RefreshRecency(Mapping* m);
// tc_cache_get without counting the read in the handle's statistics, which
// the daemon sums as the host's hit rate: for reads no worker made, such as
// tenantcachectl's timing loop.
int GetWithoutStats(const tc_cache* cache, tc_ns ns, const char* key, size_t key_len, tc_value* out);
// Sends the handle's final counters to the daemon if a connection is idle.
void ReportOnClose(tc_cache* cache);
// Reader rule 7: adds a handle to the registry the fork handlers walk
// (installing them on first use), or removes it. Register returns false when
// the handlers cannot be installed.
bool RegisterHandle(tc_cache* cache);
void UnregisterHandle(tc_cache* cache);

struct alignas(64) ThreadStats {
  std::atomic<uint64_t> hits{0}, negative_hits{0}, misses{0}, unavailable{0};
  std::atomic<uint64_t> section{0};  // odd while the thread reads mapped memory (rules 1-4)
};

// Handle-wide namespace ids (rule 6).
inline constexpr uint32_t kMaxHandleNamespaces = 256;
inline constexpr uint8_t kAbsentNs = 0xFF;
static_assert(layout::kMaxNamespaces < kAbsentNs);

// One mapped cache file and what the hit path derives from it.
struct Mapping {
  const unsigned char* base = nullptr;
  size_t size = 0;
  const layout::FileHeader* header = nullptr;
  const layout::BucketTags* tags = nullptr;
  const unsigned char* slots = nullptr;
  const std::atomic<uint64_t>* tenant_gens = nullptr;
  uint64_t tenant_gen_mask = 0;
  uint64_t bucket_count = 0;
  uint32_t slot_size = 0;
  dev_t dev = 0;  // the file's identity: a new one at the path is followed
  ino_t ino = 0;
  uid_t owner = 0;  // the file's owner: its recency segment must be created and owned by the same user
  // The daemon writes the control socket path before the file is renamed into
  // place and never changes it (a different path makes a new file), so a
  // private copy serves the miss path without a read section.
  char control_socket[sizeof(layout::FileHeader::control_socket)] = {};

  // Handle id -> this file's namespace index (kAbsentNs) and description
  // (nullptr when absent); ids up to ns_limit existed when this was mapped.
  uint32_t ns_limit = 0;
  uint8_t file_ns[kMaxHandleNamespaces] = {};
  const layout::NamespaceDesc* desc[kMaxHandleNamespaces] = {};
  uint64_t ns_seed[layout::kMaxNamespaces] = {};  // by file index

  // Recency stamps: the daemon's segment when it could be attached read-write
  // and is provably this file's (rule 7), otherwise private anonymous memory
  // (then idle timeouts are not checked). Always at recency_base: a segment
  // published later is mapped over the current one, so `stamps` never moves.
  uint32_t* stamps = nullptr;
  unsigned char* recency_base = nullptr;
  size_t recency_size = 0;
  std::atomic<bool> recency_shared{false};
  std::atomic<int32_t> recency_seen{layout::kNoRecency};  // the header's id last acted on

  // Reclamation (rule 4), under the handle's follow_mu.
  bool retired = false;   // no longer `current`
  bool released = false;  // unmapped
  bool pinned = false;    // the barrier of rule 4 failed: mapped until the handle is closed
  std::vector<std::pair<const ThreadStats*, uint64_t>> readers;  // counters seen odd at retirement
};

// Maps a new file at the handle's path when the current one is retired or
// has gone unavailable and the path now holds another file, after every check
// tc_cache_open makes. Returns true when `current` changed. Rate-limited and
// never waits for another thread; safe to call from any read path but the
// hit path. Also unmaps retired files no reader can still be in.
bool Follow(const tc_cache* cache);

// The description of handle namespace id `ns` in the current file, or nullptr
// when that file lacks it (valid until the handle is closed, rule 5).
const layout::NamespaceDesc* CurrentDesc(const tc_cache* cache, tc_ns ns);
// The name of handle namespace id `ns`, or nullptr for an id never assigned.
const char* HandleNsName(const tc_cache* cache, tc_ns ns);

// The second half of tc_cache_lookup: asks the daemon for a key that
// tc_cache_get just reported as TC_MISS, and returns what tc_cache_lookup
// returns after a miss. For bindings that read shared memory holding their
// interpreter lock and release it only around this call, without counting
// the miss twice in tc_stats.
int AskDaemon(const tc_cache* cache, tc_ns ns, const char* key, size_t key_len, int timeout_ms,
              tc_value* out);

}  // namespace tenantcache

struct tc_cache {
  // The file reads go to (rules 2 and 4); changed only under follow_mu.
  std::atomic<tenantcache::Mapping*> current{nullptr};
  std::string path;  // absolute, as opened: where a replacement appears

  // Handle namespace ids (rule 6): names are appended under follow_mu before
  // the Mapping that uses them is published, and never change.
  char ns_names[tenantcache::kMaxHandleNamespaces][tenantcache::layout::kNameMax] = {};
  std::atomic<uint32_t> ns_count{0};

  // Serialises Follow and reclamation; owns every Mapping and namespace
  // description until close (rule 5).
  std::mutex follow_mu;
  std::vector<std::unique_ptr<tenantcache::Mapping>> mappings;
  std::vector<std::unique_ptr<tenantcache::layout::NamespaceDesc>> descs;
  std::atomic<uint64_t> next_follow_ns{0};   // coarse clock: when Follow may look at the path again
  std::atomic<uint32_t> pending_release{0};  // retired files still mapped

  // Idle connections to the daemon's control socket (see lookup.cc); a child
  // closes the parent's at fork() (rule 7).
  std::mutex pool_mu;
  std::vector<int> idle_fds;
  uint32_t next_request_id = 0;

  // Read statistics: per-thread blocks in this process's memory (never in
  // the shared file), summed by tc_cache_stats and reported to the daemon
  // along with the next request (see lookup.cc).
  uint64_t stats_id = 0;  // unique per handle, so threads can cache their block
  std::mutex stats_mu;
  std::vector<std::unique_ptr<tenantcache::ThreadStats>> thread_stats;
  std::chrono::steady_clock::time_point last_report{};

  // The registry of open handles (rule 7), under its own mutex.
  tc_cache* registry_prev = nullptr;
  tc_cache* registry_next = nullptr;
};

#endif  // TENANTCACHE_READER_H_
