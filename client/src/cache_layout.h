// The cache file: one layout, compiled by the writer (tenantcached) and by every
// reader (libtenantcache). Internal: the public API never exposes it.
//
// ---------------------------------------------------------------------------
// The idea
// ---------------------------------------------------------------------------
// tenantcached is the only process that writes the cache. Worker processes map
// the entries file read-only and look keys up without locks, system calls or
// allocation. Correctness rests on four mechanisms, each a counter the writer
// advances and the readers compare:
//
//   * A per-slot sequence counter (seqlock). A slot is rewritten in place; a
//     reader copies it and keeps the copy only if the counter was even and
//     unchanged across the copy.
//   * A global epoch in the header. Every entry records the epoch it was
//     filled in; bumping the epoch makes every entry invalid at once. This is
//     our "reset": whenever the daemon may have missed an invalidation (its
//     listener dropped, the log did not reach back, an operator flushed) it
//     never tries to work out what changed, it bumps the epoch.
//   * Tenant generations: a table of counters indexed by a hash of the tenant
//     id. Every entry records its tenant's index and the generation it was
//     filled under; bumping a tenant's counter invalidates all its entries, in
//     every namespace, in O(1). Two tenants sharing a counter only cost each
//     other extra misses.
//   * A heartbeat and a synced flag. Readers refuse the whole cache (fail
//     closed, TC_E_UNAVAILABLE) while the daemon says it is not synced with the
//     database, or when its heartbeat is older than the bound it published.
//
// ---------------------------------------------------------------------------
// The data structure
// ---------------------------------------------------------------------------
//   [FileHeader 4 KiB][NamespaceDesc x kMaxNamespaces][tenant generations]
//   [tags: 8 x uint32 per bucket][slots: 8 x slot_size per bucket]
//
// A bucket is kSlotsPerBucket slots and their 32 bytes of tags. A key lives
// only in the bucket chosen by XXH3(key, hash_seed ^ namespace): probes are
// bounded, there are no tombstones and eviction is local to the bucket. The
// hash seed is random per file, so a client sending chosen Host headers
// cannot aim its keys at one bucket. A tag is the high half of the key's hash
// with the low bit forced to 1 (0 means "empty"); tags only filter, the key
// stored in the slot is always compared in full (after its full 64-bit hash).
// The tags of all buckets are packed together, apart from the slots, so the
// tag table is dense enough to stay in the CPU caches.
//
// A slot is slot_size bytes (a multiple of the 64-byte cache line): the
// sequence counter, a 56-byte SlotMeta, then the data area holding the key,
// the tenant id, the field lengths and the field values, each string followed
// by a NUL. An entry whose data does not fit is not cached (the daemon answers
// that lookup uncached and counts it).
//
// Recency lives apart, in a small System V shared-memory segment whose id the
// daemon publishes in the header (recency_shmid): one 32-bit access stamp per
// slot, the time of the last hit in units of 2^24 ns (~17 ms), written only
// when it changed, so a hot key costs one shared write per 17 ms, not one per
// hit. A fill is stamped one unit in the past, so an entry read since its
// fill ranks as more recent than entries filled in the same unit and never
// read. The writer uses the stamps for the idle timeout and to evict the
// least recently used slot of a full bucket.
//
// Why a segment and not a file beside the cache: a segment's size is fixed
// when it is created, and only its owner (the daemon's user) can remove it or
// change its permissions, so a worker allowed to write stamps can neither
// shrink it under other processes (no SIGBUS, unlike a truncated file) nor
// replace it. The daemon marks it for removal (IPC_RMID) as soon as it has
// attached it, so it disappears with the last process that detaches and
// never outlives its users; Linux still lets permitted processes attach a
// segment so marked by its id. It is readable and writable by the daemon's
// user, and by the cache file's group when that group may read the cache;
// never by others, who stamp into private memory instead (then idle timeouts
// are not checked by them). Keeping the stamps apart leaves the entries file
// read-only to every worker: a buggy or hostile worker can at worst disturb
// eviction order and idle timeouts, never what others read.
//
// ---------------------------------------------------------------------------
// Home slots
// ---------------------------------------------------------------------------
// A random hit costs what its dependent cache misses cost: the tag row, then
// the slot it points to. So each key has a home slot in its bucket, chosen by
// its hash (HomeSlot). The writer puts a new key in its home slot when that
// slot is empty or holds an entry that can no longer be served, and readers
// fetch the home slot's first lines while they wait for the tag row, then
// look at the home slot's tag first: for a key at home, the two misses
// overlap. Placement is only a preference and changes no rule below (a key
// may live in any slot of its bucket, and readers still scan every tag), so
// the layout version stays.
//
// ---------------------------------------------------------------------------
// Overflow
// ---------------------------------------------------------------------------
// A full bucket evicts, in order: an empty slot, a slot whose entry can no
// longer be served (older epoch, older tenant generation, past its TTL or idle
// timeout), then the least recently used. The writer never waits for readers;
// a reader that keeps losing the race for a slot gives up after
// kMaxReadRetries and reports a miss, which only sends it to the daemon.
//
// ---------------------------------------------------------------------------
// Thread safety (ordering rules; numbered so the code can cite them)
// ---------------------------------------------------------------------------
// Every word of shared memory is accessed atomically (relaxed unless stated),
// so there are no data races in the C++ sense even while a slot is torn.
//
//  1. Seqlock, writer: seq.store(odd, relaxed); fence(release); data stores
//     (relaxed); seq.store(even, release). The fence keeps the data stores
//     from becoming visible before the odd counter.
//  2. Seqlock, reader: s1 = seq.load(acquire); if odd retry; data loads
//     (relaxed); fence(acquire); s2 = seq.load(relaxed); keep the copy only if
//     s1 == s2. If any data load saw a store of a newer write, the fences
//     synchronise and s2 sees at least that write's odd counter.
//  3. Tags are published after their slot (release) and cleared after their
//     slot is emptied. A stale tag can only lead a reader to a slot whose key
//     then fails the full comparison, or to miss an entry: never to a wrong
//     value.
//  4. Epoch and tenant generations are bumped with release stores and read by
//     readers with acquire loads *after* the slot copy is validated. Anything
//     that happens-before a reader's lookup (in the test: the writer's "done"
//     flag, in production: the daemon answering an invalidate request) is
//     therefore seen by that lookup, and the entry is refused.
//  5. Header policy fields (stale_after_ns, idle_timeout_ns, synced, heartbeat)
//     are single atomics; a reader may see an older value for an instant, which
//     the staleness bound already allows for.
//  6. The immutable part of the header and the namespace table are written
//     before the file is renamed into place, so a reader that can open the
//     path sees them complete (rename is the publication point).
//  7. recency_shmid is stored (release) only after the segment's
//     RecencyHeader is written; readers load it (acquire) and use a segment
//     only if its owner and creator are the cache file's owner, its size
//     matches and its RecencyHeader carries this file's instance_id. A
//     restarted daemon that reuses the file keeps the segment while any
//     process still holds it, else creates one and stores the new id; readers
//     compare the id on their miss path (never on the hit path) and map the
//     new segment over the old one at the same address (SHM_REMAP), so a
//     thread still stamping through the old pointer writes into one segment
//     or the other, never into unmapped memory.
//
// Files are replaced, never resized: a daemon restarting with the same
// geometry reuses the file (bumping the epoch, since it missed everything
// while down) unless its hash seed is older than kMaxSeedAgeNs; with a
// different geometry or an old seed it writes a new file, renames it over the
// old path and sets `retired` in the old one. Readers report a retired file
// as unavailable and map the file now at the path; they unmap the old one
// only when none of their threads can still be inside it (see reader.h,
// "Thread safety"). Nothing in the file changes for that: the rename is the
// publication point (rule 6) and `retired` the signal, so the layout version
// stays. The daemon creates and reuses files only in a directory that no
// other user can write, and only files its own user owns.
#ifndef TENANTCACHE_CACHE_LAYOUT_H_
#define TENANTCACHE_CACHE_LAYOUT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace tenantcache::layout {

inline constexpr char kMagic[8] = {'T', 'N', 'T', 'C', 'A', 'C', 'H', 'E'};
inline constexpr char kRecencyMagic[8] = {'T', 'N', 'T', 'R', 'E', 'C', 'N', 'T'};
// Bump on any change to the structures below. Readers refuse other versions.
// 2: recency moved from the <path>.recency file to a SysV segment.
inline constexpr uint32_t kLayoutVersion = 2;

inline constexpr size_t kCacheLine = 64;
inline constexpr uint32_t kSlotsPerBucket = 8;
inline constexpr uint32_t kMaxNamespaces = 32;
inline constexpr uint32_t kMaxFields = 30;
inline constexpr size_t kNameMax = 64;  // including the terminating NUL
inline constexpr size_t kMaxKeyLen = 255;
inline constexpr uint32_t kMinSlotSize = 256;
inline constexpr uint32_t kMaxSlotSize = 4096;
inline constexpr uint32_t kDefaultSlotSize = 320;
inline constexpr size_t kSlotHeaderSize = 64;
inline constexpr size_t kMaxDataSize = kMaxSlotSize - kSlotHeaderSize;
inline constexpr uint16_t kNullField = 0xFFFF;
inline constexpr int kMaxReadRetries = 16;
inline constexpr unsigned kRecencyShift = 24;  // stamp unit: 2^24 ns
// A file's hash seed is kept across daemon restarts for at most this long
// (from created_realtime_ns): a seed that leaked, e.g. through a core dump or
// a backup of the file, lets clients aim keys at one bucket only until the
// file is recreated.
inline constexpr uint64_t kMaxSeedAgeNs = 7ull * 24 * 3600 * 1'000'000'000;
// recency_shmid when the file has no recency segment.
inline constexpr int32_t kNoRecency = -1;

enum KeyKind : uint32_t { kUuid = 1, kSlug = 2, kHost = 3, kText = 4 };

enum SlotState : uint8_t { kEmpty = 0, kValue = 1, kNegative = 2 };

struct alignas(kCacheLine) FileHeader {
  // Line 0: identity (immutable).
  char magic[8];
  uint32_t layout_version;
  uint32_t header_size;
  uint64_t fingerprint;
  uint64_t instance_id;  // random; the recency segment carries the same value
  uint64_t hash_seed;    // random; keys come from untrusted requests
  uint64_t file_size;
  uint32_t slot_size;
  uint32_t slots_per_bucket;
  uint64_t bucket_count;

  // Line 1: geometry (immutable).
  uint64_t namespaces_offset;
  uint64_t tenant_gens_offset;
  uint64_t tags_offset;
  uint64_t tenant_gen_count;  // a power of two
  uint32_t namespace_count;
  uint32_t reserved0;
  uint64_t capacity;             // entries requested at creation
  uint64_t created_realtime_ns;  // CLOCK_REALTIME; the hash seed's age (kMaxSeedAgeNs)
  uint64_t slots_offset;

  // Line 2: written by the daemon while it runs (rule 5).
  std::atomic<uint64_t> heartbeat_ns;  // CLOCK_MONOTONIC
  std::atomic<uint64_t> stale_after_ns;
  std::atomic<uint64_t> idle_timeout_ns;  // 0: no idle timeout
  std::atomic<uint32_t> synced;
  std::atomic<uint32_t> retired;
  std::atomic<int32_t> daemon_pid;
  std::atomic<int32_t> recency_shmid;  // rule 7; kNoRecency when none
  std::atomic<uint64_t> daemon_start_realtime_ns;
  std::atomic<uint64_t> entry_count;

  // Line 3: the epoch alone, bumped on flush and resynchronisation (rule 4).
  alignas(kCacheLine) std::atomic<uint64_t> epoch;

  // Where clients send misses (filled by the daemon; may be empty).
  alignas(kCacheLine) char control_socket[108];

  char reserved3[4096 - 4 * kCacheLine - 108];
};

struct NamespaceDesc {
  char name[kNameMax];
  uint32_t key_kind;  // KeyKind
  uint32_t max_key_len;
  uint32_t field_count;
  uint32_t reserved[13];
  char field_names[kMaxFields][kNameMax];
};

// Decoded form of a slot's metadata words (rule 1/2: copied as 7 words).
struct SlotMeta {
  uint8_t state;  // SlotState
  uint8_t ns;
  uint8_t field_count;
  uint8_t reserved;
  uint16_t key_len;
  uint16_t tenant_len;
  uint32_t data_len;    // bytes of the data area in use
  uint32_t tenant_idx;  // index into the tenant generation table
  uint64_t epoch;
  uint64_t tenant_gen;
  uint64_t expires_ns;  // CLOCK_MONOTONIC; entry is dead at or after it
  uint64_t filled_ns;
  uint64_t key_hash;
};
inline constexpr size_t kMetaWords = sizeof(SlotMeta) / 8;

struct alignas(kCacheLine) SlotHeader {
  std::atomic<uint32_t> seq;
  uint32_t reserved;
  uint64_t meta[kMetaWords];
};

struct alignas(32) BucketTags {
  std::atomic<uint32_t> tag[kSlotsPerBucket];
};

struct alignas(kCacheLine) RecencyHeader {
  char magic[8];
  uint32_t layout_version;
  uint32_t reserved;
  uint64_t instance_id;
  uint64_t slot_count;
  char reserved2[kCacheLine - 32];
};

static_assert(sizeof(FileHeader) == 4096);
static_assert(offsetof(FileHeader, namespaces_offset) == 64);
static_assert(offsetof(FileHeader, heartbeat_ns) == 128);
static_assert(offsetof(FileHeader, recency_shmid) == 164);
static_assert(offsetof(FileHeader, epoch) == 192);
static_assert(offsetof(FileHeader, control_socket) == 256);
static_assert(sizeof(NamespaceDesc) == 2048);
static_assert(offsetof(NamespaceDesc, field_names) == 128);
static_assert(sizeof(SlotMeta) == 56);
static_assert(sizeof(SlotHeader) == kSlotHeaderSize);
static_assert(offsetof(SlotHeader, meta) == 8);
static_assert(sizeof(BucketTags) == 32);
static_assert(offsetof(FileHeader, slots_offset) == 120);
static_assert(sizeof(RecencyHeader) == kCacheLine);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(kMaxKeyLen + 1 < kNullField);

// Everything a reader relies on, folded into one number stored in the file: a
// build whose structures differ refuses the file even if the version matches.
inline constexpr uint64_t Fingerprint() {
  uint64_t h = 1469598103934665603ull;
  const uint64_t parts[] = {kLayoutVersion,
                            sizeof(FileHeader),
                            offsetof(FileHeader, epoch),
                            offsetof(FileHeader, control_socket),
                            offsetof(FileHeader, recency_shmid),
                            sizeof(NamespaceDesc),
                            sizeof(SlotMeta),
                            sizeof(SlotHeader),
                            sizeof(BucketTags),
                            kSlotsPerBucket,
                            kMaxNamespaces,
                            kMaxFields,
                            kNameMax,
                            kRecencyShift};
  for (uint64_t p : parts) {
    h ^= p;
    h *= 1099511628211ull;
  }
  return h;
}

inline constexpr uint64_t NamespacesOffset() { return sizeof(FileHeader); }
inline constexpr uint64_t TenantGensOffset() {
  return NamespacesOffset() + kMaxNamespaces * sizeof(NamespaceDesc);
}
inline constexpr uint64_t RecencyBytes(uint64_t slot_count) {
  return sizeof(RecencyHeader) + slot_count * sizeof(uint32_t);
}
// shmat's failure value, (void*)-1, compared without an integer-to-pointer cast.
inline bool ShmatFailed(const void* p) { return reinterpret_cast<intptr_t>(p) == -1; }
inline constexpr uint64_t TagTableBytes(uint64_t bucket_count) {
  return (bucket_count * sizeof(BucketTags) + kCacheLine - 1) / kCacheLine * kCacheLine;
}

// Placement: the top bits of a 64x64 multiply map the hash onto any bucket
// count without a power-of-two rounding of the file size.
inline uint64_t BucketIndex(uint64_t hash, uint64_t bucket_count) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(hash) * bucket_count) >> 64);
}
inline uint32_t TagOf(uint64_t hash) { return static_cast<uint32_t>(hash >> 32) | 1u; }
// The slot of its bucket a key is put in when that slot is free (see "Home
// slots"): the hash's low bits, which neither the bucket index (its top
// bits) nor the tag (its high half) uses.
inline uint32_t HomeSlot(uint64_t hash) { return static_cast<uint32_t>(hash) & (kSlotsPerBucket - 1); }
// The k-th slot a probe of its bucket visits: from the home slot on, round
// the bucket (reader and writer visit in this one order).
inline uint32_t ProbeSlot(uint32_t home, uint32_t k) { return (home + k) & (kSlotsPerBucket - 1); }
inline uint64_t NamespaceSeed(uint64_t hash_seed, uint32_t ns) {
  return hash_seed ^ (0x9E3779B97F4A7C15ull * (uint64_t{ns} + 1));
}
inline uint32_t RecencyStamp(uint64_t now_ns) { return static_cast<uint32_t>(now_ns >> kRecencyShift); }

// Word-wise copies for seqlock-protected memory (rules 1 and 2), and the two
// fences of the protocol. Relaxed atomic loads and stores of aligned 8-byte
// words compile to plain moves, and loads work on read-only mappings.
//
// ThreadSanitizer does not model standalone fences. Under it the copies use
// per-word acquire loads and release stores instead, which give rules 1 and 2
// on their own (on x86-64 they are the same plain moves), and the fences go.
#if defined(__SANITIZE_THREAD__)
inline constexpr int kWordLoadOrder = __ATOMIC_ACQUIRE;
inline constexpr int kWordStoreOrder = __ATOMIC_RELEASE;
inline void WriterFence() {}
inline void ReaderFence() {}
#else
inline constexpr int kWordLoadOrder = __ATOMIC_RELAXED;
inline constexpr int kWordStoreOrder = __ATOMIC_RELAXED;
inline void WriterFence() { std::atomic_thread_fence(std::memory_order_release); }
inline void ReaderFence() { std::atomic_thread_fence(std::memory_order_acquire); }
#endif

// A slot's metadata, a word at a time, straight into `out` (no second copy:
// it is on every hit's path).
inline void LoadMeta(SlotMeta* out, const uint64_t* src) {
  auto* dst = reinterpret_cast<unsigned char*>(out);
  for (size_t i = 0; i < kMetaWords; ++i) {
    const uint64_t w = __atomic_load_n(src + i, kWordLoadOrder);
    std::memcpy(dst + sizeof w * i, &w, sizeof w);
  }
}
// Whole 64-byte lines, eight words a step: a slot's data area starts on a
// line and is whole lines long, so copying past its data's last word to the
// end of that line reads no other line (nor past the slot) and saves the
// steps a word count would cost.
inline void LoadLines(uint64_t* dst, const uint64_t* src, size_t lines) {
  for (const uint64_t* end = src + 8 * lines; src != end; src += 8, dst += 8) {
    const uint64_t a = __atomic_load_n(src, kWordLoadOrder);
    const uint64_t b = __atomic_load_n(src + 1, kWordLoadOrder);
    const uint64_t c = __atomic_load_n(src + 2, kWordLoadOrder);
    const uint64_t d = __atomic_load_n(src + 3, kWordLoadOrder);
    const uint64_t e = __atomic_load_n(src + 4, kWordLoadOrder);
    const uint64_t f = __atomic_load_n(src + 5, kWordLoadOrder);
    const uint64_t g = __atomic_load_n(src + 6, kWordLoadOrder);
    const uint64_t h = __atomic_load_n(src + 7, kWordLoadOrder);
    dst[0] = a;
    dst[1] = b;
    dst[2] = c;
    dst[3] = d;
    dst[4] = e;
    dst[5] = f;
    dst[6] = g;
    dst[7] = h;
  }
}
inline void StoreWords(uint64_t* dst, const uint64_t* src, size_t n) {
  for (size_t i = 0; i < n; ++i) __atomic_store_n(dst + i, src[i], kWordStoreOrder);
}

}  // namespace tenantcache::layout

#endif  // TENANTCACHE_CACHE_LAYOUT_H_
