// Workers follow a replaced cache file: when the daemon restarts with another
// geometry it retires the old file, and every open handle moves to the new one
// by itself, never touching unmapped memory, releasing the old mapping once no
// thread can be inside it, and keeping its namespace ids' meaning. The real
// daemon binary, the real PostgreSQL of the harness, real forked reader
// processes with threads.
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/membarrier.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "reader.h"
#include "support/daemon_process.h"
#include "support/fleet_test.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

#if defined(__SANITIZE_THREAD__)
// The fork tests' children inherit ThreadSanitizer's record of the parent's
// running threads, which they can never join.
extern "C" const char* __tsan_default_options() { return "report_thread_leaks=0"; }
#endif

namespace tenantcache::test {
namespace {

using namespace std::chrono_literals;

// A thread that reads `key` through `cache` without pause until destroyed,
// so that a fork() or a switch finds it, as likely as not, inside a read.
class BusyReader {
 public:
  BusyReader(tc_cache* cache, tc_ns ns, std::string key)
      : thread_([this, cache, ns, key = std::move(key)] {
          tc_value v;
          while (!stop_.load()) (void)tc_cache_get(cache, ns, key.data(), key.size(), &v);
        }) {}
  ~BusyReader() {
    stop_ = true;
    thread_.join();
  }
  BusyReader(const BusyReader&) = delete;
  BusyReader& operator=(const BusyReader&) = delete;

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer does not support threads started after a multi-threaded
// fork() (a new thread reuses a copied thread's id and it aborts): there the
// children read on their forking thread only.
constexpr int kThreadsAfterFork = 0;
#else
constexpr int kThreadsAfterFork = 4;
#endif

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr auto kSlack = 10s;  // sanitized daemons and readers run several times slower
#else
constexpr auto kSlack = 3s;
#endif

uint64_t NowNs() { return MonotonicNowNs(); }

// Mappings of `path` in this process: the file now at the path and, with
// `retired`, only the replaced ones still mapped ("<path> (deleted)" in /proc).
int MappingsOf(const std::string& path, bool retired = false) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line)) {
    const size_t at = line.find('/');
    if (at == std::string::npos) continue;
    const std::string file = line.substr(at);
    n += (!retired && file == path) || file == path + " (deleted)";
  }
  return n;
}

// ---------------------------------------------------------------------------
// Without the daemon: the writer library replaces the file as the daemon does.
// ---------------------------------------------------------------------------

class ReplacedFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_ = FleetOptions(dir_.File("cache"), 1000);
    writer_ = OpenSynced(options_);
    ASSERT_EQ(tc_cache_open(options_.path.c_str(), &cache_), 0);
  }
  void TearDown() override { tc_cache_close(cache_); }

  // The daemon's restart with other options: the old writer goes, a new one
  // renames its file over the path and retires the old file.
  void Replace(const CacheOptions& next) {
    writer_.reset();
    writer_ = OpenSynced(next);
    ASSERT_FALSE(writer_->reused());
  }
  void PutUser(const std::string& id, const std::string& role) {
    const int ns = writer_->FindNamespace("user");
    ASSERT_GE(ns, 0);
    const std::string tenant = Uuid(1000);
    EntryData e{tenant, {"ACME", "https://acme.example.com", role}};
    ASSERT_EQ(writer_->Put(static_cast<uint32_t>(ns), id, e, 0, writer_->BeginFill()), PutResult::kStored);
  }
  int Get(tc_ns ns, const std::string& key) { return tc_cache_get(cache_, ns, key.data(), key.size(), &v_); }
  uint64_t Capacity() {
    tc_info info;
    EXPECT_EQ(tc_cache_info(cache_, &info), 0);
    return info.capacity;
  }

  TempDir dir_;
  CacheOptions options_;
  std::unique_ptr<CacheWriter> writer_;
  tc_cache* cache_ = nullptr;
  tc_value v_;
};

TEST_F(ReplacedFileTest, NamespaceIdsKeepTheirNameWhenTheNewFileReordersOrDropsNamespaces) {
  tc_ns user = 0, tenant = 0, label = 0;
  ASSERT_EQ(tc_namespace(cache_, "user", &user), 0);
  ASSERT_EQ(tc_namespace(cache_, "tenant", &tenant), 0);
  ASSERT_EQ(tc_namespace(cache_, "label", &label), 0);
  PutUser(Uuid(1), "old-role");
  tc_value before;
  ASSERT_EQ(tc_cache_get(cache_, user, Uuid(1).data(), 36, &before), TC_FOUND);

  // The new file: "label" first, "user" second, "tenant" gone, "team" new.
  auto next = options_;
  next.capacity = 2000;
  next.namespaces = {options_.namespaces[4], options_.namespaces[0],
                     NamespaceSpec{"team", layout::kSlug, 0, {"name"}}};
  Replace(next);
  PutUser(Uuid(1), "new-role");
  ASSERT_EQ(writer_->Put(0, "x", EntryData{Uuid(1000), {"lbl"}}, 0, writer_->BeginFill()),
            PutResult::kStored);

  ASSERT_EQ(Get(user, Uuid(1)), TC_FOUND) << "the id obtained before the switch still means \"user\"";
  EXPECT_EQ(FieldOf(v_, "role"), "new-role");
  EXPECT_EQ(Capacity(), 2000u);
  ASSERT_EQ(Get(label, "x"), TC_FOUND);
  EXPECT_EQ(FieldOf(v_, "value"), "lbl");
  EXPECT_EQ(Get(tenant, Uuid(2)), TC_E_NO_NAMESPACE) << "a namespace the new file lacks fails clearly";
  EXPECT_EQ(tc_namespace_key_kind(cache_, tenant), TC_E_NO_NAMESPACE);
  tc_ns probe = 0;
  EXPECT_EQ(tc_namespace(cache_, "tenant", &probe), TC_E_NO_NAMESPACE);
  EXPECT_STREQ(tc_namespace_name(cache_, tenant), "tenant") << "an id never changes its name";
  tc_ns team = 0;
  ASSERT_EQ(tc_namespace(cache_, "team", &team), 0);
  EXPECT_EQ(team, 5u) << "a new name gets a new id, never a reused one";
  EXPECT_EQ(tc_namespace_count(cache_), 6u);
  EXPECT_EQ(tc_namespace_key_kind(cache_, team), TC_KEY_SLUG);
  EXPECT_EQ(Get(team, "blue"), TC_MISS);

  // A value read from the old file keeps its field names (they live until close).
  const char* name = nullptr;
  const char* text = nullptr;
  size_t len = 0;
  ASSERT_EQ(tc_value_field(&before, 2, &name, &text, &len), 0);
  EXPECT_STREQ(name, "role");
  EXPECT_EQ(std::string(text, len), "old-role");
  EXPECT_TRUE(WaitFor([&] { return MappingsOf(options_.path, true) == 0; }, 2s))
      << "the old file is still mapped";
}

TEST_F(ReplacedFileTest, AReplacementThatFailsTheOpenChecksIsNotFollowed) {
  ASSERT_EQ(Get(0, Uuid(1)), TC_MISS);
  auto next = options_;
  next.capacity = 3000;
  Replace(next);
  // Another user could have written a group-writable file: refused, as by
  // tc_cache_open; the handle stays on the retired file and fails closed.
  ASSERT_EQ(chmod(options_.path.c_str(), 0662), 0);
  EXPECT_EQ(Get(0, Uuid(1)), TC_E_UNAVAILABLE);
  EXPECT_EQ(Capacity(), 1000u);
  // A symbolic link in its place (it would escape the directory check).
  ASSERT_EQ(chmod(options_.path.c_str(), 0640), 0);
  ASSERT_EQ(rename(options_.path.c_str(), dir_.File("real").c_str()), 0);
  ASSERT_EQ(symlink(dir_.File("real").c_str(), options_.path.c_str()), 0);
  EXPECT_FALSE(WaitFor([&] { return Get(0, Uuid(1)) != TC_E_UNAVAILABLE; }, 300ms))
      << "followed a symbolic link";
  EXPECT_EQ(Capacity(), 1000u);
  // Put right, it is followed.
  ASSERT_EQ(unlink(options_.path.c_str()), 0);
  ASSERT_EQ(rename(dir_.File("real").c_str(), options_.path.c_str()), 0);
  EXPECT_TRUE(WaitFor([&] { return Get(0, Uuid(1)) == TC_MISS; }, 2s));
  EXPECT_EQ(Capacity(), 3000u);
}

TEST_F(ReplacedFileTest, AHandleOpenedBeforeForkFollowsInTheChildWhileAParentThreadReads) {
  tc_ns user = 0;
  ASSERT_EQ(tc_namespace(cache_, "user", &user), 0);
  PutUser(Uuid(1), "first");
  // A parent thread reads without pause, so that at fork() it is as likely
  // as not inside a read section that, in the child, no thread will ever end.
  const BusyReader reader(cache_, user, Uuid(1));
  ASSERT_TRUE(WaitFor([&] {
    tc_stats st;
    tc_cache_stats(cache_, &st);
    return st.hits > 1000;
  }));
  // The writer goes first: a child would otherwise inherit its lock.
  writer_.reset();
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(go[1]);  // a parent that dies unblocks the read
    char c;
    if (read(go[0], &c, 1) != 1) _exit(10);
    tc_value v;
    if (!WaitFor([&] { return tc_cache_get(cache_, user, Uuid(1).data(), 36, &v) == TC_FOUND; }, 5s))
      _exit(11);
    if (FieldOf(v, "role") != "second") _exit(12);
    // Released although the parent's reader thread was copied mid-read.
    if (!WaitFor([&] { return MappingsOf(options_.path, true) == 0; }, 5s)) _exit(13);
    _exit(0);
  }
  auto next = options_;
  next.capacity = 4000;
  Replace(next);
  PutUser(Uuid(1), "second");
  ASSERT_EQ(write(go[1], "g", 1), 1);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  close(go[0]);
  close(go[1]);
  EXPECT_TRUE(WIFEXITED(status)) << "the child crashed: status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: no go; 11: never found; 12: wrong value; 13: old file kept";
  // The parent's own thread followed too, and its old mapping went.
  EXPECT_TRUE(WaitFor([&] { return Capacity() == 4000u && MappingsOf(options_.path, true) == 0; }, 5s));
}

// A daemon restarted with a config slip (B: "user" gone, "tenant_by_slug"
// keyed by uuid), then again with it fixed (C): ids used only through
// `read` must work again on C by themselves, with B released.
class SlipTest : public ReplacedFileTest {
 protected:
  void SetUp() override {
    ReplacedFileTest::SetUp();
    ASSERT_EQ(tc_namespace(cache_, "user", &user_), 0);
    ASSERT_EQ(tc_namespace(cache_, "tenant_by_slug", &slug_), 0);
    PutUser(Uuid(1), "on-a");
    ASSERT_EQ(Get(user_, Uuid(1)), TC_FOUND);
    ASSERT_EQ(Get(slug_, "acme"), TC_MISS);
    auto b = options_;
    b.capacity = 2000;
    b.namespaces = {options_.namespaces[1],
                    NamespaceSpec{"tenant_by_slug", layout::kUuid, 0, {"id", "code"}}};
    Replace(b);
    ASSERT_TRUE(WaitFor([&] { return Capacity() == 2000u; }, 2s)) << "never followed to B";
    ASSERT_EQ(Get(user_, Uuid(1)), TC_E_NO_NAMESPACE);
    ASSERT_EQ(Get(slug_, "acme"), TC_E_INVALID_KEY);
    ASSERT_EQ(tc_namespace_key_kind(cache_, slug_), TC_KEY_UUID);
    auto c = options_;
    c.capacity = 3000;
    Replace(c);
    PutUser(Uuid(1), "on-c");
    // From here on, no call that would follow on its own (tc_cache_info,
    // tc_namespace): only the one under test.
  }
  // C was followed and B, retired, is no longer mapped.
  void ExpectOnC() {
    EXPECT_TRUE(WaitFor([&] { return MappingsOf(options_.path, true) == 0; }, 2s)) << "B is still mapped";
    EXPECT_EQ(Capacity(), 3000u);
  }

  tc_ns user_ = 0, slug_ = 0;
};

TEST_F(SlipTest, AnIdWhoseNamespaceAFileLackedWorksAgainOnTheNextFile) {
  int rc = 0;
  EXPECT_TRUE(WaitFor([&] { return (rc = Get(user_, Uuid(1))) == TC_FOUND; }, 2s))
      << "stuck on the file without \"user\": " << tc_strerror(rc);
  EXPECT_EQ(FieldOf(v_, "role"), "on-c");
  ExpectOnC();
}

TEST_F(SlipTest, AnIdWhoseKeyKindAFileChangedWorksAgainOnTheNextFile) {
  int rc = 0;
  EXPECT_TRUE(WaitFor([&] { return (rc = Get(slug_, "acme")) == TC_MISS; }, 2s))
      << "stuck on the file keying \"tenant_by_slug\" by uuid: " << tc_strerror(rc);
  ExpectOnC();
}

TEST_F(SlipTest, KeyKindAndNormalisationFollowToTheNextFile) {
  EXPECT_TRUE(WaitFor([&] { return tc_namespace_key_kind(cache_, user_) == TC_KEY_UUID; }, 2s))
      << "tc_namespace_key_kind stuck on the file without \"user\"";
  EXPECT_TRUE(WaitFor([&] { return tc_namespace_key_kind(cache_, slug_) == TC_KEY_SLUG; }, 2s));
  char buf[TC_MAX_KEY_LEN + 1];
  size_t len = 0;
  EXPECT_EQ(tc_cache_normalize_key(cache_, slug_, "ACME", 4, buf, &len, nullptr), 0);
  EXPECT_STREQ(buf, "acme");
  ExpectOnC();
}

// A child forked while another thread of the parent is inside one of the
// handle's bookkeeping steps (a switch, a pool change, a thread's first read)
// must not inherit it half done: fork() waits for it (reader rule 7), and the
// child can use every part of the handle, from new threads too.
TEST_F(ReplacedFileTest, ForkWaitsForAThreadInsideTheHandlesBookkeeping) {
  tc_ns user = 0;
  ASSERT_EQ(tc_namespace(cache_, "user", &user), 0);
  PutUser(Uuid(1), "first");
  ASSERT_EQ(Get(user, Uuid(1)), TC_FOUND);
  struct Lock {
    const char* name;
    std::mutex tc_cache::*mu;
  };
  for (const Lock& l : {Lock{"follow_mu", &tc_cache::follow_mu}, Lock{"pool_mu", &tc_cache::pool_mu},
                        Lock{"stats_mu", &tc_cache::stats_mu}}) {
    SCOPED_TRACE(l.name);
    std::atomic<bool> held{false};
    std::atomic<bool> done{false};  // copied into the child by fork()
    std::thread holder([&] {
      std::lock_guard<std::mutex> lock(cache_->*l.mu);
      held = true;
      // Far longer than any real step (a switch's mmap, a vector's growth),
      // so that a fork() that does not wait happens inside it.
      std::this_thread::sleep_for(200ms);
      done = true;
    });
    ASSERT_TRUE(WaitFor([&] { return held.load(); }, 2s));
    writer_->Heartbeat();  // the child's reads find the file available
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      if (!done.load()) _exit(20);
      tc_stats st;
      if (tc_cache_stats(cache_, &st) != 0 || st.hits == 0) _exit(21);
      tc_value v;
      if (tc_cache_get(cache_, user, Uuid(1).data(), 36, &v) != TC_FOUND) _exit(22);
      std::atomic<int> found{0};
      std::vector<std::thread> pool;
      pool.reserve(kThreadsAfterFork);
      for (int t = 0; t < kThreadsAfterFork; ++t) {
        pool.emplace_back([&] {
          tc_value tv;
          if (tc_cache_get(cache_, user, Uuid(1).data(), 36, &tv) == TC_FOUND) found.fetch_add(1);
        });
      }
      for (auto& t : pool) t.join();
      _exit(found.load() == kThreadsAfterFork ? 0 : 23);
    }
    holder.join();
    int status = 0;
    const bool exited = WaitFor([&] { return waitpid(pid, &status, WNOHANG) == pid; }, 5s);
    if (!exited) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    EXPECT_TRUE(exited) << "the child hung on a lock held at fork()";
    EXPECT_TRUE(WIFEXITED(status)) << "the child crashed: status " << status;
    EXPECT_EQ(WEXITSTATUS(status), 0)
        << "20: fork() did not wait for the step; 21: statistics; 22, 23: reads";
  }
}

// Pre-fork servers: the parent warmed the handle and keeps a thread reading;
// each child's forking thread keeps reading (its per-thread block cached)
// while it starts a pool of threads, and the file is replaced meanwhile. No
// thread may lose its read section to another's first read, the child must
// reach the new file, and the old mapping must go.
TEST_F(ReplacedFileTest, ChildrenThatStartThreadsAfterForkFollowASwitch) {
  tc_ns user = 0;
  ASSERT_EQ(tc_namespace(cache_, "user", &user), 0);
  PutUser(Uuid(1), "r0");
  const BusyReader reader(cache_, user, Uuid(1));
  constexpr int kRounds = 8;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string next_role = "r" + std::to_string(round + 1);
    ASSERT_TRUE(WaitFor([&] { return Get(user, Uuid(1)) == TC_FOUND; }, 5s));
    writer_.reset();  // a child would otherwise inherit the writer's lock
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const std::string key = Uuid(1);
      auto on_next = [&](tc_value* v) {
        return tc_cache_get(cache_, user, key.data(), key.size(), v) == TC_FOUND &&
               FieldOf(*v, "role") == next_role;
      };
      std::atomic<int> reached{0};
      std::vector<std::thread> pool;
      pool.reserve(kThreadsAfterFork);
      tc_value v;
      for (int t = 0; t < kThreadsAfterFork; ++t) {
        pool.emplace_back([&] {
          tc_value tv;
          if (WaitFor([&] { return on_next(&tv); }, 10s)) reached.fetch_add(1);
        });
        (void)tc_cache_get(cache_, user, key.data(), key.size(), &v);
      }
      const bool mine = WaitFor([&] { return on_next(&v); }, 10s);
      for (auto& t : pool) t.join();
      if (!mine || reached.load() != kThreadsAfterFork) _exit(30);
      if (!WaitFor([&] { return MappingsOf(options_.path, true) == 0; }, 5s)) _exit(31);
      _exit(0);
    }
    auto next = options_;
    next.capacity = 1000 * static_cast<uint64_t>(round + 2);
    Replace(next);
    PutUser(Uuid(1), next_role);
    int status = 0;
    const bool exited = WaitFor([&] { return waitpid(pid, &status, WNOHANG) == pid; }, 20s);
    if (!exited) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    ASSERT_TRUE(exited && WIFEXITED(status)) << "the child crashed or hung: status " << status;
    ASSERT_EQ(WEXITSTATUS(status), 0)
        << "30: a thread never read the new file; 31: the old file stayed mapped";
  }
}

// Where the kernel refuses membarrier (a container runtime's seccomp
// profile, an old kernel), readers must fence and the switching thread too
// (reader rule 2), and the old file must still be released, not kept mapped
// until close. The decision is the process's first tc_cache_open's, so the
// test runs again in a fresh process (the test binary itself) whose seccomp
// filter makes membarrier fail with ENOSYS before it opens anything.
class NoMembarrierTest : public ReplacedFileTest {
 protected:
  static bool Inside() { return std::getenv("TC_TEST_NO_MEMBARRIER") != nullptr; }
  static bool DenyMembarrier() {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(filter)), filter};
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
  }
  void SetUp() override {
    if (Inside()) {
      ASSERT_TRUE(DenyMembarrier()) << "seccomp: " << std::strerror(errno);
    }
    ReplacedFileTest::SetUp();
  }
};

TEST_F(NoMembarrierTest, ReadersFenceAndTheOldFileIsStillReleased) {
  if (!Inside()) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      setenv("TC_TEST_NO_MEMBARRIER", "1", 1);
      execl("/proc/self/exe", "reattach_test", "--gtest_filter=NoMembarrierTest.*", nullptr);
      _exit(127);
    }
    int status = 0;
    const bool exited = WaitFor([&] { return waitpid(pid, &status, WNOHANG) == pid; }, 60s);
    if (!exited) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    EXPECT_TRUE(exited && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "the run without membarrier failed (its output is above): status " << status;
    return;
  }
  errno = 0;
  ASSERT_NE(syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0), 0);
  ASSERT_EQ(errno, ENOSYS);
  tc_ns user = 0;
  ASSERT_EQ(tc_namespace(cache_, "user", &user), 0);
  PutUser(Uuid(1), "first");
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> found{0};
  std::vector<std::thread> readers;
  readers.reserve(2);
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      tc_value v;
      const std::string key = Uuid(1);
      while (!stop.load())
        if (tc_cache_get(cache_, user, key.data(), key.size(), &v) == TC_FOUND) found.fetch_add(1);
    });
  }
  struct Join {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~Join() {
      stop = true;
      for (auto& t : threads) t.join();
    }
  } join{stop, readers};
  ASSERT_TRUE(WaitFor([&] { return found.load() > 1000; }));
  auto next = options_;
  next.capacity = 2000;
  Replace(next);
  PutUser(Uuid(1), "second");
  EXPECT_TRUE(WaitFor([&] { return Get(user, Uuid(1)) == TC_FOUND && FieldOf(v_, "role") == "second"; }, 5s));
  const uint64_t before = found.load();
  EXPECT_TRUE(WaitFor([&] { return found.load() > before + 1000; }, 5s))
      << "the reader threads stopped finding";
  EXPECT_TRUE(WaitFor([&] { return MappingsOf(options_.path, true) == 0; }, 5s))
      << "the old file is kept mapped: the switch found no barrier";
}

// ---------------------------------------------------------------------------
// With the real daemon: four reader processes, restarts with new geometry.
// ---------------------------------------------------------------------------

constexpr int kProcs = 4;
constexpr int kThreads = 3;
constexpr int kUsers = 50;
constexpr int kMaxGen = 4096;

// Shared between the test and its reader processes (MAP_SHARED, made before fork).
struct Board {
  std::atomic<int> stop;
  std::atomic<uint64_t> gen[kUsers];                 // last committed role generation
  std::atomic<uint64_t> commit_ns[kUsers][kMaxGen];  // when each generation committed
  struct Proc {
    std::atomic<uint64_t> reads, found, unavailable, timeout, other, wrong;
    std::atomic<uint64_t> last_found_ns, capacity, mappings, new_namespace;
    char wrong_detail[256];
  } proc[kProcs];
};

class ReattachTest : public FleetTest {
 protected:
  ReattachTest() : FleetTest(kUsers, 5) {}

  std::string Config(uint64_t capacity, bool extra_namespace) {
    std::string c = FleetConfig(
        dir_.path(), Conninfo(), "", "",
        extra_namespace ? "[[namespace]]\nname = \"user_again\"\nkind = \"uuid\"\n"
                          "query = \"SELECT yacht_id::text AS tenant_id, role FROM fleet.user_accounts "
                          "WHERE id = $1::uuid\"\n"
                          "tenant_column = \"tenant_id\"\nfields = [\"role\"]\n"
                        : "");
    const std::string from = "capacity = 10000";
    c.replace(c.find(from), from.size(), "capacity = " + std::to_string(capacity));
    return c;
  }

  // One reader process's loop over the handle it inherited (fork-safety is
  // part of what is tested).
  [[noreturn]] void ReaderProcess(int p, tc_ns user) {
    Board::Proc& me = board_->proc[p];
    std::vector<std::thread> threads;
    threads.reserve(kThreads);
    for (int t = 0; t < kThreads; ++t) threads.emplace_back([&, t] { ReadLoop(me, user, p * kThreads + t); });
    while (board_->stop.load() == 0) {
      tc_info info;
      if (tc_cache_info(cache_, &info) == 0) me.capacity.store(info.capacity);
      me.mappings.store(static_cast<uint64_t>(MappingsOf(cache_path_)));
      tc_ns again = 0;
      me.new_namespace.store(tc_namespace(cache_, "user_again", &again) == 0 ? 1 : 0);
      std::this_thread::sleep_for(10ms);  // pacing of the report, not synchronisation
    }
    for (auto& t : threads) t.join();
    _exit(0);
  }

  void ReadLoop(Board::Proc& me, tc_ns user, int seed) {
    std::mt19937 rng(static_cast<unsigned>(seed));
    tc_value v;
    const uint64_t bound_ns = 2'000'000'000;  // stale_after of the config
    while (board_->stop.load() == 0) {
      const int u = static_cast<int>(rng() % kUsers);
      const std::string key = UserId(u + 1);
      const uint64_t g0 = board_->gen[u].load(std::memory_order_acquire);
      const uint64_t t0 = NowNs();
      const int rc = tc_cache_lookup(cache_, user, key.data(), key.size(), 2000, &v);
      me.reads.fetch_add(1);
      if (rc == TC_E_UNAVAILABLE || rc == TC_E_TIMEOUT) {
        (rc == TC_E_UNAVAILABLE ? me.unavailable : me.timeout).fetch_add(1);
        continue;
      }
      if (rc != TC_FOUND) {
        me.other.fetch_add(1);
        continue;
      }
      const std::string role = FieldOf(v, "role");
      char* end = nullptr;
      const uint64_t g = role.size() > 1 && role[0] == 'v' ? std::strtoull(role.c_str() + 1, &end, 10) : 0;
      // An older generation is allowed only while the change that replaced
      // it is younger than the bound.
      const bool ok = end != nullptr && *end == '\0' && g < kMaxGen &&
                      (g >= g0 || t0 - board_->commit_ns[u][g + 1].load() <= bound_ns);
      if (!ok) {
        if (me.wrong.fetch_add(1) == 0)
          std::snprintf(me.wrong_detail, sizeof me.wrong_detail,
                        "user %d: read %s, generation %llu committed", u + 1, role.c_str(),
                        static_cast<unsigned long long>(g0));
        continue;
      }
      me.found.fetch_add(1);
      me.last_found_ns.store(NowNs());
    }
  }

  Board* board_ = nullptr;
  std::string cache_path_;
};

TEST_F(ReattachTest, FourReaderProcessesFollowThreeRestartsWithNewCapacitiesAndANewNamespace) {
  admin_->Exec("INSERT INTO fleet.roles (name) SELECT 'v' || g FROM generate_series(0, " +
               std::to_string(kMaxGen - 1) + ") g");
  admin_->Exec("UPDATE fleet.user_accounts SET role = 'v0', active = true");
  void* mem = mmap(nullptr, sizeof(Board), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  board_ = new (mem) Board{};
  const uint64_t start_ns = NowNs();
  for (auto& row : board_->commit_ns) row[0].store(start_ns);

  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), Config(10000, false));
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  cache_path_ = daemon_->cache_path();
  ASSERT_EQ(tc_cache_open(cache_path_.c_str(), &cache_), 0);
  tc_ns user = 0;
  ASSERT_EQ(tc_namespace(cache_, "user", &user), 0);

  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) ReaderProcess(p, user);
    pids.push_back(pid);
  }

  // Role changes committed all along, each generation's commit time recorded.
  std::atomic<bool> writing{true};
  std::thread writer([&] {
    PgConn conn(Conninfo());
    for (uint64_t i = 0; writing.load(); ++i) {
      const int u = static_cast<int>(i % kUsers);
      const uint64_t g = board_->gen[u].load() + 1;
      if (g >= kMaxGen) break;
      conn.Exec("UPDATE fleet.user_accounts SET role = 'v" + std::to_string(g) + "' WHERE id = '" +
                UserId(u + 1) + "'");
      board_->commit_ns[u][g].store(NowNs());
      board_->gen[u].store(g, std::memory_order_release);
      std::this_thread::sleep_for(5ms);  // a steady write rate
    }
  });

  auto all = [&](const std::function<bool(const Board::Proc&)>& pred) {
    for (const auto& p : board_->proc)
      if (!pred(p)) return false;
    return true;
  };
  ASSERT_TRUE(WaitFor([&] { return all([](const Board::Proc& p) { return p.found.load() > 100; }); }, 20s))
      << "the readers never served";

  struct Step {
    uint64_t capacity;
    bool extra_namespace;
  };
  for (const Step step : {Step{20000, false}, Step{5000, false}, Step{30000, true}}) {
    SCOPED_TRACE("capacity " + std::to_string(step.capacity));
    daemon_->Signal(SIGTERM);
    ASSERT_TRUE(daemon_->Wait().has_value());
    daemon_ = std::make_unique<DaemonProcess>(dir_.path(), Config(step.capacity, step.extra_namespace));
    ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
    const uint64_t ready_ns = NowNs();
    const auto ready = std::chrono::steady_clock::now();
    EXPECT_NE(daemon_->Log().find(cache_path_ + " created"), std::string::npos)
        << "the file was not replaced";
    const bool recovered = WaitFor(
        [&] {
          return all([&](const Board::Proc& p) {
            return p.capacity.load() == step.capacity && p.last_found_ns.load() > ready_ns &&
                   p.mappings.load() == 1 && (!step.extra_namespace || p.new_namespace.load() == 1);
          });
        },
        std::chrono::duration_cast<std::chrono::milliseconds>(2s + kSlack));
    const auto took =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - ready);
    std::fprintf(stderr,
                 "capacity %llu: every reader on the new file, serving, old mapping released in %lld ms\n",
                 static_cast<unsigned long long>(step.capacity), static_cast<long long>(took.count()));
    for (int p = 0; p < kProcs; ++p) {
      const auto& s = board_->proc[p];
      EXPECT_TRUE(recovered) << "reader " << p << ": capacity " << s.capacity.load() << ", mappings "
                             << s.mappings.load() << ", served after ready "
                             << (s.last_found_ns.load() > ready_ns) << ", new namespace "
                             << s.new_namespace.load();
    }
    if (!recovered) break;
  }

  writing = false;
  writer.join();
  board_->stop.store(1);
  for (int p = 0; p < kProcs; ++p) {
    int status = 0;
    const bool exited = WaitFor([&] { return waitpid(pids[p], &status, WNOHANG) == pids[p]; }, 20s);
    if (!exited) {
      kill(pids[p], SIGKILL);
      waitpid(pids[p], &status, 0);
    }
    EXPECT_TRUE(exited && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "reader process " << p << " crashed or hung: status " << status;
    const auto& s = board_->proc[p];
    EXPECT_EQ(s.wrong.load(), 0u) << "reader " << p << ": " << s.wrong_detail;
    std::fprintf(
        stderr, "reader %d: %llu reads, %llu found, %llu unavailable, %llu timed out, %llu other\n", p,
        static_cast<unsigned long long>(s.reads.load()), static_cast<unsigned long long>(s.found.load()),
        static_cast<unsigned long long>(s.unavailable.load()),
        static_cast<unsigned long long>(s.timeout.load()), static_cast<unsigned long long>(s.other.load()));
  }
  munmap(mem, sizeof(Board));
}

}  // namespace
}  // namespace tenantcache::test
