// The C ABI of libtenantcache: opening the cache file and the lock-free read
// path. See tenantcache/tenantcache.h for the contract and cache_layout.h for
// the protocol; the numbered rules cited below are that file's.
#include "tenantcache/tenantcache.h"

#include <fcntl.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstring>
#include <new>
#include <string>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cache_layout.h"
#include "entry.h"
#include "keys.h"
#include "reader.h"

using tenantcache::CoarseNowNs;
using tenantcache::EntryView;
using tenantcache::Mapping;
using tenantcache::ReaderNowNs;
using tenantcache::ThreadStats;
using tenantcache::ValueMeta;
namespace layout = tenantcache::layout;

namespace {

// Ids of handles, for the threads' counter caches (never reused).
std::atomic<uint64_t> g_next_stats_id{1};

static_assert(sizeof(ValueMeta) <= sizeof(tc_value::priv_reserved));
static_assert(sizeof(tc_value::priv_data) < layout::kNullField);
static_assert(sizeof(tc_value::priv_data) >= layout::kMaxDataSize);
// ReadSlot copies whole lines (layout::LoadLines): a slot's data area, its
// size a multiple of the line (ValidateLayout), fits priv_data rounded up.
static_assert(layout::kSlotHeaderSize % layout::kCacheLine == 0 &&
              layout::kMaxDataSize % layout::kCacheLine == 0);
static_assert(offsetof(tc_value, priv_data) % 8 == 0);

// Closes fd and returns status, keeping the errno of the failure.
int FailIo(int fd, int status) {
  const int saved = errno;
  if (fd >= 0) close(fd);
  errno = saved;
  return status;
}

// How often a handle whose file is unavailable looks at its path for a
// replacement: a few system calls, far below the staleness bound.
constexpr uint64_t kFollowIntervalNs = 50'000'000;

long Membarrier(int cmd) { return syscall(__NR_membarrier, cmd, 0U, 0); }

// The full barrier of rules 2 and 4 where membarrier is not used.
// ThreadSanitizer does not model standalone fences (and GCC refuses them
// under it, as cache_layout.h explains): there a seq_cst read-modify-write of
// one shared word stands in. Every such RMW is ordered with every other, so
// the reader's and the reclaimer's still cannot both miss each other's store.
#if defined(__SANITIZE_THREAD__)
std::atomic<uint64_t> g_fence_word{0};
inline void FullFence() { g_fence_word.fetch_add(0, std::memory_order_seq_cst); }
#else
inline void FullFence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
#endif

// Rule 2 of reader.h: false when membarrier can give the reclaimer a barrier
// on every thread, so that readers need only a compiler barrier; true when
// readers must fence. Decided by the first tc_cache_open (DecideReaderFence),
// before any read section can exist, and never changed after: a process that
// loads the library without opening a handle makes no system call for it.
std::atomic<bool> g_reader_fence{true};

void DecideReaderFence() {
  static const bool fence = Membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0;
  // Relaxed: the handle that needs the value reaches other threads only
  // through the caller's own synchronisation, after this store.
  g_reader_fence.store(fence, std::memory_order_relaxed);
}

// Rule 4: after `current` changed, a full barrier on every thread of the
// process. False when the kernel refuses every way of giving one (then the old
// file stays mapped until the handle is closed, never unmapped under a reader).
bool BarrierOnAllReaders() {
  if (g_reader_fence.load(std::memory_order_relaxed)) {
    FullFence();
    return true;
  }
  if (Membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return true;
  // A process forked from the registered one may need its own registration.
  if (Membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0 &&
      Membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0)
    return true;
  return Membarrier(MEMBARRIER_CMD_GLOBAL) == 0;
}

// Rules 1 and 2: enters a read section; returns the odd counter value.
inline uint64_t EnterSection(ThreadStats* s) {
  const uint64_t v = s->section.load(std::memory_order_relaxed) + 1;
  // Release keeps this store in the release sequence of the previous
  // LeaveSection, which the switching thread's acquire load pairs with (in
  // C++20 a relaxed store would end that sequence); free on x86 and ARMv8.
  s->section.store(v, std::memory_order_release);
  if (g_reader_fence.load(std::memory_order_relaxed)) {
    FullFence();
  } else {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  return v;
}

// Rule 3: every load from the mapping happens before this store.
inline void LeaveSection(ThreadStats* s, uint64_t v) { s->section.store(v + 1, std::memory_order_release); }

// Maps segment `id` over the stamps (SHM_REMAP keeps their address) if it is
// provably this file's: created and owned by the file's owner (no other user
// can forge that), of the right size, and carrying this file's instance id.
// Returns false, with the stamps untouched, otherwise or when the caller may
// not write it.
bool AttachRecency(Mapping* m, int id) {
  if (id == layout::kNoRecency) return false;
  shmid_ds ds{};
  if (shmctl(id, IPC_STAT, &ds) != 0) return false;
  if (ds.shm_perm.uid != m->owner || ds.shm_perm.cuid != m->owner || ds.shm_segsz != m->recency_size)
    return false;
  // Checked through a read-only attachment first, so that other threads never
  // stamp into a segment that turns out to be another file's.
  void* probe = shmat(id, nullptr, SHM_RDONLY);
  if (layout::ShmatFailed(probe)) return false;
  const auto* rh = static_cast<const layout::RecencyHeader*>(probe);
  const bool ours = std::memcmp(rh->magic, layout::kRecencyMagic, sizeof rh->magic) == 0 &&
                    rh->layout_version == layout::kLayoutVersion &&
                    rh->instance_id == m->header->instance_id &&
                    rh->slot_count == m->bucket_count * layout::kSlotsPerBucket;
  shmdt(probe);
  return ours && !layout::ShmatFailed(shmat(id, m->recency_base, SHM_REMAP));
}

// Private stamps of the segment's size at the stamps' address.
bool MapPrivateRecency(Mapping* m) {
  const int fixed = m->recency_base != nullptr ? MAP_FIXED : 0;
  void* p = mmap(m->recency_base, m->recency_size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | fixed, -1, 0);
  if (p == MAP_FAILED) return false;
  m->recency_base = static_cast<unsigned char*>(p);
  m->stamps = reinterpret_cast<uint32_t*>(m->recency_base + sizeof(layout::RecencyHeader));
  return true;
}

// Unmaps the file and its stamps (munmap also detaches a SysV segment).
void Unmap(Mapping* m) {
  munmap(const_cast<unsigned char*>(m->base), m->size);
  if (m->recency_base != nullptr) munmap(m->recency_base, m->recency_size);
  m->released = true;
}

// Refuses what another user could have planted or could replace, as ssh's
// StrictModes does: a cache file writable by its group or others, or one in a
// directory writable by anyone but its owner or owned by someone other than
// root or the file's owner. The daemon never creates files so. Returns the
// open file, or -1 with errno set (EPERM for those refusals; ELOOP for a
// symbolic link, which would escape the directory check).
int OpenSafely(const char* path, struct stat* st) {
  const char* slash = std::strrchr(path, '/');
  const std::string dir = slash == nullptr ? "." : slash == path ? "/" : std::string(path, slash);
  const char* name = slash == nullptr ? path : slash + 1;
  const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return -1;
  struct stat dst;
  const int fd = fstat(dfd, &dst) == 0 ? openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : -1;
  FailIo(dfd, 0);
  if (fd < 0) return -1;
  if (fstat(fd, st) != 0) return FailIo(fd, -1);
  if (!S_ISREG(st->st_mode)) return fd;  // not a cache file at all: the caller says so
  if ((st->st_mode & (S_IWGRP | S_IWOTH)) != 0 || (dst.st_mode & (S_IWGRP | S_IWOTH)) != 0 ||
      (dst.st_uid != 0 && dst.st_uid != st->st_uid)) {
    close(fd);
    errno = EPERM;
    return -1;
  }
  return fd;
}

// Fail closed (see the header): retired, not synced, or heartbeat too old.
// Rule 4/5: synced is loaded with acquire so that a reader that sees the
// daemon's "synced again" also sees the epoch bump made before it.
inline bool Available(const layout::FileHeader* h, uint64_t now) {
  if (h->retired.load(std::memory_order_acquire) != 0) return false;
  if (h->synced.load(std::memory_order_acquire) == 0) return false;
  const uint64_t hb = h->heartbeat_ns.load(std::memory_order_acquire);
  const uint64_t bound = h->stale_after_ns.load(std::memory_order_relaxed);
  return static_cast<int64_t>(now - hb) <= static_cast<int64_t>(bound);
}

enum class SlotRead { kMatch, kNoMatch, kTorn };

inline uint64_t Load64(const void* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Whether the key at the start of a slot's data is `key` (`len` bytes):
// eight bytes a step with the copy's own word loads, so that the compare
// reads the slot while the copy is made, not the copy just stored (a load
// that spans two of its stores would wait for both to reach the cache).
// Between the seqlock's loads, like the copy (rule 2). The slot's data area
// is whole words, so the last word is read whole and its bytes past the key
// masked off.
inline bool KeyInSlot(const uint64_t* data, const char* key, size_t len) {
  uint64_t diff = 0;
  size_t i = 0;
  const size_t words = len / 8;
  for (; i + 2 <= words; i += 2)
    diff |= (__atomic_load_n(data + i, layout::kWordLoadOrder) ^ Load64(key + 8 * i)) |
            (__atomic_load_n(data + i + 1, layout::kWordLoadOrder) ^ Load64(key + 8 * i + 8));
  if (i < words) {
    diff |= __atomic_load_n(data + i, layout::kWordLoadOrder) ^ Load64(key + 8 * i);
    ++i;
  }
  const size_t rest = len - 8 * i;
  if (rest == 0) return diff == 0;
  // The key's last `rest` bytes as the word's first ones.
  uint64_t tail = 0;
  if (len >= 8) {
    tail = Load64(key + len - 8);
    tail = std::endian::native == std::endian::little ? tail >> (64 - 8 * rest) : tail << (64 - 8 * rest);
  } else {
    std::memcpy(&tail, key, rest);
  }
  const uint64_t mask = std::endian::native == std::endian::little ? (uint64_t{1} << (8 * rest)) - 1
                                                                   : ~((~uint64_t{0}) >> (8 * rest));
  diff |= (__atomic_load_n(data + i, layout::kWordLoadOrder) ^ tail) & mask;
  return diff == 0;
}

// Copies one slot under its seqlock (rule 2) into `meta` and out->priv_data,
// and compares the key in full.
inline SlotRead ReadSlot(const Mapping* c, const unsigned char* slot, uint32_t ns, const char* key,
                         size_t key_len, uint64_t hash, layout::SlotMeta* meta, tc_value* out) {
  const auto* sh = reinterpret_cast<const layout::SlotHeader*>(slot);
  const auto* data = reinterpret_cast<const uint64_t*>(slot + layout::kSlotHeaderSize);
  const size_t data_cap = c->slot_size - layout::kSlotHeaderSize;
  for (int attempt = 0; attempt < layout::kMaxReadRetries; ++attempt) {
    const uint32_t s1 = sh->seq.load(std::memory_order_acquire);
    if (s1 & 1u) {
      __builtin_ia32_pause();
      continue;
    }
    layout::LoadMeta(meta, sh->meta);
    // The key and its NUL inside the data area: KeyInSlot reads the slot's
    // key before the seqlock has validated these lengths (a torn copy may
    // pair any of them), and must not read past the slot.
    const bool candidate = meta->state != layout::kEmpty && meta->ns == ns && meta->key_len == key_len &&
                           meta->key_hash == hash && key_len < meta->data_len && meta->data_len <= data_cap;
    bool same = false;
    if (candidate) {
      layout::LoadLines(reinterpret_cast<uint64_t*>(out->priv_data), data,
                        (meta->data_len + layout::kCacheLine - 1) / layout::kCacheLine);
      same = KeyInSlot(data, key, key_len);
    }
    layout::ReaderFence();
    if (sh->seq.load(std::memory_order_relaxed) != s1) continue;
    if (!same) return SlotRead::kNoMatch;
    return SlotRead::kMatch;
  }
  return SlotRead::kTorn;
}

}  // namespace

namespace {

// Maps the file open at `fd` (closed here) as tc_cache_open describes:
// a regular file, complete, of this layout. 0 or a TC_E_* status.
int MapFile(int fd, const struct stat& st, std::unique_ptr<Mapping>* out) {
  if (!S_ISREG(st.st_mode)) return FailIo(fd, TC_E_LAYOUT);
  const auto size = static_cast<size_t>(st.st_size);
  if (size < sizeof(layout::FileHeader)) return FailIo(fd, TC_E_LAYOUT);
  // Rule 6: the file was complete when it was renamed into place; the read-only
  // mapping makes any write through it fault, so no worker can corrupt it.
  void* base = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return FailIo(fd, TC_E_IO);
  close(fd);
  if (tenantcache::ValidateLayout(base, size) != nullptr) {
    munmap(base, size);
    return TC_E_LAYOUT;
  }
  auto m = std::unique_ptr<Mapping>(new (std::nothrow) Mapping);
  if (m == nullptr) {
    munmap(base, size);
    return TC_E_NOMEM;
  }
  m->base = static_cast<const unsigned char*>(base);
  m->size = size;
  m->header = static_cast<const layout::FileHeader*>(base);
  const auto* h = m->header;
  m->tags = reinterpret_cast<const layout::BucketTags*>(m->base + h->tags_offset);
  m->slots = m->base + h->slots_offset;
  m->tenant_gens = reinterpret_cast<const std::atomic<uint64_t>*>(m->base + h->tenant_gens_offset);
  m->tenant_gen_mask = h->tenant_gen_count - 1;
  m->bucket_count = h->bucket_count;
  m->slot_size = h->slot_size;
  m->dev = st.st_dev;
  m->ino = st.st_ino;
  m->owner = st.st_uid;
  std::memcpy(m->control_socket, h->control_socket, sizeof m->control_socket);
  for (uint32_t i = 0; i < h->namespace_count; ++i) m->ns_seed[i] = layout::NamespaceSeed(h->hash_seed, i);
  m->recency_size = layout::RecencyBytes(m->bucket_count * layout::kSlotsPerBucket);
  if (!MapPrivateRecency(m.get())) {
    munmap(base, size);
    return TC_E_NOMEM;
  }
  const int32_t id = h->recency_shmid.load(std::memory_order_acquire);  // Rule 7.
  m->recency_seen.store(id, std::memory_order_relaxed);
  m->recency_shared.store(AttachRecency(m.get(), id), std::memory_order_relaxed);
  *out = std::move(m);
  return 0;
}

// Reader rule 6: gives every namespace of `m`'s file its handle id (a new id
// for a name the handle has not seen) and its description, reusing `prev`'s
// when identical. Under follow_mu (or before the handle is shared), before
// `m` is published. Throws std::bad_alloc.
void BindNamespaces(tc_cache* c, Mapping* m, const Mapping* prev) {
  const auto* h = m->header;
  const auto* table = reinterpret_cast<const layout::NamespaceDesc*>(m->base + h->namespaces_offset);
  std::fill(std::begin(m->file_ns), std::end(m->file_ns), tenantcache::kAbsentNs);
  uint32_t count = c->ns_count.load(std::memory_order_relaxed);
  for (uint32_t i = 0; i < h->namespace_count; ++i) {
    const layout::NamespaceDesc& d = table[i];
    uint32_t id = 0;
    while (id < count && std::strcmp(c->ns_names[id], d.name) != 0) ++id;
    // Past the limit a name stays unreachable through this handle (a process
    // that has followed hundreds of renamed namespaces); a new handle sees it.
    if (id == tenantcache::kMaxHandleNamespaces) continue;
    if (id == count) std::memcpy(c->ns_names[count++], d.name, layout::kNameMax);
    if (prev != nullptr && id < prev->ns_limit && prev->desc[id] != nullptr &&
        std::memcmp(prev->desc[id], &d, sizeof d) == 0) {
      m->desc[id] = prev->desc[id];
    } else {
      c->descs.push_back(std::make_unique<layout::NamespaceDesc>(d));
      m->desc[id] = c->descs.back().get();
    }
    m->file_ns[id] = static_cast<uint8_t>(i);
  }
  m->ns_limit = count;
  c->ns_count.store(count, std::memory_order_release);  // the names before their ids
}

// Reader rule 4: unmaps every retired file whose readers have all left the
// section they were in when it was retired. Under follow_mu.
void ReleaseRetiredLocked(tc_cache* c) {
  for (const auto& m : c->mappings) {
    if (!m->retired || m->released || m->pinned) continue;
    const bool left = std::all_of(m->readers.begin(), m->readers.end(), [](const auto& r) {
      return r.first->section.load(std::memory_order_acquire) != r.second;
    });
    if (!left) continue;
    Unmap(m.get());
    m->readers.clear();
    c->pending_release.fetch_sub(1, std::memory_order_relaxed);
  }
}

// Maps the file now at the handle's path if it is another file than `cur`'s
// and passes every check of tc_cache_open, and makes it current. Under
// follow_mu.
bool SwitchLocked(tc_cache* c, Mapping* cur) {
  struct stat st;
  const int fd = OpenSafely(c->path.c_str(), &st);
  if (fd < 0) return false;
  if (st.st_dev == cur->dev && st.st_ino == cur->ino) return FailIo(fd, false);
  std::unique_ptr<Mapping> m;
  if (MapFile(fd, st, &m) != 0) return false;
  Mapping* next = m.get();
  try {
    BindNamespaces(c, next, cur);
    c->mappings.push_back(std::move(m));
  } catch (const std::bad_alloc&) {
    if (m != nullptr) Unmap(m.get());
    return false;
  }
  // Rule 2/4: the store, then the barrier, then the counters.
  c->current.store(next, std::memory_order_seq_cst);
  cur->retired = true;
  if (!BarrierOnAllReaders()) {
    cur->pinned = true;
    return true;
  }
  {
    std::lock_guard<std::mutex> lock(c->stats_mu);
    for (const auto& t : c->thread_stats) {
      const uint64_t v = t->section.load(std::memory_order_acquire);
      if ((v & 1u) != 0) cur->readers.emplace_back(t.get(), v);
    }
  }
  c->pending_release.fetch_add(1, std::memory_order_relaxed);
  return true;
}

}  // namespace

namespace tenantcache {

void PublishValue(tc_value* out, const layout::NamespaceDesc* d, const ValueMeta& vm, size_t data_len) {
  std::memcpy(&out->priv_reserved[0], &vm, sizeof vm);
  out->priv_ns = d;
  out->priv_len = static_cast<uint32_t>(data_len);
  out->priv_status = static_cast<uint32_t>(TC_FOUND);
}

void RefreshRecency(Mapping* m) {
  const int32_t id = m->header->recency_shmid.load(std::memory_order_acquire);  // Rule 7.
  int32_t seen = m->recency_seen.load(std::memory_order_relaxed);
  // One thread acts on each new id; the others keep stamping meanwhile.
  if (id == seen || !m->recency_seen.compare_exchange_strong(seen, id, std::memory_order_relaxed)) return;
  if (AttachRecency(m, id)) {
    m->recency_shared.store(true, std::memory_order_relaxed);
  } else if (m->recency_shared.exchange(false, std::memory_order_relaxed)) {
    // Stop holding a segment the daemon no longer reads.
    MapPrivateRecency(m);
  }
}

bool Follow(const tc_cache* cache) {
  auto* c = const_cast<tc_cache*>(cache);
  const uint64_t now = CoarseNowNs();
  if (now < c->next_follow_ns.load(std::memory_order_relaxed)) return false;
  std::unique_lock<std::mutex> lock(c->follow_mu, std::try_to_lock);
  if (!lock.owns_lock()) return false;  // another thread is at it
  c->next_follow_ns.store(now + kFollowIntervalNs, std::memory_order_relaxed);
  Mapping* cur = c->current.load(std::memory_order_relaxed);
  // Holding follow_mu, nobody can unmap `cur`.
  const bool switched = !Available(cur->header, ReaderNowNs()) && SwitchLocked(c, cur);
  ReleaseRetiredLocked(c);
  return switched;
}

const layout::NamespaceDesc* CurrentDesc(const tc_cache* cache, tc_ns ns) {
  const Mapping* m = cache->current.load(std::memory_order_acquire);
  return ns < m->ns_limit ? m->desc[ns] : nullptr;
}

const char* HandleNsName(const tc_cache* cache, tc_ns ns) {
  return ns < cache->ns_count.load(std::memory_order_acquire) ? cache->ns_names[ns] : nullptr;
}

namespace {

// Reader rule 7: the open handles, linked through registry_prev/next.
std::mutex g_handles_mu;
tc_cache* g_handles = nullptr;

// Before fork(): no other thread may be inside a change of any handle's
// bookkeeping when the child's copy is made. Lock order: the registry, then
// per handle follow_mu, pool_mu, stats_mu (the code's own nesting; no code
// holds locks of two handles).
void PrepareFork() {
  g_handles_mu.lock();
  for (tc_cache* c = g_handles; c != nullptr; c = c->registry_next) {
    c->follow_mu.lock();
    c->pool_mu.lock();
    c->stats_mu.lock();
  }
}

void ParentAfterFork() {
  for (tc_cache* c = g_handles; c != nullptr; c = c->registry_next) {
    c->stats_mu.unlock();
    c->pool_mu.unlock();
    c->follow_mu.unlock();
  }
  g_handles_mu.unlock();
}

// In the child, where only the forking thread exists: no allocation, no
// waiting.
void ChildAfterFork() {
  for (tc_cache* c = g_handles; c != nullptr; c = c->registry_next) {
    // The threads whose counters are odd were not copied; the forking thread
    // is outside any section. Their counters must not hold back a release.
    for (const auto& t : c->thread_stats) {
      const uint64_t v = t->section.load(std::memory_order_relaxed);
      if ((v & 1u) != 0) t->section.store(v + 1, std::memory_order_relaxed);
    }
    // The parent's sockets are not ours to use; closing our copies leaves
    // the parent's connections intact. clear() keeps the capacity: no free.
    for (const int fd : c->idle_fds) close(fd);
    c->idle_fds.clear();
    c->stats_mu.unlock();
    c->pool_mu.unlock();
    c->follow_mu.unlock();
  }
  g_handles_mu.unlock();
}

}  // namespace

bool RegisterHandle(tc_cache* cache) {
  // Installed once per process, on the first open: a process that never
  // opens a handle pays nothing at fork().
  static const bool installed = pthread_atfork(PrepareFork, ParentAfterFork, ChildAfterFork) == 0;
  if (!installed) return false;
  std::lock_guard<std::mutex> lock(g_handles_mu);
  cache->registry_next = g_handles;
  if (g_handles != nullptr) g_handles->registry_prev = cache;
  g_handles = cache;
  return true;
}

void UnregisterHandle(tc_cache* cache) {
  std::lock_guard<std::mutex> lock(g_handles_mu);
  if (cache->registry_prev != nullptr) {
    cache->registry_prev->registry_next = cache->registry_next;
  } else if (g_handles == cache) {
    g_handles = cache->registry_next;
  } else {
    return;  // never registered
  }
  if (cache->registry_next != nullptr) cache->registry_next->registry_prev = cache->registry_prev;
  cache->registry_prev = cache->registry_next = nullptr;
}

}  // namespace tenantcache

extern "C" {

int tc_cache_open(const char* path, tc_cache** out) {
  if (path == nullptr || out == nullptr) return TC_E_INVALID_ARG;
  *out = nullptr;
  DecideReaderFence();
  // The handle looks for replacements at this path: made absolute now, so
  // that a later chdir() does not send it elsewhere.
  std::string abs;
  try {
    abs = path;
    char cwd[PATH_MAX];
    if (path[0] != '/' && getcwd(cwd, sizeof cwd) != nullptr) abs = std::string(cwd) + "/" + path;
  } catch (const std::bad_alloc&) {
    return TC_E_NOMEM;
  }
  struct stat st;
  const int fd = OpenSafely(abs.c_str(), &st);
  if (fd < 0) return TC_E_IO;
  std::unique_ptr<Mapping> m;
  const int rc = MapFile(fd, st, &m);
  if (rc != 0) return rc;
  auto* c = new (std::nothrow) tc_cache;
  if (c == nullptr) {
    Unmap(m.get());
    return TC_E_NOMEM;
  }
  try {
    c->path = std::move(abs);
    BindNamespaces(c, m.get(), nullptr);
    c->current.store(m.get(), std::memory_order_release);
    c->mappings.push_back(std::move(m));
  } catch (const std::bad_alloc&) {
    if (m != nullptr) Unmap(m.get());
    delete c;
    return TC_E_NOMEM;
  }
  c->stats_id = g_next_stats_id.fetch_add(1);
  if (!tenantcache::RegisterHandle(c)) {
    tc_cache_close(c);
    return TC_E_NOMEM;
  }
  *out = c;
  return 0;
}

void tc_cache_close(tc_cache* cache) {
  if (cache == nullptr) return;
  tenantcache::UnregisterHandle(cache);
  tenantcache::ReportOnClose(cache);
  for (const auto& m : cache->mappings)
    if (!m->released) Unmap(m.get());
  for (int fd : cache->idle_fds) close(fd);
  delete cache;
}

namespace {

// The handle id of `name` if the current file has it (reader rule 6).
bool FindNamespace(const tc_cache* cache, const char* name, tc_ns* out) {
  const uint32_t count = cache->ns_count.load(std::memory_order_acquire);
  for (uint32_t i = 0; i < count; ++i) {
    if (std::strcmp(cache->ns_names[i], name) == 0) {
      *out = i;
      return tenantcache::CurrentDesc(cache, i) != nullptr;
    }
  }
  return false;
}

// The description of id `ns` in the current file; when that file lacks it,
// in the file now at the path if the handle can follow there (reader rule 6).
const layout::NamespaceDesc* DescFollowing(const tc_cache* cache, tc_ns ns) {
  const auto* d = tenantcache::CurrentDesc(cache, ns);
  if (d == nullptr && ns < cache->ns_count.load(std::memory_order_acquire) && tenantcache::Follow(cache))
    d = tenantcache::CurrentDesc(cache, ns);
  return d;
}

}  // namespace

int tc_namespace(const tc_cache* cache, const char* name, tc_ns* out) {
  if (cache == nullptr || name == nullptr || out == nullptr) return TC_E_INVALID_ARG;
  // A name only a replacement file has is found once the handle follows it.
  if (FindNamespace(cache, name, out) || (tenantcache::Follow(cache) && FindNamespace(cache, name, out)))
    return 0;
  return TC_E_NO_NAMESPACE;
}

uint32_t tc_namespace_count(const tc_cache* cache) {
  return cache == nullptr ? 0 : cache->ns_count.load(std::memory_order_acquire);
}

const char* tc_namespace_name(const tc_cache* cache, tc_ns ns) {
  return cache == nullptr ? nullptr : tenantcache::HandleNsName(cache, ns);
}

int tc_namespace_key_kind(const tc_cache* cache, tc_ns ns) {
  if (cache == nullptr) return TC_E_INVALID_ARG;
  const auto* d = DescFollowing(cache, ns);
  return d == nullptr ? TC_E_NO_NAMESPACE : static_cast<int>(d->key_kind);
}

int tc_cache_normalize_key(const tc_cache* cache, tc_ns ns, const char* key, size_t key_len, char* buf,
                           size_t* out_len, const char** why) {
  if (cache == nullptr || buf == nullptr || out_len == nullptr) return TC_E_INVALID_ARG;
  const auto* d = DescFollowing(cache, ns);
  if (d == nullptr) return TC_E_NO_NAMESPACE;
  const auto r = tenantcache::NormalizeKey(d->key_kind, d->max_key_len, key, key_len, buf);
  if (!r.ok()) {
    if (why != nullptr) *why = r.error;
    return TC_E_INVALID_KEY;
  }
  buf[r.len] = '\0';
  *out_len = r.len;
  return 0;
}

namespace {

// The calling thread's counters for `cache`: a thread-local cache of a few
// (handle id, block) pairs, so the hit path neither locks nor allocates after
// a thread's first read through a handle.
struct StatsSlot {
  uint64_t id;
  tenantcache::ThreadStats* stats;
};
thread_local StatsSlot t_stats[4] = {};
thread_local unsigned t_stats_next = 0;

// A thread's first read through a handle (or after three others): out of
// line, so that the hit path keeps only the loop.
[[gnu::noinline, gnu::cold]] tenantcache::ThreadStats* NewStats(const tc_cache* cache) {
  auto* c = const_cast<tc_cache*>(cache);
  std::lock_guard<std::mutex> lock(c->stats_mu);
  c->thread_stats.push_back(std::make_unique<tenantcache::ThreadStats>());
  StatsSlot& s = t_stats[t_stats_next++ % 4];
  s = StatsSlot{cache->stats_id, c->thread_stats.back().get()};
  return s.stats;
}

inline tenantcache::ThreadStats* MyStats(const tc_cache* cache) {
  for (const StatsSlot& s : t_stats)
    if (s.stats != nullptr && s.id == cache->stats_id) return s.stats;
  return NewStats(cache);
}

// Whether status `rc` of a read of id `ns` may come from a file the daemon
// has since replaced.
inline bool NeedsFollow(const tc_cache* cache, tc_ns ns, int rc) {
  return rc == TC_E_UNAVAILABLE || ((rc == TC_E_NO_NAMESPACE || rc == TC_E_INVALID_KEY) &&
                                    ns < cache->ns_count.load(std::memory_order_relaxed));
}

inline void Bump(std::atomic<uint64_t>& counter) {
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

// Inlined into Read: it is the hit path.
[[gnu::always_inline]] inline int Get(Mapping* m, tc_ns ns, const char* key, size_t key_len, tc_value* out);

// One lookup in the current file, inside a read section (reader rules 1-3).
// *used is the file read (its Mapping outlives the section, rule 5).
inline int Read(const tc_cache* cache, ThreadStats* s, tc_ns ns, const char* key, size_t key_len,
                tc_value* out, const Mapping** used) {
  const uint64_t section = EnterSection(s);
  Mapping* m = cache->current.load(std::memory_order_acquire);
  *used = m;
  const int rc = Get(m, ns, key, key_len, out);
  // Inside the section: the segment is remapped into this file's stamps.
  if (rc == TC_MISS) tenantcache::RefreshRecency(m);
  LeaveSection(s, section);
  return rc;
}

// Unmaps retired files whose readers have moved on (reader rule 4), unless
// another thread is at it. Called only while a retired file is still mapped,
// which lasts until every thread that was reading it has finished that one
// read: then, and only then, a hit pays for a try_lock (no system call).
void ReleaseRetired(const tc_cache* cache) {
  auto* c = const_cast<tc_cache*>(cache);
  std::unique_lock<std::mutex> lock(c->follow_mu, std::try_to_lock);
  if (lock.owns_lock()) ReleaseRetiredLocked(c);
}

// What ReadFollowing does after a first read that was not a plain hit, out
// of line so that a hit's path stays short.
[[gnu::noinline]] int AfterRead(const tc_cache* cache, tenantcache::ThreadStats* s, tc_ns ns, const char* key,
                                size_t key_len, tc_value* out, int rc, const Mapping* used) {
  // A retired or dead file: the daemon may have put a new one at the path.
  // So may a file that lacks the id's namespace or gives it another key kind
  // (a daemon restarted with a config slip, then again with it fixed): the id
  // works again once the handle reads a file that has it (reader rule 6).
  // Follow is rate-limited and switches only away from an unavailable file;
  // when it does nothing because another thread has just switched, the read
  // is made again on the file that thread published.
  if (NeedsFollow(cache, ns, rc) &&
      (tenantcache::Follow(cache) || cache->current.load(std::memory_order_acquire) != used))
    rc = Read(cache, s, ns, key, key_len, out, &used);
  if (cache->pending_release.load(std::memory_order_relaxed) != 0) ReleaseRetired(cache);
  return rc;
}

// Read, following a replaced file and releasing retired ones; not counted.
inline int ReadFollowing(const tc_cache* cache, tenantcache::ThreadStats* s, tc_ns ns, const char* key,
                         size_t key_len, tc_value* out) {
  const Mapping* used = nullptr;
  const int rc = Read(cache, s, ns, key, key_len, out, &used);
  if (rc == TC_FOUND && cache->pending_release.load(std::memory_order_relaxed) == 0) return rc;
  return AfterRead(cache, s, ns, key, key_len, out, rc, used);
}

}  // namespace

// Flattened: the whole hit (section, key, hash, slot copy) is one function,
// without the calls and register saves of the helpers the compiler would
// otherwise keep out of line; the miss and follow paths stay out (noinline).
[[gnu::flatten]] int tc_cache_get(const tc_cache* cache, tc_ns ns, const char* key, size_t key_len,
                                  tc_value* out) {
  if (cache == nullptr || key == nullptr || out == nullptr) return TC_E_INVALID_ARG;
  tenantcache::ThreadStats* s = MyStats(cache);
  const int rc = ReadFollowing(cache, s, ns, key, key_len, out);
  if (rc == TC_FOUND || rc == TC_NOT_FOUND || rc == TC_MISS || rc == TC_E_UNAVAILABLE) {
    Bump(rc == TC_FOUND       ? s->hits
         : rc == TC_NOT_FOUND ? s->negative_hits
         : rc == TC_MISS      ? s->misses
                              : s->unavailable);
  }
  return rc;
}

int tc_cache_stats(const tc_cache* cache, tc_stats* out) {
  if (cache == nullptr || out == nullptr) return TC_E_INVALID_ARG;
  *out = tc_stats{};
  auto* c = const_cast<tc_cache*>(cache);
  std::lock_guard<std::mutex> lock(c->stats_mu);
  for (const auto& t : c->thread_stats) {
    out->hits += t->hits.load(std::memory_order_relaxed);
    out->negative_hits += t->negative_hits.load(std::memory_order_relaxed);
    out->misses += t->misses.load(std::memory_order_relaxed);
    out->unavailable += t->unavailable.load(std::memory_order_relaxed);
  }
  return 0;
}

namespace {

inline int Get(Mapping* cache, tc_ns ns, const char* key, size_t key_len, tc_value* out) {
  out->priv_status = static_cast<uint32_t>(TC_MISS);
  // Reader rule 6: the handle's id, translated to this file's namespace.
  if (ns >= cache->ns_limit || cache->desc[ns] == nullptr) return TC_E_NO_NAMESPACE;
  const auto& d = *cache->desc[ns];
  const uint32_t fns = cache->file_ns[ns];
  char norm[layout::kMaxKeyLen + 8];
  const auto kr = tenantcache::NormalizeKey(d.key_kind, d.max_key_len, key, key_len, norm);
  if (!kr.ok()) return TC_E_INVALID_KEY;

  // The bound and expiry checks use the coarse clock rounded up (never
  // earlier than the daemon's clock); recency stamps stay on the coarse clock
  // the writer stamps with, so that none lies in its future.
  const uint64_t coarse = CoarseNowNs();
  const uint64_t now = coarse + tenantcache::kCoarseResolutionNs;
  const auto* h = cache->header;
  if (!Available(h, now)) return TC_E_UNAVAILABLE;

  const uint64_t hash = XXH3_64bits_withSeed(norm, kr.len, cache->ns_seed[fns]);
  const uint32_t tag = layout::TagOf(hash);
  const uint64_t b = layout::BucketIndex(hash, cache->bucket_count);
  const layout::BucketTags* tags = cache->tags + b;
  const uint64_t first = b * layout::kSlotsPerBucket;

  // Home slots (cache_layout.h): the home slot's header and the start of its
  // data, and its stamp, are fetched while the tag row is on its way.
  const uint32_t home = layout::HomeSlot(hash);
  const unsigned char* home_slot = cache->slots + (first + home) * cache->slot_size;
  __builtin_prefetch(home_slot);
  __builtin_prefetch(home_slot + layout::kCacheLine);
  __builtin_prefetch(home_slot + 2 * layout::kCacheLine);
  __builtin_prefetch(home_slot + 3 * layout::kCacheLine);
  __builtin_prefetch(cache->stamps + first + home, 1);

  for (uint32_t k = 0; k < layout::kSlotsPerBucket; ++k) {
    const uint32_t i = layout::ProbeSlot(home, k);
    // Rule 3: a tag only filters; the seqlocked copy decides.
    if (tags->tag[i].load(std::memory_order_relaxed) != tag) continue;
    const unsigned char* slot = cache->slots + (first + i) * cache->slot_size;
    layout::SlotMeta m;
    const SlotRead r = ReadSlot(cache, slot, fns, norm, kr.len, hash, &m, out);
    if (r == SlotRead::kNoMatch) continue;
    if (r == SlotRead::kTorn) return TC_MISS;

    // Rule 4: epoch and tenant generation are read after the copy validated.
    if (m.epoch != h->epoch.load(std::memory_order_acquire)) return TC_MISS;
    if (m.state == layout::kValue &&
        m.tenant_gen !=
            cache->tenant_gens[m.tenant_idx & cache->tenant_gen_mask].load(std::memory_order_acquire))
      return TC_MISS;
    if (now >= m.expires_ns) return TC_MISS;
    uint32_t* stamp = cache->stamps + first + i;
    const uint32_t now_stamp = layout::RecencyStamp(coarse);
    const uint32_t last = __atomic_load_n(stamp, __ATOMIC_RELAXED);
    if (cache->recency_shared.load(std::memory_order_relaxed)) {
      const uint64_t idle = h->idle_timeout_ns.load(std::memory_order_relaxed);
      if (idle != 0 && (uint64_t{static_cast<uint32_t>(now_stamp - last)} << layout::kRecencyShift) > idle)
        return TC_MISS;
    }
    if (last != now_stamp) __atomic_store_n(stamp, now_stamp, __ATOMIC_RELAXED);

    if (m.state == layout::kNegative) {
      out->priv_status = static_cast<uint32_t>(TC_NOT_FOUND);
      return TC_NOT_FOUND;
    }
    // Only the head here: tc_value_field checks the value it reads.
    if (m.field_count != d.field_count ||
        !tenantcache::EntryHeadFits(out->priv_data, m.data_len, m.key_len, m.tenant_len, m.field_count))
      return TC_MISS;
    tenantcache::PublishValue(out, &d, ValueMeta{m.key_len, m.tenant_len, m.field_count}, m.data_len);
    return TC_FOUND;
  }
  return TC_MISS;
}

}  // namespace

namespace {

// A found value's metadata; false when `v` holds no found value. Its
// lengths are checked by the caller against priv_len, so that a tc_value
// the caller overwrote cannot make a read leave priv_data.
inline bool FoundValue(const tc_value* v, ValueMeta* vm) {
  if (v->priv_status != static_cast<uint32_t>(TC_FOUND) || v->priv_len > sizeof v->priv_data) return false;
  std::memcpy(vm, &v->priv_reserved[0], sizeof *vm);
  return true;
}

bool View(const tc_value* v, EntryView* e) {
  ValueMeta vm;
  // The head as the hit checked it: the key and the tenant id are handed out as C strings.
  if (v == nullptr || !FoundValue(v, &vm) ||
      !tenantcache::EntryHeadFits(v->priv_data, v->priv_len, vm.key_len, vm.tenant_len, vm.field_count))
    return false;
  const size_t lens = tenantcache::LensAt(vm.key_len, vm.tenant_len);
  e->key = reinterpret_cast<const char*>(v->priv_data);
  e->key_len = vm.key_len;
  e->tenant = e->key + vm.key_len + 1;
  e->tenant_len = vm.tenant_len;
  e->field_count = vm.field_count;
  e->lens = v->priv_data + lens;
  e->values = reinterpret_cast<const char*>(v->priv_data + lens + 2 * size_t{vm.field_count});
  return true;
}

}  // namespace

const char* tc_value_tenant(const tc_value* value, size_t* len) {
  EntryView e;
  if (!View(value, &e)) return nullptr;
  if (len != nullptr) *len = e.tenant_len;
  return e.tenant;
}

const char* tc_value_key(const tc_value* value, size_t* len) {
  EntryView e;
  if (!View(value, &e)) return nullptr;
  if (len != nullptr) *len = e.key_len;
  return e.key;
}

size_t tc_value_field_count(const tc_value* value) {
  EntryView e;
  return View(value, &e) ? e.field_count : 0;
}

int tc_value_field(const tc_value* value, size_t index, const char** name, const char** text, size_t* len) {
  if (value == nullptr) return TC_E_INVALID_ARG;
  ValueMeta vm;
  if (!FoundValue(value, &vm) ||
      !tenantcache::EntryLensFit(value->priv_len, vm.key_len, vm.tenant_len, vm.field_count) ||
      index >= vm.field_count)
    return TC_E_NO_FIELD;
  // The hit checked the head only: this value and its NUL are checked here.
  size_t off = 0;
  uint16_t l = 0;
  if (!tenantcache::FindValue(value->priv_data, value->priv_len,
                              tenantcache::LensAt(vm.key_len, vm.tenant_len), vm.field_count,
                              static_cast<uint32_t>(index), &off, &l))
    return TC_E_NO_FIELD;
  if (name != nullptr) *name = static_cast<const layout::NamespaceDesc*>(value->priv_ns)->field_names[index];
  const bool null = l == layout::kNullField;
  if (text != nullptr) *text = null ? nullptr : reinterpret_cast<const char*>(value->priv_data) + off;
  if (len != nullptr) *len = null ? 0 : l;
  return 0;
}

int tc_value_get(const tc_value* value, const char* name, const char** text, size_t* len) {
  if (value == nullptr || name == nullptr) return TC_E_INVALID_ARG;
  EntryView e;
  if (!View(value, &e)) return TC_E_NO_FIELD;
  const auto* d = static_cast<const layout::NamespaceDesc*>(value->priv_ns);
  for (uint32_t i = 0; i < e.field_count; ++i)
    if (std::strcmp(d->field_names[i], name) == 0) return tc_value_field(value, i, nullptr, text, len);
  return TC_E_NO_FIELD;
}

namespace {

// tc_cache_info from one mapping, inside a read section (reader rules 1-3).
void Info(const tc_cache* cache, tc_info* out) {
  ThreadStats* s = MyStats(cache);
  const uint64_t section = EnterSection(s);
  const Mapping* m = cache->current.load(std::memory_order_acquire);
  const auto* h = m->header;
  const uint64_t now = ReaderNowNs();
  std::memset(out, 0, sizeof *out);
  out->daemon_pid = h->daemon_pid.load(std::memory_order_relaxed);
  out->synced = h->synced.load(std::memory_order_acquire) != 0;
  out->retired = h->retired.load(std::memory_order_acquire) != 0;
  out->available = Available(h, now);
  out->epoch = h->epoch.load(std::memory_order_acquire);
  const uint64_t hb = h->heartbeat_ns.load(std::memory_order_acquire);
  out->heartbeat_age_ns = now > hb ? now - hb : 0;
  out->stale_after_ns = h->stale_after_ns.load(std::memory_order_relaxed);
  out->idle_timeout_ns = h->idle_timeout_ns.load(std::memory_order_relaxed);
  out->entries = h->entry_count.load(std::memory_order_relaxed);
  out->slots = m->bucket_count * layout::kSlotsPerBucket;
  out->capacity = h->capacity;
  out->file_bytes = m->size;
  out->slot_bytes = m->slot_size;
  out->layout_version = h->layout_version;
  out->daemon_start_unix_ns = h->daemon_start_realtime_ns.load(std::memory_order_relaxed);
  std::memcpy(out->control_socket, m->control_socket, sizeof out->control_socket);
  LeaveSection(s, section);
}

}  // namespace

int tc_cache_info(const tc_cache* cache, tc_info* out) {
  if (cache == nullptr || out == nullptr) return TC_E_INVALID_ARG;
  Info(cache, out);
  // As tc_cache_get: an unavailable file may have been replaced.
  if (out->available == 0 && tenantcache::Follow(cache)) Info(cache, out);
  if (cache->pending_release.load(std::memory_order_relaxed) != 0) ReleaseRetired(cache);
  return 0;
}

const char* tc_strerror(int status) {
  switch (status) {
    case TC_FOUND:
      return "found";
    case TC_NOT_FOUND:
      return "not found (the database has no such row)";
    case TC_MISS:
      return "not in the cache";
    case TC_E_UNAVAILABLE:
      return "cache unavailable (daemon not synced or not running); query the database";
    case TC_E_INVALID_KEY:
      return "invalid key for this namespace";
    case TC_E_NO_NAMESPACE:
      return "no such namespace";
    case TC_E_LAYOUT:
      return "not a tenantcache file, truncated, or of an unknown layout version";
    case TC_E_IO:
      return "cannot open or map the cache file, or refused it as unsafe";
    case TC_E_INVALID_ARG:
      return "invalid argument";
    case TC_E_NO_FIELD:
      return "no such field";
    case TC_E_NOMEM:
      return "out of memory";
    case TC_E_BUSY:
      return "daemon busy (fill queue full or command rate limit reached)";
    case TC_E_TIMEOUT:
      return "timed out waiting for the daemon";
    case TC_E_DAEMON:
      return "the daemon reported an error";
    default:
      return "unknown status";
  }
}

const char* tc_default_cache_path(void) { return TC_DEFAULT_CACHE_PATH; }

const char* tc_version(void) {
#define TC_STR2(x) #x
#define TC_STR(x) TC_STR2(x)
  return TC_STR(TC_VERSION_MAJOR) "." TC_STR(TC_VERSION_MINOR) "." TC_STR(TC_VERSION_PATCH);
#undef TC_STR
#undef TC_STR2
}

uint32_t tc_layout_version(void) { return layout::kLayoutVersion; }

}  // extern "C"

int tenantcache::GetWithoutStats(const tc_cache* cache, tc_ns ns, const char* key, size_t key_len,
                                 tc_value* out) {
  if (cache == nullptr || key == nullptr || out == nullptr) return TC_E_INVALID_ARG;
  return ReadFollowing(cache, MyStats(cache), ns, key, key_len, out);
}
