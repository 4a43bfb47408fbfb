// Attacks on the cache's files and shared memory by other local users, each
// run for real against the real daemon binary, the real
// PostgreSQL of the harness and real processes: a worker (or any user) that
// tries to shrink, remove or reconfigure the recency memory, or scribbles on
// it; a cache or lock file planted by another user; a cache directory other
// users can write; a cache file readers should not trust; a hash seed kept
// for too long. Every test also checks that the product still serves fresh
// data afterwards.
//
// The attacker is the unprivileged user nobody (group nogroup), so these
// tests need root to switch to it, as CI runs them.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cache_layout.h"
#include "reader.h"
#include "support/daemon_process.h"
#include "support/fleet_test.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::test {
namespace {

using namespace std::chrono_literals;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

// Drops to nobody:nogroup in a forked child; false if that failed.
bool BecomeNobody() {
  return setgroups(0, nullptr) == 0 && setgid(kNogroup) == 0 && setuid(kNobody) == 0 && geteuid() == kNobody;
}

class CacheFilesSecurityTest : public FleetTest {
 protected:
  CacheFilesSecurityTest() : FleetTest(20, 3) {}

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user (nobody)";
    FleetTest::SetUp();
    for (const auto& row : admin_->Exec("SELECT id::text, role FROM fleet.user_accounts ORDER BY id"))
      roles_[row[0]] = row[1];
  }

  std::string Config(const std::string& cache_lines = "") const {
    return FleetConfig(dir_.path(), SharedCluster().Conninfo(db_), cache_lines);
  }

  // Starts the daemon and waits for READY.
  void Start(const std::string& cache_lines = "") {
    daemon_ = std::make_unique<DaemonProcess>(dir_.path(), Config(cache_lines));
    ASSERT_TRUE(daemon_->WaitReady()) << Tail(daemon_->Log());
  }

  // Stops the daemon cleanly (SIGTERM, exit 0).
  void Stop() {
    daemon_->Signal(SIGTERM);
    const auto status = daemon_->Wait();
    ASSERT_TRUE(status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << Tail(daemon_->Log());
  }

  // Starts the daemon expecting it to refuse to run: it must exit non-zero,
  // and its log is returned.
  std::string StartRefused() {
    daemon_ = std::make_unique<DaemonProcess>(dir_.path(), Config());
    const auto status = daemon_->Wait();
    EXPECT_TRUE(status.has_value()) << "the daemon did not exit";
    if (status) {
      EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << "status " << *status;
    }
    return daemon_->Log();
  }

  void Open() {
    tc_cache_close(cache_);
    cache_ = nullptr;
    ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &cache_), 0) << std::strerror(errno);
  }

  // A lookup through the daemon on a miss; the role field, or "" on failure.
  std::string Role(const std::string& user) {
    tc_ns ns = 0;
    if (tc_namespace(cache_, "user", &ns) != 0) return "";
    if (tc_cache_lookup(cache_, ns, user.data(), user.size(), 5000, &v_) != TC_FOUND) return "";
    const char* text = nullptr;
    size_t len = 0;
    if (tc_value_get(&v_, "role", &text, &len) != 0) return "";
    return std::string(text, len);
  }

  // Changes a user's role in the database and waits until the cache serves it.
  void ChangeRoleAndExpectItServed(const std::string& user, const std::string& role) {
    admin_->Exec("UPDATE fleet.user_accounts SET role = '" + role + "' WHERE id = '" + user + "'");
    roles_[user] = role;
    ASSERT_TRUE(WaitFor([&] { return Role(user) == role; }))
        << "the cache does not serve the committed role " << role << " (serves " << Role(user) << ")";
  }

  // Every user's role, read through the cache, matches the database.
  void ExpectEveryRoleFresh() {
    for (const auto& [user, role] : roles_) ASSERT_EQ(Role(user), role) << user;
  }

  void ExpectServesFreshData() {
    Open();
    ExpectEveryRoleFresh();
    const std::string user = roles_.begin()->first;
    ChangeRoleAndExpectItServed(user, roles_[user] == "guest" ? "crew" : "guest");
  }

  std::map<std::string, std::string> roles_;  // user id -> role, as committed
};

// What the attacker saw, one line per attempt, sent back through a pipe.
std::string ReadAll(int fd) {
  std::string out;
  char buf[512];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  return out;
}

// The attacker: a process of the workers' group, allowed to read the cache
// and to write recency stamps, that tries every way to take the memory away
// from the other processes, reports each result on `report`, then scribbles
// garbage stamps (counting rounds in *rounds) until it is killed.
[[noreturn]] void Attack(const std::string& path, const std::string& dir, int report,
                         std::atomic<uint64_t>* rounds) {
  std::string r;
  auto note = [&r](const char* what, bool ok) {
    r += what;
    r += ok ? ": ok\n" : ": FAILED (" + std::string(std::strerror(errno)) + ")\n";
  };
  if (!BecomeNobody()) {
    r = "cannot become nobody\n";
    (void)!write(report, r.data(), r.size());
    _exit(2);
  }
  // The old attacks on files: truncate or rewrite the cache, plant files.
  note("truncate the cache file refused", truncate(path.c_str(), 0) != 0);
  note("open the cache file for writing refused", open(path.c_str(), O_WRONLY | O_CLOEXEC) < 0);
  note("truncate <path>.recency refused (no such file)", truncate((path + ".recency").c_str(), 0) != 0);
  note("plant a file in the cache directory refused",
       open((dir + "/planted").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644) < 0);

  // The reader's own view: the library attaches the daemon's segment.
  tc_cache* c = nullptr;
  note("tc_cache_open as a worker", tc_cache_open(path.c_str(), &c) == 0);
  const int id = c != nullptr ? c->current.load()->header->recency_shmid.load() : -1;
  note("the worker's stamps are the daemon's segment",
       c != nullptr && c->current.load()->recency_shared.load() && id != layout::kNoRecency);

  // The segment: its size is fixed at creation, so the only ways to take it
  // away are to remove it or change who may use it.
  shmid_ds ds{};
  note("read the segment's status (a permitted reader)", shmctl(id, IPC_STAT, &ds) == 0);
  note("remove the segment (IPC_RMID) refused", shmctl(id, IPC_RMID, nullptr) != 0 && errno == EPERM);
  shmid_ds changed = ds;
  changed.shm_perm.mode = 0666;
  changed.shm_perm.uid = kNobody;
  note("take over the segment (IPC_SET) refused", shmctl(id, IPC_SET, &changed) != 0 && errno == EPERM);
  note("lock the segment (SHM_LOCK) refused", shmctl(id, SHM_LOCK, nullptr) != 0);
  void* seg = shmat(id, nullptr, 0);
  note("attach the segment read-write (stamps may be written)", !layout::ShmatFailed(seg));
  (void)!write(report, r.data(), r.size());
  close(report);
  if (layout::ShmatFailed(seg)) _exit(1);

  // Everything a permitted writer of stamps can do: garbage everywhere,
  // including the segment's header, and detaching and re-attaching.
  const size_t words = ds.shm_segsz / sizeof(uint32_t);
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (;;) {
    auto* w = static_cast<uint32_t*>(seg);
    for (size_t i = 0; i < words; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      __atomic_store_n(w + i, static_cast<uint32_t>(x), __ATOMIC_RELAXED);
    }
    for (size_t i = 0; i < words; i += 2) __atomic_store_n(w + i, (i & 2) ? 0u : ~0u, __ATOMIC_RELAXED);
    shmdt(seg);
    seg = shmat(id, nullptr, 0);
    if (layout::ShmatFailed(seg)) _exit(3);
    rounds->fetch_add(1, std::memory_order_relaxed);
  }
}

TEST_F(CacheFilesSecurityTest, AWorkerCannotTakeTheRecencyMemoryAwayAndItsGarbageOnlyDisturbsEviction) {
  // A cache smaller than the data, so fills evict by the stamps the attacker
  // scribbles on, and an idle timeout that readers check against them.
  std::string config = Config("group = \"nogroup\"\nidle_timeout = \"3s\"\n");
  const std::string cap = "capacity = 10000";
  config.replace(config.find(cap), cap.size(), "capacity = 16");
  ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0) << "workers must reach the file";
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), config);
  ASSERT_TRUE(daemon_->WaitReady()) << Tail(daemon_->Log());
  Open();
  ASSERT_TRUE(cache_->current.load()->recency_shared.load()) << "this reader stamps into the shared segment";
  ExpectEveryRoleFresh();

  auto* rounds = static_cast<std::atomic<uint64_t>*>(mmap(
      nullptr, sizeof(std::atomic<uint64_t>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(rounds, MAP_FAILED);
  new (rounds) std::atomic<uint64_t>(0);
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  const pid_t attacker = fork();
  ASSERT_GE(attacker, 0);
  if (attacker == 0) {
    close(pipe_fds[0]);
    Attack(daemon_->cache_path(), dir_.path(), pipe_fds[1], rounds);
  }
  close(pipe_fds[1]);
  const std::string report = ReadAll(pipe_fds[0]);
  close(pipe_fds[0]);
  EXPECT_EQ(report.find("FAILED"), std::string::npos) << report;
  EXPECT_NE(report.find("attach the segment read-write (stamps may be written): ok"), std::string::npos)
      << report;

  // While the attacker scribbles: this reader and the daemon keep serving
  // exactly what the database holds, through fills, evictions and changes.
  ASSERT_TRUE(WaitFor([&] { return rounds->load() >= 3; })) << "the attacker never scribbled";
  const std::string user = roles_.begin()->first;
  const char* cycle[] = {"owner", "crew", "guest", "captain"};
  for (int round = 0; round < 8 && !HasFailure(); ++round) {
    ChangeRoleAndExpectItServed(user, cycle[round % 4]);
    ExpectEveryRoleFresh();
    ASSERT_EQ(kill(daemon_->pid(), 0), 0) << "the daemon died";
  }
  const uint64_t scribbled = rounds->load();
  kill(attacker, SIGKILL);
  int status = 0;
  waitpid(attacker, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the attacker stopped by itself: " << status;
  EXPECT_GE(scribbled, 3u);
  munmap(rounds, sizeof(std::atomic<uint64_t>));

  shmid_ds ds{};
  ASSERT_EQ(shmctl(cache_->current.load()->header->recency_shmid.load(), IPC_STAT, &ds), 0);
  EXPECT_EQ(ds.shm_perm.uid, 0u);
  EXPECT_EQ(ds.shm_perm.mode & 0777, 0660u);
  EXPECT_EQ(ds.shm_segsz, cache_->current.load()->recency_size) << "nothing could change its size";
  ExpectServesFreshData();
  // The destructor checks that the daemon still stops cleanly (exit 0).
}

TEST_F(CacheFilesSecurityTest, AReaderFollowsTheDaemonToANewSegmentAndTheOldOneIsFreed) {
  Start();
  Open();
  const int first = cache_->current.load()->header->recency_shmid.load();
  ASSERT_TRUE(cache_->current.load()->recency_shared.load());

  // A restart while a reader holds the segment keeps it: stamps survive.
  Stop();
  Start();
  EXPECT_EQ(cache_->current.load()->header->recency_shmid.load(), first);
  EXPECT_NE(daemon_->Log().find("kept recency segment " + std::to_string(first)), std::string::npos);

  // A segment the daemon cannot prove its own (here: handed to another user
  // while the daemon was down) is not reused: the daemon makes a new one.
  Stop();
  shmid_ds ds{};
  ASSERT_EQ(shmctl(first, IPC_STAT, &ds), 0);
  ds.shm_perm.uid = kNobody;
  ASSERT_EQ(shmctl(first, IPC_SET, &ds), 0);
  Start();
  const int second = cache_->current.load()->header->recency_shmid.load();
  ASSERT_NE(second, first);
  EXPECT_NE(daemon_->Log().find("created recency segment " + std::to_string(second)), std::string::npos);

  // The reader moves on its next miss; the old segment, marked for removal
  // since its creation, is freed with its last user.
  ASSERT_EQ(shmctl(second, IPC_STAT, &ds), 0);
  const auto attached = ds.shm_nattch;
  ASSERT_EQ(Role(roles_.begin()->first), roles_.begin()->second) << "a miss, then the daemon's answer";
  EXPECT_EQ(cache_->current.load()->recency_seen.load(), second);
  EXPECT_TRUE(cache_->current.load()->recency_shared.load());
  ASSERT_EQ(shmctl(second, IPC_STAT, &ds), 0);
  EXPECT_EQ(ds.shm_nattch, attached + 1) << "the reader attached the new segment";
  EXPECT_NE(shmctl(first, IPC_STAT, &ds), 0) << "the old segment outlived its last user";
  ExpectEveryRoleFresh();
}

TEST_F(CacheFilesSecurityTest, AFilePlantedByAnotherUserIsRefusedNeverReused) {
  Start();
  Stop();
  const std::string path = daemon_->cache_path();
  // The daemon's own file, handed to another user as if that user had planted
  // it (and could patch it): the daemon refuses it and names the owner.
  ASSERT_EQ(chown(path.c_str(), kNobody, kNogroup), 0);
  const std::string planted = ReadFile(path);
  std::string log = StartRefused();
  EXPECT_NE(log.find(path + ": is owned by uid 65534 (nobody)"), std::string::npos) << log;
  EXPECT_TRUE(ReadFile(path) == planted) << "the refused file was written to";
  ASSERT_EQ(unlink(path.c_str()), 0);

  // A planted lock file, and a symbolic link in place of the cache file.
  const std::string lock = path + ".lock";
  ASSERT_EQ(chown(lock.c_str(), kNobody, kNogroup), 0);
  log = StartRefused();
  EXPECT_NE(log.find(lock + ": is owned by uid 65534 (nobody)"), std::string::npos) << log;
  ASSERT_EQ(unlink(lock.c_str()), 0);
  ASSERT_EQ(symlink(dir_.File("elsewhere").c_str(), path.c_str()), 0);
  log = StartRefused();
  EXPECT_NE(log.find(path + ": is a symbolic link; remove it"), std::string::npos) << log;
  EXPECT_NE(access(dir_.File("elsewhere").c_str(), F_OK), 0) << "the link was followed";
  ASSERT_EQ(unlink(path.c_str()), 0);

  Start();
  ExpectServesFreshData();
}

TEST_F(CacheFilesSecurityTest, ACacheDirectoryOtherUsersCanWriteIsRefused) {
  // Like /dev/shm or /tmp: world-writable with the sticky bit.
  ASSERT_EQ(chmod(dir_.path().c_str(), 01777), 0);
  std::string log = StartRefused();
  EXPECT_NE(log.find("its directory " + dir_.path() +
                     " (owner uid 0 (root), mode 1777) is writable by other users"),
            std::string::npos)
      << log;
  EXPECT_NE(access(dir_.File("cache").c_str(), F_OK), 0) << "a file was created there";
  ASSERT_EQ(chmod(dir_.path().c_str(), 0770), 0);
  log = StartRefused();
  EXPECT_NE(log.find("mode 0770) is writable by other users"), std::string::npos) << log;

  // Owned by another user, who could replace the files at will.
  ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
  ASSERT_EQ(chown(dir_.path().c_str(), kNobody, kNogroup), 0);
  log = StartRefused();
  EXPECT_NE(
      log.find("its directory " + dir_.path() + " is owned by uid 65534 (nobody), not by the daemon's user"),
      std::string::npos)
      << log;

  ASSERT_EQ(chown(dir_.path().c_str(), 0, 0), 0);
  Start();
  ExpectServesFreshData();
}

TEST_F(CacheFilesSecurityTest, AReaderRefusesACacheOthersCouldHaveWritten) {
  Start();
  const std::string path = daemon_->cache_path();
  auto open_status = [&]() {
    tc_cache* c = nullptr;
    errno = 0;
    const int rc = tc_cache_open(path.c_str(), &c);
    const int err = errno;
    tc_cache_close(c);
    return std::make_pair(rc, rc == 0 ? 0 : err);
  };
  const auto refused = std::make_pair(static_cast<int>(TC_E_IO), EPERM);
  ASSERT_EQ(open_status(), std::make_pair(0, 0));
  for (const mode_t mode : {0660, 0642, 0666}) {
    ASSERT_EQ(chmod(path.c_str(), mode), 0);
    EXPECT_EQ(open_status(), refused) << "file mode " << std::oct << mode;
  }
  ASSERT_EQ(chmod(path.c_str(), 0640), 0);
  for (const mode_t mode : {01777, 0775, 0757}) {
    ASSERT_EQ(chmod(dir_.path().c_str(), mode), 0);
    EXPECT_EQ(open_status(), refused) << "directory mode " << std::oct << mode;
  }
  ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
  ASSERT_EQ(chown(dir_.path().c_str(), kNobody, kNogroup), 0);
  EXPECT_EQ(open_status(), refused) << "directory owned by another user than the file's";
  ASSERT_EQ(chown(dir_.path().c_str(), 0, 0), 0);
  const std::string link = dir_.File("link");
  ASSERT_EQ(symlink(path.c_str(), link.c_str()), 0);
  tc_cache* c = nullptr;
  EXPECT_EQ(tc_cache_open(link.c_str(), &c), TC_E_IO);
  EXPECT_EQ(errno, ELOOP);

  ExpectServesFreshData();
}

TEST_F(CacheFilesSecurityTest, ACacheModeThatLetsOthersWriteIsRefusedAtStart) {
  for (const char* mode : {"0660", "0642", "0666"}) {
    const std::string path = dir_.File("mode.toml");
    std::ofstream(path, std::ios::trunc) << Config("mode = \"" + std::string(mode) + "\"\n");
    const auto r = RunDaemonCommand("--check-config --config " + path);
    EXPECT_NE(r.exit_code, 0) << mode;
    EXPECT_NE(r.output.find("cache.mode: must not grant write to group or others"), std::string::npos)
        << r.output;
  }
  EXPECT_NE(access(dir_.File("cache").c_str(), F_OK), 0);
  Start("mode = \"0640\"\n");
  ExpectServesFreshData();
}

TEST_F(CacheFilesSecurityTest, AFileWhoseHashSeedIsTooOldIsReplacedWithANewSeed) {
  Start();
  Open();
  const uint64_t seed = cache_->current.load()->header->hash_seed;
  Stop();
  Start();
  EXPECT_NE(daemon_->Log().find(daemon_->cache_path() + " reused"), std::string::npos);
  EXPECT_EQ(cache_->current.load()->header->hash_seed, seed) << "a young seed is kept";
  Stop();

  // Age the file past the limit: its creation time is what the seed's age
  // is measured from.
  {
    const int fd = open(daemon_->cache_path().c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    void* p = mmap(nullptr, sizeof(layout::FileHeader), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    ASSERT_NE(p, MAP_FAILED);
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    const uint64_t now_ns = static_cast<uint64_t>(now.tv_sec) * 1'000'000'000ull;
    static_cast<layout::FileHeader*>(p)->created_realtime_ns =
        now_ns - layout::kMaxSeedAgeNs - 3'600'000'000'000ull;
    munmap(p, sizeof(layout::FileHeader));
  }
  const size_t log_before = daemon_->Log().size();
  Start();
  const std::string log = daemon_->Log().substr(log_before);
  EXPECT_NE(log.find("its hash seed is older than 7 days"), std::string::npos) << log;
  EXPECT_NE(log.find(daemon_->cache_path() + " created"), std::string::npos) << log;
  tc_info info;
  ASSERT_EQ(tc_cache_info(cache_, &info), 0);
  EXPECT_EQ(info.retired, 0) << "the open handle moved to the new file by itself";
  EXPECT_NE(cache_->current.load()->header->hash_seed, seed);
  Open();
  EXPECT_NE(cache_->current.load()->header->hash_seed, seed);
  ExpectServesFreshData();
}

}  // namespace
}  // namespace tenantcache::test
