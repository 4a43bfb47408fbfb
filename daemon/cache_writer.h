// The write side of the cache file, used only by tenantcached (the single
// writer). It owns the file's creation, its reuse across daemon restarts, the
// recency segment, and every store into them, following the protocol in
// client/src/cache_layout.h.
//
// Files are created and reused only where no other user can interfere: the
// directory must be owned by the daemon's user (or root) and writable by no
// one else, the cache and lock files must be owned by the daemon's user, and
// their mode and group must be what the configuration says once applied.
// Anything else is refused with a CacheError saying what to fix, because a
// file another user planted or can replace could serve forged entries.
//
// Thread safety: not thread-safe; one thread (the daemon's event loop) calls
// everything. Readers in other processes run concurrently by design.
#ifndef TENANTCACHE_DAEMON_CACHE_WRITER_H_
#define TENANTCACHE_DAEMON_CACHE_WRITER_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "cache_layout.h"

namespace tenantcache {

struct NamespaceSpec {
  std::string name;                 // [a-z0-9_], 1..63 bytes, unique
  uint32_t key_kind;                // layout::KeyKind
  uint32_t max_key_len;             // text keys: 1..255 (0 = 255); ignored for other kinds
  std::vector<std::string> fields;  // value column names, in query order
};

struct CacheOptions {
  std::string path;
  uint64_t capacity = 100000;  // entries; the file has 25% more slots
  uint32_t slot_size = layout::kDefaultSlotSize;
  mode_t mode = 0640;          // of the entries file; group read also grants the group the recency segment
  std::optional<gid_t> group;  // owner group of the file and the segment (the workers' group)
  std::vector<NamespaceSpec> namespaces;
  std::string control_socket;               // published for clients; may be empty
  uint64_t stale_after_ns = 5'000'000'000;  // fail-closed bound on the heartbeat's age
  uint64_t idle_timeout_ns = 0;             // 0: entries never expire from disuse
};

class CacheError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What a fill captured before its query was sent (see DESIGN "leases"): a
// Put under a lease is refused when the epoch or the entry's tenant changed
// after the lease was taken.
struct Lease {
  uint64_t epoch;
  uint64_t tenant_seq;
};

enum class PutResult { kStored, kRevoked, kTooLarge };

struct EntryData {
  std::string_view tenant;
  std::vector<std::optional<std::string_view>> fields;  // nullopt = SQL NULL
};

struct WriterStats {
  uint64_t entries = 0;  // slots in use
  uint64_t slots = 0;
  uint64_t puts = 0;
  uint64_t negative_puts = 0;
  uint64_t revoked = 0;    // puts refused by their lease
  uint64_t too_large = 0;  // entries that do not fit a slot
  uint64_t evictions = 0;  // live entries evicted to make room
  uint64_t reclaimed = 0;  // dead entries (expired, idle, invalidated by epoch/tenant) reused or swept
  uint64_t key_invalidations = 0;
  uint64_t tenant_invalidations = 0;
  uint64_t flushes = 0;
};

// Bytes of this process's mapping that starts at `base` mapped by 2 MiB
// page-table entries, from /proc/self/smaps (ShmemPmdMapped for tmpfs,
// FilePmdMapped for other filesystems); 0 when the kernel does not say.
uint64_t HugePageBytes(const void* base);

// The check CacheWriter::Open makes of the directory that will hold `path`
// (it exists, is owned by `owner` or root, and no one else can write it), for
// --check-config; `owner` unset accepts any owner. Throws CacheError.
void CheckCacheDirectory(const std::string& path, std::optional<uid_t> owner);

class CacheWriter {
 public:
  // Opens the file at options.path for writing. A file of this layout with the
  // same geometry and namespaces, whose hash seed is younger than
  // layout::kMaxSeedAgeNs, is reused (its epoch bumped: entries written before
  // cannot be trusted), and so is its recency segment while some process
  // still holds it; anything else is replaced by a new file renamed over the
  // path, and a replaced file of this layout is marked retired. The file
  // starts not synced. Throws CacheError naming the path and the cause, also
  // when the directory or an existing file is not safe (see above).
  static std::unique_ptr<CacheWriter> Open(const CacheOptions& options);

  ~CacheWriter();
  CacheWriter(const CacheWriter&) = delete;
  CacheWriter& operator=(const CacheWriter&) = delete;

  bool reused() const { return reused_; }
  // What Open decided beyond created/reused and why (seed too old, segment
  // kept or created, leftovers of older versions removed), for the log.
  const std::vector<std::string>& notes() const { return notes_; }
  int recency_shmid() const;
  const std::string& path() const { return options_.path; }
  uint64_t file_bytes() const { return size_; }
  uint64_t recency_bytes() const { return recency_size_; }
  // Bytes of the entries file the daemon's mapping got in 2 MiB pages when it
  // mapped the file (0: 4 KiB pages only). Readers mapping the file later get
  // the same pages: the kernel aligns their mappings to them.
  uint64_t huge_page_bytes() const { return huge_page_bytes_; }
  uint32_t namespace_count() const { return static_cast<uint32_t>(options_.namespaces.size()); }
  const NamespaceSpec& namespace_spec(uint32_t ns) const { return options_.namespaces[ns]; }
  // The namespace id of `name`, or -1.
  int FindNamespace(std::string_view name) const;

  // Takes a lease for a fill about to query the database.
  Lease BeginFill() const;

  // Stores an entry for `key` (already normalised) under `lease`. `ttl_ns` 0
  // means no expiry. kRevoked: the epoch or the entry's tenant changed since
  // the lease; kTooLarge: the entry does not fit a slot. Neither writes.
  PutResult Put(uint32_t ns, std::string_view key, const EntryData& entry, uint64_t ttl_ns,
                const Lease& lease);
  // Stores "no such row" for `key`.
  PutResult PutNegative(uint32_t ns, std::string_view key, uint64_t ttl_ns, const Lease& lease);

  // Removes `key`'s entry (value or negative). True if one was there.
  bool Invalidate(uint32_t ns, std::string_view key);
  // Invalidates every entry of `tenant` in every namespace, in O(1).
  void InvalidateTenant(std::string_view tenant);
  // Invalidates everything (bumps the epoch). Returns the new epoch.
  uint64_t Flush();

  void SetSynced(bool synced);
  // Stamps the heartbeat readers check with now, or with `at_ns`
  // (CLOCK_MONOTONIC) when the daemon can only vouch for the cache up to then.
  void Heartbeat();
  void Heartbeat(uint64_t at_ns);
  void SetPolicy(uint64_t stale_after_ns, uint64_t idle_timeout_ns);
  // Marks the file as replaced; readers report it unavailable.
  void Retire();

  // Empties dead slots in up to `max_buckets` buckets, continuing where the
  // previous call stopped; stops early, after a multiple of kSweepStride
  // buckets, once `budget_ns` has passed. Returns the number of slots emptied.
  static constexpr size_t kSweepStride = 16;
  size_t Sweep(size_t max_buckets, uint64_t budget_ns = UINT64_MAX);

  uint64_t epoch() const;
  WriterStats stats() const;
  // The tenant-generation counter a tenant's entries use. Tenants that share
  // one (a seeded hash picks it) invalidate each other: an extra miss, never a
  // stale read.
  uint32_t TenantIndex(std::string_view tenant) const;

 private:
  CacheWriter() = default;
  void Map(int fd, size_t size);
  bool ReuseRecency(int id, size_t size);
  void AttachRecency(size_t size, mode_t file_mode, gid_t file_gid);
  unsigned char* Slot(uint64_t bucket, uint32_t i) const;
  layout::BucketTags* Tags(uint64_t bucket) const;
  uint64_t KeyHash(uint32_t ns, std::string_view key) const;
  bool Dead(const layout::SlotMeta& m, uint64_t bucket, uint32_t i, uint64_t now) const;
  int FindSlot(uint64_t bucket, uint64_t hash, uint32_t ns, std::string_view key) const;
  uint32_t ChooseVictim(uint64_t bucket, uint32_t home, uint64_t now);
  PutResult Store(uint32_t ns, std::string_view key, const EntryData* entry, uint64_t ttl_ns,
                  const Lease& lease);
  void WriteSlot(unsigned char* slot, const layout::SlotMeta& meta, const unsigned char* data);
  void Empty(uint64_t bucket, uint32_t i);

  CacheOptions options_;
  int lock_fd_ = -1;  // flock held for the writer's life
  bool reused_ = false;
  std::vector<std::string> notes_;
  unsigned char* base_ = nullptr;
  size_t size_ = 0;
  uint64_t huge_page_bytes_ = 0;
  unsigned char* recency_base_ = nullptr;  // the recency segment (shmat)
  size_t recency_size_ = 0;
  layout::FileHeader* header_ = nullptr;
  std::atomic<uint64_t>* gens_ = nullptr;
  uint32_t* stamps_ = nullptr;
  uint64_t bucket_count_ = 0;
  // Lease bookkeeping, private to the daemon: the tenant_seq at which each
  // generation counter was last bumped.
  std::vector<uint64_t> tenant_bumped_at_;
  uint64_t tenant_seq_ = 0;
  uint64_t sweep_cursor_ = 0;
  WriterStats stats_;
  std::vector<uint64_t> scratch_;  // one slot's data area, word-aligned
};

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_CACHE_WRITER_H_
