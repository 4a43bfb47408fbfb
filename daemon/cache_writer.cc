#include "cache_writer.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <set>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "entry.h"
#include "keys.h"
#include "reader.h"

namespace tenantcache {

using layout::FileHeader;
using layout::NamespaceDesc;
using layout::SlotMeta;

namespace {

constexpr uint64_t kTenantSeedSalt = 0x7465'6E61'6E74'6964ull;  // hashes tenants apart from keys

[[noreturn]] void Fail(const std::string& path, const std::string& what, int err = 0) {
  std::string msg = "cache file " + path + ": " + what;
  if (err != 0) msg += ": " + std::string(std::strerror(err));
  throw CacheError(msg);
}

bool ValidName(std::string_view s) {
  if (s.empty() || s.size() >= layout::kNameMax) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

uint64_t RandomU64(const std::string& path) {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) != sizeof v) Fail(path, "getrandom", errno);
  return v;
}

uint64_t NextPow2(uint64_t v) {
  uint64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

struct Geometry {
  uint64_t bucket_count;
  uint64_t tenant_gen_count;
  uint64_t file_size;
  uint64_t recency_size;
};

Geometry ComputeGeometry(const CacheOptions& o) {
  Geometry g;
  const uint64_t slots = o.capacity + o.capacity / 4;  // headroom: set-associative buckets fill unevenly
  g.bucket_count = (slots + layout::kSlotsPerBucket - 1) / layout::kSlotsPerBucket;
  g.tenant_gen_count = NextPow2(std::max<uint64_t>(1024, o.capacity / 8));
  g.file_size = layout::TenantGensOffset() + g.tenant_gen_count * 8 + layout::TagTableBytes(g.bucket_count) +
                g.bucket_count * layout::kSlotsPerBucket * o.slot_size;
  g.recency_size = layout::RecencyBytes(g.bucket_count * layout::kSlotsPerBucket);
  return g;
}

void ValidateOptions(const CacheOptions& o) {
  const std::string& p = o.path;
  if (p.empty()) throw CacheError("cache file path is empty");
  if (o.capacity == 0 || o.capacity > (uint64_t{1} << 34)) Fail(p, "capacity must be 1..2^34 entries");
  if (o.slot_size < layout::kMinSlotSize || o.slot_size > layout::kMaxSlotSize ||
      o.slot_size % layout::kCacheLine != 0)
    Fail(p, "slot size must be a multiple of 64 from 256 to 4096");
  if (o.namespaces.empty() || o.namespaces.size() > layout::kMaxNamespaces)
    Fail(p, "between 1 and 32 namespaces are required");
  if (o.control_socket.size() >= sizeof(FileHeader::control_socket))
    Fail(p, "control socket path is longer than 107 bytes");
  if (o.stale_after_ns == 0) Fail(p, "the staleness bound must be positive");
  std::set<std::string> names;
  for (const auto& ns : o.namespaces) {
    if (!ValidName(ns.name)) Fail(p, "namespace name '" + ns.name + "' must be 1-63 of [a-z0-9_]");
    if (!names.insert(ns.name).second) Fail(p, "namespace '" + ns.name + "' is defined twice");
    if (KeyKindName(ns.key_kind) == std::string_view("unknown"))
      Fail(p, "namespace '" + ns.name + "' has an unknown key kind");
    if (ns.max_key_len > layout::kMaxKeyLen)
      Fail(p, "namespace '" + ns.name + "' allows keys longer than 255 bytes");
    if (ns.fields.size() > layout::kMaxFields) Fail(p, "namespace '" + ns.name + "' has more than 30 fields");
    std::set<std::string> fields;
    for (const auto& f : ns.fields) {
      if (f.empty() || f.size() >= layout::kNameMax)
        Fail(p, "field name in namespace '" + ns.name + "' must be 1-63 bytes");
      if (!fields.insert(f).second) Fail(p, "field '" + f + "' appears twice in namespace '" + ns.name + "'");
    }
  }
}

void BuildNamespaceTable(const CacheOptions& o, NamespaceDesc* table) {
  std::memset(table, 0, sizeof(NamespaceDesc) * layout::kMaxNamespaces);
  for (size_t i = 0; i < o.namespaces.size(); ++i) {
    const auto& ns = o.namespaces[i];
    std::memcpy(table[i].name, ns.name.data(), ns.name.size());
    table[i].key_kind = ns.key_kind;
    table[i].max_key_len =
        ns.key_kind == layout::kText ? (ns.max_key_len == 0 ? layout::kMaxKeyLen : ns.max_key_len) : 0;
    table[i].field_count = static_cast<uint32_t>(ns.fields.size());
    for (size_t f = 0; f < ns.fields.size(); ++f)
      std::memcpy(table[i].field_names[f], ns.fields[f].data(), ns.fields[f].size());
  }
}

uint64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// "uid 0 (root)": how files' and directories' owners appear in messages.
std::string UserName(uid_t uid) {
  std::string s = "uid " + std::to_string(uid);
  if (const passwd* pw = getpwuid(uid)) s += std::string(" (") + pw->pw_name + ")";
  return s;
}

std::string Octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// A descriptor closed when it goes out of scope.
class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) close(fd_);
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Opens the directory that holds `path` and sets *name to the file's name in
// it. Every later step works relative to this descriptor, so the checks below
// hold for the directory actually used even if its path is swapped meanwhile.
// The directory must be the daemon's user's (or root's) and writable by no one
// else: whoever can write it can plant a cache file or replace ours. With
// `owner` unset (a check made as another user than the daemon's), any owner
// is accepted; the rest is checked alike.
int OpenCacheDirectory(const std::string& path, std::string* name, std::optional<uid_t> owner) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  *name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (name->empty() || *name == "." || *name == "..") Fail(path, "does not name a file");
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) Fail(path, "cannot open its directory " + dir, errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    Fail(path, "cannot stat its directory " + dir, err);
  }
  const uid_t me = owner.value_or(st.st_uid);
  if (st.st_uid != me && st.st_uid != 0) {
    close(fd);
    Fail(path,
         "its directory " + dir + " is owned by " + UserName(st.st_uid) + ", not by the daemon's user " +
             UserName(me) +
             " or root, so that user could plant or replace the cache file; use a directory the daemon's "
             "user owns (the packaged unit's RuntimeDirectory= makes /run/tenantcache)");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    close(fd);
    Fail(path, "its directory " + dir + " (owner " + UserName(st.st_uid) + ", mode " + Octal(st.st_mode) +
                   ") is writable by other users, who could plant or replace the cache file; use a directory "
                   "only its owner can write (mode 0755 or stricter), such as /run/tenantcache");
  }
  return fd;
}

// Files are opened with O_NOFOLLOW: a link could point the daemon at any
// file its user may write.
[[noreturn]] void FailOpen(const std::string& path, int err) {
  if (err == ELOOP) Fail(path, "is a symbolic link; remove it (links are not followed)");
  Fail(path, "cannot open", err);
}

// Refuses a file the daemon's user does not own, or that is not a plain file
// with one name: such a file was put there by someone else, and reusing it
// would serve what they wrote.
void CheckOwnFile(int fd, const std::string& path) {
  struct stat st;
  if (fstat(fd, &st) != 0) Fail(path, "cannot stat", errno);
  if (!S_ISREG(st.st_mode)) Fail(path, "is not a regular file; remove it");
  if (st.st_uid != geteuid())
    Fail(path, "is owned by " + UserName(st.st_uid) + ", not by the daemon's user " + UserName(geteuid()) +
                   "; another user created it: remove it and check who can write its directory");
  if (st.st_nlink != 1) Fail(path, "has " + std::to_string(st.st_nlink) + " hard links; remove it");
}

// Applies the configured mode and group and checks that they took effect.
// Returns the file's final status.
struct stat ApplyModeAndGroup(int fd, const std::string& path, mode_t mode,
                              const std::optional<gid_t>& group) {
  if (fchmod(fd, mode) != 0) Fail(path, "cannot set mode " + Octal(mode), errno);
  if (group && fchown(fd, static_cast<uid_t>(-1), *group) != 0)
    Fail(path, "cannot set group " + std::to_string(*group) + " (is the daemon's user a member?)", errno);
  struct stat st;
  if (fstat(fd, &st) != 0) Fail(path, "cannot stat", errno);
  if ((st.st_mode & 07777) != mode)
    Fail(path, "has mode " + Octal(st.st_mode) + " after setting the configured " + Octal(mode));
  if (group && st.st_gid != *group)
    Fail(path, "has group " + std::to_string(st.st_gid) + " after setting the configured " +
                   std::to_string(*group));
  return st;
}

// Creates `name` in `dir` exclusively (never through a symbolic link), with
// `mode` (not subject to the umask) and the group, sized `size` (zero-filled).
// Returns the open descriptor and sets *st to its status.
int CreateFile(int dir, const std::string& name, const std::string& path, mode_t mode,
               const std::optional<gid_t>& group, uint64_t size, struct stat* st) {
  const int fd = openat(dir, name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) Fail(path, "cannot create", errno);
  try {
    *st = ApplyModeAndGroup(fd, path, mode, group);
    if (ftruncate(fd, static_cast<off_t>(size)) != 0) Fail(path, "cannot size", errno);
  } catch (...) {
    close(fd);
    unlinkat(dir, name.c_str(), 0);
    throw;
  }
  return fd;
}

// Asks the kernel to back `size` bytes at `p` with 2 MiB pages where the
// file's filesystem allows it (a tmpfs mounted with huge=advise or
// huge=within_size, or any tmpfs while .../transparent_hugepage/shmem_enabled
// is "force"). Called before the pages are first touched: a page allocated
// small stays small. A hit touches a tag row and a slot, both random over the
// file, and with 4 KiB pages each costs a TLB miss and a page walk besides
// the cache miss. Failure (no THP in the kernel) only leaves 4 KiB pages, so
// it is not an error: HugePageBytes reports what the mapping got.
void AdviseHugePages(void* p, size_t size) { (void)madvise(p, size, MADV_HUGEPAGE); }

// The recency segment's permissions: the daemon's user, plus read and write
// for the file's group when the group may read the cache. Never others:
// anyone allowed to stamp could only disturb eviction, but a world-writable
// segment would let every local user do that.
mode_t RecencyMode(mode_t file_mode) { return 0600 | ((file_mode & S_IRGRP) != 0 ? 0060 : 0); }

void SetRecencyPermissions(int id, const std::string& path, mode_t file_mode, gid_t gid) {
  shmid_ds ds{};
  if (shmctl(id, IPC_STAT, &ds) != 0) Fail(path, "cannot read the recency segment's permissions", errno);
  ds.shm_perm.mode = RecencyMode(file_mode);
  ds.shm_perm.gid = gid;
  if (shmctl(id, IPC_SET, &ds) != 0) Fail(path, "cannot set the recency segment's permissions", errno);
}

}  // namespace

uint64_t HugePageBytes(const void* base) {
  std::ifstream in("/proc/self/smaps");
  char start[32];
  std::snprintf(start, sizeof start, "%lx-", reinterpret_cast<unsigned long>(base));
  std::string line;
  bool inside = false;
  uint64_t kib = 0;
  while (std::getline(in, line)) {
    // A mapping's first line is "start-end perms ...": the only lines whose
    // first word contains '-' and no ':'.
    const size_t space = line.find(' ');
    const std::string word = line.substr(0, space);
    if (word.find('-') != std::string::npos && word.find(':') == std::string::npos) {
      if (inside) break;
      inside = line.rfind(start, 0) == 0;
      continue;
    }
    if (inside && (word == "ShmemPmdMapped:" || word == "FilePmdMapped:"))
      kib += std::strtoull(line.c_str() + space, nullptr, 10);
  }
  return kib * 1024;
}

CacheWriter::~CacheWriter() {
  if (lock_fd_ >= 0) close(lock_fd_);
  if (base_ != nullptr) munmap(base_, size_);
  if (recency_base_ != nullptr) shmdt(recency_base_);
}

void CacheWriter::Map(int fd, size_t size) {
  // MAP_POPULATE: every page of the file is allocated and mapped here, once,
  // before the first fill. Left to fault in on first touch, each fill into a
  // fresh page and each sweep step over fresh buckets (a few hundred pages)
  // paid for page allocation inside the event loop, in front of the fills
  // and answers waiting on it: the tail of a miss's latency while the file
  // was young. The daemon's memory is then the file's size from the start,
  // as it would be anyway once the cache has filled.
  // Populated after the huge-page advice, which MAP_POPULATE would precede.
  // MADV_POPULATE_WRITE (Linux 5.14) allocates without writing; older
  // kernels fault each page in with a read, which allocates a tmpfs page too.
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) Fail(options_.path, "cannot map", errno);
  AdviseHugePages(p, size);
  if (madvise(p, size, MADV_POPULATE_WRITE) != 0) {
    const auto* bytes = static_cast<const unsigned char*>(p);
    const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    for (size_t off = 0; off < size; off += page) (void)__atomic_load_n(bytes + off, __ATOMIC_RELAXED);
  }
  base_ = static_cast<unsigned char*>(p);
  size_ = size;
  header_ = reinterpret_cast<FileHeader*>(base_);
  gens_ = reinterpret_cast<std::atomic<uint64_t>*>(base_ + header_->tenant_gens_offset);
  bucket_count_ = header_->bucket_count;
  tenant_bumped_at_.assign(header_->tenant_gen_count, 0);
  scratch_.assign((options_.slot_size - layout::kSlotHeaderSize) / 8, 0);
  huge_page_bytes_ = HugePageBytes(p);
}

// Attaches the segment a previous daemon published if it is still there and
// provably this file's: created and owned by our user, of the right size, and
// carrying this file's instance id (ids are recycled by the kernel).
bool CacheWriter::ReuseRecency(int id, size_t size) {
  shmid_ds ds{};
  if (shmctl(id, IPC_STAT, &ds) != 0) return false;  // gone with its last process
  if (ds.shm_perm.uid != geteuid() || ds.shm_perm.cuid != geteuid() || ds.shm_segsz != size) return false;
  void* p = shmat(id, nullptr, 0);
  if (layout::ShmatFailed(p)) return false;
  const auto* rh = static_cast<const layout::RecencyHeader*>(p);
  if (std::memcmp(rh->magic, layout::kRecencyMagic, sizeof rh->magic) != 0 ||
      rh->layout_version != layout::kLayoutVersion || rh->instance_id != header_->instance_id ||
      rh->slot_count != bucket_count_ * layout::kSlotsPerBucket) {
    shmdt(p);
    return false;
  }
  recency_base_ = static_cast<unsigned char*>(p);
  return true;
}

void CacheWriter::AttachRecency(size_t size, mode_t file_mode, gid_t file_gid) {
  const std::string& path = options_.path;
  int id = header_->recency_shmid.load(std::memory_order_relaxed);
  if (id != layout::kNoRecency && ReuseRecency(id, size)) {
    notes_.push_back("kept recency segment " + std::to_string(id) + ", still attached by readers");
  } else {
    id = shmget(IPC_PRIVATE, size, IPC_CREAT | IPC_EXCL | 0600);
    if (id < 0)
      Fail(path,
           "cannot create the recency segment of " + std::to_string(size) +
               " bytes (shmget; see kernel.shmmax and kernel.shmall)",
           errno);
    void* p = shmat(id, nullptr, 0);
    if (layout::ShmatFailed(p)) {
      const int err = errno;
      shmctl(id, IPC_RMID, nullptr);
      Fail(path, "cannot attach the recency segment", err);
    }
    recency_base_ = static_cast<unsigned char*>(p);
    // Marked for removal at once: the kernel frees it when the last process
    // detaches (or dies), so it never outlives the daemon and its readers,
    // while permitted readers can still attach it by id.
    if (shmctl(id, IPC_RMID, nullptr) != 0) Fail(path, "cannot mark the recency segment for removal", errno);
    auto* rh = reinterpret_cast<layout::RecencyHeader*>(recency_base_);
    std::memcpy(rh->magic, layout::kRecencyMagic, sizeof rh->magic);
    rh->layout_version = layout::kLayoutVersion;
    rh->instance_id = header_->instance_id;
    rh->slot_count = bucket_count_ * layout::kSlotsPerBucket;
    notes_.push_back("created recency segment " + std::to_string(id));
  }
  // The configured mode and group may have changed since the segment was made.
  SetRecencyPermissions(id, path, file_mode, file_gid);
  recency_size_ = size;
  stamps_ = reinterpret_cast<uint32_t*>(recency_base_ + sizeof(layout::RecencyHeader));
  header_->recency_shmid.store(id, std::memory_order_release);  // Rule 7.
}

int CacheWriter::recency_shmid() const { return header_->recency_shmid.load(std::memory_order_relaxed); }

std::unique_ptr<CacheWriter> CacheWriter::Open(const CacheOptions& options) {
  ValidateOptions(options);
  const Geometry g = ComputeGeometry(options);
  const std::string& path = options.path;
  std::unique_ptr<CacheWriter> w(new CacheWriter());
  w->options_ = options;
  std::string name;
  const UniqueFd dir(OpenCacheDirectory(path, &name, geteuid()));

  // One writer per file: a second daemon pointed at the same path must not
  // reuse (and fight over) the first one's file.
  const std::string lock_path = path + ".lock";
  w->lock_fd_ = openat(dir.get(), (name + ".lock").c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (w->lock_fd_ < 0) FailOpen(lock_path, errno);
  CheckOwnFile(w->lock_fd_, lock_path);
  ApplyModeAndGroup(w->lock_fd_, lock_path, 0600, std::nullopt);
  if (flock(w->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) Fail(path, "another process (a running tenantcached?) is writing it");
    Fail(lock_path, "cannot lock", errno);
  }
  // Versions before layout 2 kept recency in a file beside the cache.
  if (unlinkat(dir.get(), (name + ".recency").c_str(), 0) == 0)
    w->notes_.push_back("removed " + path + ".recency, left by an older version");

  NamespaceDesc table[layout::kMaxNamespaces];
  BuildNamespaceTable(options, table);

  // Reuse: our own file, of the same layout, geometry and namespaces, with a
  // hash seed young enough.
  unsigned char* old_base = nullptr;
  size_t old_size = 0;
  const int fd = openat(dir.get(), name.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 && errno != ENOENT) FailOpen(path, errno);
  if (fd >= 0) {
    try {
      CheckOwnFile(fd, path);
    } catch (...) {
      close(fd);
      throw;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
      void* p = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) {
        old_base = static_cast<unsigned char*>(p);
        old_size = static_cast<size_t>(st.st_size);
      }
    }
    const auto* h = reinterpret_cast<const FileHeader*>(old_base);
    const bool same =
        old_base != nullptr && ValidateLayout(old_base, old_size) == nullptr &&
        h->slot_size == options.slot_size && h->capacity == options.capacity &&
        h->bucket_count == g.bucket_count && h->tenant_gen_count == g.tenant_gen_count &&
        h->namespace_count == options.namespaces.size() && h->retired.load() == 0 &&
        std::memcmp(old_base + h->namespaces_offset, table, sizeof table) == 0 &&
        std::strncmp(h->control_socket, options.control_socket.c_str(), sizeof h->control_socket) == 0;
    const uint64_t now = RealtimeNs();
    // A creation time in the future (the clock was stepped back) says nothing
    // about the seed's age: treat it as too old.
    const bool seed_fresh =
        same && now >= h->created_realtime_ns && now - h->created_realtime_ns < layout::kMaxSeedAgeNs;
    const uint64_t seed_age_ns = seed_fresh ? now - h->created_realtime_ns : 0;
    if (same && !seed_fresh)
      w->notes_.push_back("not reusing the existing file: its hash seed is older than " +
                          std::to_string(layout::kMaxSeedAgeNs / (24 * 3600 * 1'000'000'000ull)) +
                          " days (or was made in the future); a new file gets a new seed");
    if (seed_fresh) {
      munmap(old_base, old_size);
      try {
        const struct stat applied = ApplyModeAndGroup(fd, path, options.mode, options.group);
        w->Map(fd, old_size);
        close(fd);
        w->reused_ = true;
        w->notes_.push_back("hash seed is " + std::to_string(seed_age_ns / 3'600'000'000'000ull) +
                            " h old; a new file replaces it after " +
                            std::to_string(layout::kMaxSeedAgeNs / 3'600'000'000'000ull) + " h");
        w->AttachRecency(g.recency_size, applied.st_mode, applied.st_gid);
      } catch (...) {
        if (!w->reused_) close(fd);
        throw;
      }
      auto* hdr = w->header_;
      hdr->synced.store(0, std::memory_order_release);
      // Everything cached before this daemon started may have been
      // invalidated while nobody listened: a reset, never a guess.
      hdr->epoch.store(hdr->epoch.load() + 1, std::memory_order_release);
      hdr->daemon_pid.store(getpid(), std::memory_order_relaxed);
      hdr->daemon_start_realtime_ns.store(RealtimeNs(), std::memory_order_relaxed);
      w->SetPolicy(options.stale_after_ns, options.idle_timeout_ns);
      uint64_t used = 0;
      for (uint64_t b = 0; b < w->bucket_count_; ++b)
        for (uint32_t i = 0; i < layout::kSlotsPerBucket; ++i) {
          SlotMeta m;
          std::memcpy(&m, reinterpret_cast<layout::SlotHeader*>(w->Slot(b, i))->meta, sizeof m);
          used += m.state != layout::kEmpty;
        }
      hdr->entry_count.store(used, std::memory_order_relaxed);
      w->stats_.entries = used;
      return w;
    }
    close(fd);
  }

  // Create: the file under a temporary name, complete with its recency
  // segment, then renamed into place (rule 6).
  const std::string tmp_name = name + ".new." + std::to_string(getpid());
  const std::string tmp = path + ".new." + std::to_string(getpid());
  unlinkat(dir.get(), tmp_name.c_str(), 0);
  struct stat created;
  const int nfd = CreateFile(dir.get(), tmp_name, tmp, options.mode, options.group, g.file_size, &created);
  try {
    void* p = mmap(nullptr, g.file_size, PROT_READ | PROT_WRITE, MAP_SHARED, nfd, 0);
    if (p == MAP_FAILED) Fail(tmp, "cannot map", errno);
    // The header's writes allocate the file's first pages, which also hold
    // the tag table: advised first, so they are huge too.
    AdviseHugePages(p, g.file_size);
    auto* h = static_cast<FileHeader*>(p);
    std::memcpy(h->magic, layout::kMagic, sizeof h->magic);
    h->layout_version = layout::kLayoutVersion;
    h->header_size = sizeof(FileHeader);
    h->fingerprint = layout::Fingerprint();
    h->instance_id = RandomU64(path);
    h->hash_seed = RandomU64(path);
    h->file_size = g.file_size;
    h->slot_size = options.slot_size;
    h->slots_per_bucket = layout::kSlotsPerBucket;
    h->bucket_count = g.bucket_count;
    h->namespaces_offset = layout::NamespacesOffset();
    h->tenant_gens_offset = layout::TenantGensOffset();
    h->tags_offset = layout::TenantGensOffset() + g.tenant_gen_count * 8;
    h->slots_offset = h->tags_offset + layout::TagTableBytes(g.bucket_count);
    h->tenant_gen_count = g.tenant_gen_count;
    h->namespace_count = static_cast<uint32_t>(options.namespaces.size());
    h->capacity = options.capacity;
    h->created_realtime_ns = RealtimeNs();
    h->epoch.store(1, std::memory_order_relaxed);
    h->daemon_pid.store(getpid(), std::memory_order_relaxed);
    h->daemon_start_realtime_ns.store(h->created_realtime_ns, std::memory_order_relaxed);
    h->recency_shmid.store(layout::kNoRecency, std::memory_order_relaxed);
    std::memcpy(h->control_socket, options.control_socket.data(), options.control_socket.size());
    std::memcpy(static_cast<unsigned char*>(p) + h->namespaces_offset, table, sizeof table);
    munmap(p, g.file_size);
    w->Map(nfd, g.file_size);
    w->AttachRecency(g.recency_size, created.st_mode, created.st_gid);
    if (renameat(dir.get(), tmp_name.c_str(), dir.get(), name.c_str()) != 0)
      Fail(path, "cannot rename into place", errno);
    close(nfd);
  } catch (...) {
    close(nfd);
    unlinkat(dir.get(), tmp_name.c_str(), 0);
    if (old_base != nullptr) munmap(old_base, old_size);
    throw;
  }
  if (old_base != nullptr) {
    // Readers still mapping the replaced file must stop trusting it.
    if (ValidateLayout(old_base, old_size) == nullptr)
      reinterpret_cast<FileHeader*>(old_base)->retired.store(1, std::memory_order_release);
    munmap(old_base, old_size);
  }
  w->SetPolicy(options.stale_after_ns, options.idle_timeout_ns);
  w->stats_.slots = w->bucket_count_ * layout::kSlotsPerBucket;
  return w;
}

int CacheWriter::FindNamespace(std::string_view name) const {
  for (size_t i = 0; i < options_.namespaces.size(); ++i)
    if (options_.namespaces[i].name == name) return static_cast<int>(i);
  return -1;
}

unsigned char* CacheWriter::Slot(uint64_t bucket, uint32_t i) const {
  return base_ + header_->slots_offset + (bucket * layout::kSlotsPerBucket + i) * options_.slot_size;
}

layout::BucketTags* CacheWriter::Tags(uint64_t bucket) const {
  return reinterpret_cast<layout::BucketTags*>(base_ + header_->tags_offset) + bucket;
}

uint64_t CacheWriter::KeyHash(uint32_t ns, std::string_view key) const {
  return XXH3_64bits_withSeed(key.data(), key.size(), layout::NamespaceSeed(header_->hash_seed, ns));
}

uint32_t CacheWriter::TenantIndex(std::string_view tenant) const {
  const uint64_t h = XXH3_64bits_withSeed(tenant.data(), tenant.size(), header_->hash_seed ^ kTenantSeedSalt);
  return static_cast<uint32_t>(h & (header_->tenant_gen_count - 1));
}

Lease CacheWriter::BeginFill() const {
  return Lease{header_->epoch.load(std::memory_order_relaxed), tenant_seq_};
}

// The writer reads its own slots without the seqlock: nobody else writes them.
static SlotMeta ReadMeta(const unsigned char* slot) {
  SlotMeta m;
  layout::LoadMeta(&m, reinterpret_cast<const layout::SlotHeader*>(slot)->meta);
  return m;
}

bool CacheWriter::Dead(const SlotMeta& m, uint64_t bucket, uint32_t i, uint64_t now) const {
  if (m.state == layout::kEmpty) return false;
  if (m.epoch != header_->epoch.load(std::memory_order_relaxed)) return true;
  if (m.state == layout::kValue && m.tenant_gen != gens_[m.tenant_idx].load(std::memory_order_relaxed))
    return true;
  if (now >= m.expires_ns) return true;
  const uint64_t idle = header_->idle_timeout_ns.load(std::memory_order_relaxed);
  if (idle != 0) {
    const uint32_t stamp = __atomic_load_n(stamps_ + bucket * layout::kSlotsPerBucket + i, __ATOMIC_RELAXED);
    const uint32_t age = layout::RecencyStamp(now) - stamp;
    if ((uint64_t{age} << layout::kRecencyShift) > idle) return true;
  }
  return false;
}

int CacheWriter::FindSlot(uint64_t bucket, uint64_t hash, uint32_t ns, std::string_view key) const {
  // In the readers' order: most keys are in their home slot.
  const uint32_t home = layout::HomeSlot(hash);
  for (uint32_t k = 0; k < layout::kSlotsPerBucket; ++k) {
    const uint32_t i = layout::ProbeSlot(home, k);
    const unsigned char* slot = Slot(bucket, i);
    const SlotMeta m = ReadMeta(slot);
    if (m.state == layout::kEmpty || m.key_hash != hash || m.ns != ns || m.key_len != key.size()) continue;
    if (std::memcmp(slot + layout::kSlotHeaderSize, key.data(), key.size()) == 0) return static_cast<int>(i);
  }
  return -1;
}

uint32_t CacheWriter::ChooseVictim(uint64_t bucket, uint32_t home, uint64_t now) {
  int dead = -1;
  uint32_t lru = 0;
  uint32_t lru_age = 0;
  uint64_t lru_filled = UINT64_MAX;
  const uint32_t now_stamp = layout::RecencyStamp(now);
  // From the home slot on (cache_layout.h, "Home slots"): a key goes home
  // when its home slot is empty or dead.
  for (uint32_t k = 0; k < layout::kSlotsPerBucket; ++k) {
    const uint32_t i = layout::ProbeSlot(home, k);
    const SlotMeta m = ReadMeta(Slot(bucket, i));
    if (m.state == layout::kEmpty) return i;
    if (dead < 0 && Dead(m, bucket, i, now)) dead = static_cast<int>(i);
    const uint32_t age =
        now_stamp - __atomic_load_n(stamps_ + bucket * layout::kSlotsPerBucket + i, __ATOMIC_RELAXED);
    if (age > lru_age || (age == lru_age && m.filled_ns < lru_filled)) {
      lru = i;
      lru_age = age;
      lru_filled = m.filled_ns;
    }
  }
  if (dead >= 0) {
    ++stats_.reclaimed;
    return static_cast<uint32_t>(dead);
  }
  ++stats_.evictions;
  return lru;
}

void CacheWriter::WriteSlot(unsigned char* slot, const SlotMeta& meta, const unsigned char* data) {
  auto* sh = reinterpret_cast<layout::SlotHeader*>(slot);
  uint64_t words[layout::kMetaWords];
  std::memcpy(words, &meta, sizeof meta);
  // Rule 1.
  const uint32_t seq = sh->seq.load(std::memory_order_relaxed);
  sh->seq.store(seq + 1, std::memory_order_relaxed);
  layout::WriterFence();
  layout::StoreWords(sh->meta, words, layout::kMetaWords);
  if (data != nullptr)
    layout::StoreWords(reinterpret_cast<uint64_t*>(slot + layout::kSlotHeaderSize),
                       reinterpret_cast<const uint64_t*>(data), (meta.data_len + 7) / 8);
  sh->seq.store(seq + 2, std::memory_order_release);
}

void CacheWriter::Empty(uint64_t bucket, uint32_t i) {
  WriteSlot(Slot(bucket, i), SlotMeta{}, nullptr);
  // Rule 3: the tag is cleared after the slot.
  Tags(bucket)->tag[i].store(0, std::memory_order_release);
  --stats_.entries;
  header_->entry_count.store(stats_.entries, std::memory_order_relaxed);
}

PutResult CacheWriter::Store(uint32_t ns, std::string_view key, const EntryData* entry, uint64_t ttl_ns,
                             const Lease& lease) {
  if (ns >= namespace_count() || key.empty() || key.size() > layout::kMaxKeyLen)
    throw std::invalid_argument("CacheWriter::Put: bad namespace or key");
  if (lease.epoch != header_->epoch.load(std::memory_order_relaxed)) {
    ++stats_.revoked;
    return PutResult::kRevoked;
  }
  SlotMeta m{};
  m.state = entry != nullptr ? layout::kValue : layout::kNegative;
  m.ns = static_cast<uint8_t>(ns);
  m.key_len = static_cast<uint16_t>(key.size());
  if (entry != nullptr) {
    if (entry->fields.size() != options_.namespaces[ns].fields.size())
      throw std::invalid_argument("CacheWriter::Put: field count does not match the namespace");
    const uint32_t idx = TenantIndex(entry->tenant);
    if (tenant_bumped_at_[idx] > lease.tenant_seq) {
      ++stats_.revoked;
      return PutResult::kRevoked;
    }
    m.tenant_idx = idx;
    m.tenant_gen = gens_[idx].load(std::memory_order_relaxed);
    m.tenant_len = static_cast<uint16_t>(entry->tenant.size());
    m.field_count = static_cast<uint8_t>(entry->fields.size());
  }
  static const std::vector<std::optional<std::string_view>> kNoFields;
  const std::string_view tenant = entry != nullptr ? entry->tenant : std::string_view{};
  const auto& fields = entry != nullptr ? entry->fields : kNoFields;
  const size_t need = EncodedSize(key, tenant, fields);
  if (need == 0 || need > options_.slot_size - layout::kSlotHeaderSize) {
    ++stats_.too_large;
    return PutResult::kTooLarge;
  }
  std::fill(scratch_.begin(), scratch_.end(), 0);
  auto* data = reinterpret_cast<unsigned char*>(scratch_.data());
  m.data_len = static_cast<uint32_t>(EncodeEntry(key, tenant, fields, data));

  const uint64_t now = MonotonicNowNs();
  m.epoch = lease.epoch;
  m.expires_ns = ttl_ns == 0 ? UINT64_MAX : now + ttl_ns;
  m.filled_ns = now;
  m.key_hash = KeyHash(ns, key);

  const uint64_t bucket = layout::BucketIndex(m.key_hash, bucket_count_);
  int slot = FindSlot(bucket, m.key_hash, ns, key);
  if (slot < 0) {
    slot = static_cast<int>(ChooseVictim(bucket, layout::HomeSlot(m.key_hash), now));
    if (ReadMeta(Slot(bucket, static_cast<uint32_t>(slot))).state == layout::kEmpty) {
      ++stats_.entries;
      header_->entry_count.store(stats_.entries, std::memory_order_relaxed);
    }
  }
  const auto i = static_cast<uint32_t>(slot);
  WriteSlot(Slot(bucket, i), m, data);
  // The fill's stamp is one unit before the readers' clock (CLOCK_MONOTONIC_
  // COARSE) shows now, so any read after this fill ranks above it.
  __atomic_store_n(stamps_ + bucket * layout::kSlotsPerBucket + i, layout::RecencyStamp(CoarseNowNs()) - 1,
                   __ATOMIC_RELAXED);
  // Rule 3: the tag is published after the slot.
  Tags(bucket)->tag[i].store(layout::TagOf(m.key_hash), std::memory_order_release);
  ++(entry != nullptr ? stats_.puts : stats_.negative_puts);
  return PutResult::kStored;
}

PutResult CacheWriter::Put(uint32_t ns, std::string_view key, const EntryData& entry, uint64_t ttl_ns,
                           const Lease& lease) {
  return Store(ns, key, &entry, ttl_ns, lease);
}

PutResult CacheWriter::PutNegative(uint32_t ns, std::string_view key, uint64_t ttl_ns, const Lease& lease) {
  return Store(ns, key, nullptr, ttl_ns, lease);
}

bool CacheWriter::Invalidate(uint32_t ns, std::string_view key) {
  ++stats_.key_invalidations;
  if (ns >= namespace_count() || key.empty() || key.size() > layout::kMaxKeyLen) return false;
  const uint64_t hash = KeyHash(ns, key);
  const uint64_t bucket = layout::BucketIndex(hash, bucket_count_);
  const int slot = FindSlot(bucket, hash, ns, key);
  if (slot < 0) return false;
  Empty(bucket, static_cast<uint32_t>(slot));
  return true;
}

void CacheWriter::InvalidateTenant(std::string_view tenant) {
  ++stats_.tenant_invalidations;
  const uint32_t idx = TenantIndex(tenant);
  tenant_bumped_at_[idx] = ++tenant_seq_;
  // Rule 4.
  gens_[idx].store(gens_[idx].load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

uint64_t CacheWriter::Flush() {
  ++stats_.flushes;
  const uint64_t e = header_->epoch.load(std::memory_order_relaxed) + 1;
  header_->epoch.store(e, std::memory_order_release);  // Rule 4.
  return e;
}

void CacheWriter::SetSynced(bool synced) { header_->synced.store(synced ? 1 : 0, std::memory_order_release); }

void CacheWriter::Heartbeat() { Heartbeat(MonotonicNowNs()); }

void CacheWriter::Heartbeat(uint64_t at_ns) { header_->heartbeat_ns.store(at_ns, std::memory_order_release); }

void CacheWriter::SetPolicy(uint64_t stale_after_ns, uint64_t idle_timeout_ns) {
  header_->stale_after_ns.store(stale_after_ns, std::memory_order_relaxed);
  header_->idle_timeout_ns.store(idle_timeout_ns, std::memory_order_relaxed);
}

void CacheWriter::Retire() { header_->retired.store(1, std::memory_order_release); }

size_t CacheWriter::Sweep(size_t max_buckets, uint64_t budget_ns) {
  const uint64_t now = MonotonicNowNs();
  size_t emptied = 0;
  for (size_t n = 0; n < max_buckets && n < bucket_count_; ++n) {
    // The clock is read once per stride, so each call makes progress and a
    // budget costs a few clock reads.
    if (n != 0 && n % kSweepStride == 0 && MonotonicNowNs() - now >= budget_ns) break;
    const uint64_t b = sweep_cursor_;
    sweep_cursor_ = (sweep_cursor_ + 1) % bucket_count_;
    for (uint32_t i = 0; i < layout::kSlotsPerBucket; ++i) {
      if (Dead(ReadMeta(Slot(b, i)), b, i, now)) {
        Empty(b, i);
        ++emptied;
      }
    }
  }
  stats_.reclaimed += emptied;
  return emptied;
}

uint64_t CacheWriter::epoch() const { return header_->epoch.load(std::memory_order_relaxed); }

WriterStats CacheWriter::stats() const {
  WriterStats s = stats_;
  s.slots = bucket_count_ * layout::kSlotsPerBucket;
  return s;
}

void CheckCacheDirectory(const std::string& path, std::optional<uid_t> owner) {
  std::string name;
  const UniqueFd dir(OpenCacheDirectory(path, &name, owner));
}

}  // namespace tenantcache
