// The control socket under attack by local peers: each test runs
// the attack against the real daemon binary and the real PostgreSQL of the
// harness, and checks that it fails while workers keep getting fresh answers
// through the real client library.
#include <dirent.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "cache_writer.h"
#include "config.h"
#include "control.h"
#include "daemon.h"
#include "protocol.h"
#include "stats_format.h"
#include "support/daemon_process.h"
#include "support/fleet_test.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The daemon's throttled warnings: one per this interval and kind
// (ControlLimits::warn_interval).
constexpr auto kWarnInterval = 10s;
// ControlLimits::partial_frame_timeout.
constexpr auto kPartialFrameTimeout = 5s;

// Lines of `log` at warning level that contain `what`.
size_t WarningLines(const std::string& log, const std::string& what) {
  std::istringstream in(log);
  size_t n = 0;
  for (std::string line; std::getline(in, line);)
    if (line.find("[warning]") != std::string::npos && line.find(what) != std::string::npos) ++n;
  return n;
}

size_t OpenDescriptors(pid_t pid) {
  size_t n = 0;
  if (DIR* d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str())) {
    while (const dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}

uint64_t Stat(const DaemonProcess& d, const std::string& key) {
  const auto s = DaemonStats(d);
  const auto it = s.find(key);
  return it == s.end() ? 0 : std::stoull(it->second);
}

// The same through a handle's pooled connection: while max_clients
// connections are open a new one is refused, an open one still served.
uint64_t Stat(tc_cache* cache, const std::string& key) {
  char buf[8192];
  if (tc_cache_daemon_stats(cache, buf, sizeof buf, 2000) < 0) return 0;
  const auto s = ParseFlatJson(buf);
  const auto it = s.find(key);
  return it == s.end() ? 0 : std::stoull(it->second);
}

// A worker: one thread reading users through the client library until
// stopped: a hit where the cache has the user, else a lookup (a miss the
// daemon answers), and every few reads a lookup of a user nobody cached yet,
// so that the daemon's miss path is exercised all along.
class Worker {
 public:
  Worker(tc_cache* cache, int users, int timeout_ms)
      : thread_([=, this] { Run(cache, users, timeout_ms); }) {}
  ~Worker() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // Every status, the hits, and the slowest answer to a miss.
  std::map<int, uint64_t> statuses() {
    std::lock_guard lock(mu_);
    return statuses_;
  }
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }
  std::chrono::milliseconds slowest_miss() const { return slowest_; }
  std::string Summary() {
    std::string out;
    for (const auto& [st, n] : statuses())
      out += std::string(tc_strerror(st)) + "=" + std::to_string(n) + " ";
    return out + "hits=" + std::to_string(hits_) + " misses=" + std::to_string(misses_) +
           " slowest miss=" + std::to_string(slowest_.count()) + " ms";
  }

 private:
  void Run(tc_cache* cache, int users, int timeout_ms) {
    tc_ns ns = 0;
    tc_namespace(cache, "user", &ns);
    tc_value v;
    for (int i = 0; !stop_; ++i) {
      // Users beyond `users` do not exist: negative answers, each one new.
      const std::string key = i % 50 == 0 ? UserId(100000 + i) : UserId(1 + i % users);
      int st = tc_cache_get(cache, ns, key.data(), key.size(), &v);
      if (st == TC_FOUND || st == TC_NOT_FOUND) {
        ++hits_;
      } else if (st == TC_MISS) {
        ++misses_;
        const auto t0 = Clock::now();
        st = tc_cache_lookup(cache, ns, key.data(), key.size(), timeout_ms, &v);
        slowest_ =
            std::max(slowest_, std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0));
      }
      std::lock_guard lock(mu_);
      ++statuses_[st];
    }
  }

  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<int, uint64_t> statuses_;
  std::atomic<uint64_t> hits_{0}, misses_{0};
  std::chrono::milliseconds slowest_{0};
  std::thread thread_;
};

class ControlLimitsTest : public FleetTest {
 protected:
  // Starts the daemon with `control` added to its [control] table, opens the
  // cache and fills every user once.
  void StartDaemon(const std::string& control = "", unsigned nofile = 0) {
    std::string config = FleetConfig(dir_.path(), SharedCluster().Conninfo(db_));
    config.replace(config.find("[control]\n"), 10, "[control]\n" + control);
    daemon_ =
        std::make_unique<DaemonProcess>(dir_.path(), config, std::map<std::string, std::string>{}, nofile);
    ASSERT_TRUE(daemon_->WaitReady()) << Tail(daemon_->Log());
    ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &cache_), 0);
    tc_ns ns = 0;
    ASSERT_EQ(tc_namespace(cache_, "user", &ns), 0);
    tc_value v;
    for (int u = 1; u <= kUsers; ++u) {
      const std::string k = UserId(u);
      ASSERT_EQ(tc_cache_lookup(cache_, ns, k.data(), k.size(), 5000, &v), TC_FOUND) << k;
    }
  }

  uint64_t Epoch() {
    tc_info info;
    tc_cache_info(cache_, &info);
    return info.epoch;
  }

  static constexpr int kUsers = 50;
};

// A peer refused by allowed_groups once cost the daemon a name-service
// lookup and a warning per connection: 50k connects in 2.9 s left readers
// unavailable for ~2 s.
TEST_F(ControlLimitsTest, AConnectFloodFromARefusedUserLeavesWorkersServedAndTheLogBounded) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run the attacker as nobody";
  StartDaemon("mode = \"0666\"\nallowed_groups = [\"root\"]\n");
  chmod(dir_.path().c_str(), 0755);
  const std::string sock = daemon_->control_socket();
  Worker worker(cache_, kUsers, 2000);

  int counts[2];
  ASSERT_EQ(pipe(counts), 0);
  const auto t0 = Clock::now();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // nobody, without root's supplementary groups, as any privilege drop.
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
    uint64_t connects = 0;
    const auto end = Clock::now() + 3s;
    while (connects < 20000 && Clock::now() < end) {
      const int fd = ConnectControl(sock);
      if (fd >= 0) {
        ++connects;
        close(fd);
      }
    }
    _exit(write(counts[1], &connects, sizeof connects) == sizeof connects ? 0 : 4);
  }
  close(counts[1]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  uint64_t connects = 0;
  ASSERT_EQ(read(counts[0], &connects, sizeof connects), static_cast<ssize_t>(sizeof connects));
  close(counts[0]);
  const auto flood = Clock::now() - t0;
  ASSERT_GT(connects, 1000u) << "the attack did not run";

  // Every connection the kernel accepted for the attacker was refused.
  EXPECT_TRUE(WaitFor([&] { return Stat(*daemon_, "control_refused") == connects; }))
      << Stat(*daemon_, "control_refused") << " of " << connects;
  // The daemon answered misses all along.
  const uint64_t misses_during = worker.misses();
  EXPECT_TRUE(WaitFor([&] { return worker.misses() > misses_during + 5; })) << worker.Summary();
  worker.Stop();
  const auto statuses = worker.statuses();
  for (const auto& [st, n] : statuses) EXPECT_TRUE(st == TC_FOUND || st == TC_NOT_FOUND) << worker.Summary();
  EXPECT_EQ(statuses.count(TC_E_UNAVAILABLE), 0u) << worker.Summary();
  EXPECT_LT(worker.slowest_miss(), 2000ms) << worker.Summary();

  // One warning per interval, the rest counted, and summed up once the
  // interval has passed.
  const std::string refused = "(not in allowed_groups)";
  const size_t bound = 1 + static_cast<size_t>(flood / kWarnInterval);
  EXPECT_TRUE(
      WaitFor([&] { return WarningLines(daemon_->Log(), "more peers refused") == 1; }, kWarnInterval + 3s))
      << "no summary of the suppressed warnings";
  const std::string log = daemon_->Log();
  const size_t lines = WarningLines(log, refused);
  EXPECT_GE(lines, 1u);
  EXPECT_LE(lines, bound + 1) << "one warning per interval, plus the summary";
  EXPECT_EQ(Stat(*daemon_, "control_log_suppressed"), connects - (lines - 1)) << log.substr(0, 4000);
  std::printf("%llu connects by nobody in %lld ms: %zu warning lines; worker: %s\n",
              static_cast<unsigned long long>(connects),
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(flood).count()),
              lines, worker.Summary().c_str());
}

// Without limits, 1,100 half-sent frames exhausted the daemon's 1,024
// descriptors, and workers' misses got TC_E_UNAVAILABLE with nothing logged.
TEST_F(ControlLimitsTest, HalfSentRequestsAreClosedAfterTheirTimeoutAndNeverExhaustDescriptors) {
  constexpr unsigned kNofile = 1024;
  constexpr int kAttackers = 1100;
  // The attacker is an ordinary local user (nobody) whom the socket's mode
  // lets in; root stays the operator.
  if (geteuid() != 0) GTEST_SKIP() << "needs root to connect as another user (nobody)";
  ASSERT_EQ(chmod(dir_.path().c_str(), 0711), 0);
  StartDaemon("mode = \"0666\"\n", kNofile);
  // The default max_clients (1024) does not fit beside the daemon's own
  // descriptors: it is clamped, and says so.
  const uint64_t max_clients = Stat(*daemon_, "control_max_clients");
  EXPECT_LT(max_clients, 1024u);
  EXPECT_GT(max_clients, 900u);
  EXPECT_EQ(WarningLines(daemon_->Log(), "control.max_clients = 1024 exceeds what RLIMIT_NOFILE leaves"), 1u);

  const std::string sock = daemon_->control_socket();
  tc_ns ns = 0;
  ASSERT_EQ(tc_namespace(cache_, "user", &ns), 0);
  tc_value v;
  std::vector<int> fds;
  const auto t0 = Clock::now();
  ASSERT_EQ(seteuid(65534), 0);  // the peer's credentials are taken at connect()
  for (int i = 0; i < kAttackers; ++i) {
    const int fd = ConnectControl(sock);
    if (fd < 0) break;
    if (send(fd, "\x20\x00\x00", 3, MSG_NOSIGNAL) != 3) break;  // a third of a frame's length field
    fds.push_back(fd);
  }
  ASSERT_EQ(seteuid(0), 0);
  ASSERT_EQ(fds.size(), static_cast<size_t>(kAttackers));
  // The daemon holds as many as max_clients allows and refuses the rest.
  ASSERT_TRUE(WaitFor([&] { return Stat(cache_, "control_full") >= kAttackers - max_clients; }))
      << Stat(cache_, "control_full");
  // Every slot is taken, but the operator (root) still gets an answer.
  EXPECT_FALSE(DaemonStats(*daemon_).empty()) << "root was locked out by the attacker's connections";
  const size_t held = OpenDescriptors(daemon_->pid());
  EXPECT_LT(held, kNofile);
  EXPECT_EQ(Stat(cache_, "control_accept_errors"), 0u) << "the daemon ran out of descriptors";
  EXPECT_GE(
      WarningLines(daemon_->Log(), "max_clients (" + std::to_string(max_clients) + ") connections are open"),
      1u);
  // The worker's connection, open since the fills, is answered meanwhile.
  for (int u = 0; u < 5; ++u) {
    const std::string k = UserId(200000 + u);
    EXPECT_EQ(tc_cache_lookup(cache_, ns, k.data(), k.size(), 2000, &v), TC_NOT_FOUND) << "during the flood";
  }
  EXPECT_LT(Clock::now() - t0, kPartialFrameTimeout) << "the flood outlasted the timeout it is meant to test";

  // Every attacker is disconnected: the surplus at once, the rest once their
  // requests stayed incomplete past the timeout.
  std::vector<pollfd> polls(fds.size());
  for (size_t i = 0; i < fds.size(); ++i) polls[i] = {fds[i], POLLIN, 0};
  size_t open = fds.size();
  const auto deadline = Clock::now() + kPartialFrameTimeout + 10s;
  while (open > 0 && Clock::now() < deadline) {
    ASSERT_GE(poll(polls.data(), polls.size(), 100), 0);
    for (auto& p : polls) {
      if (p.fd < 0 || p.revents == 0) continue;
      char b[16];
      if (recv(p.fd, b, sizeof b, MSG_DONTWAIT) == 0 || (p.revents & (POLLHUP | POLLERR)) != 0) {
        close(p.fd);
        p.fd = -1;
        --open;
      }
    }
  }
  const auto took = Clock::now() - t0;
  for (auto& p : polls)
    if (p.fd >= 0) close(p.fd);
  EXPECT_EQ(open, 0u) << "connections holding an incomplete request were never closed";
  EXPECT_GE(took, kPartialFrameTimeout - 1s) << "closed before their timeout";
  const uint64_t timeouts = Stat(*daemon_, "control_timeouts");
  EXPECT_EQ(timeouts + Stat(*daemon_, "control_full"), static_cast<uint64_t>(kAttackers));
  EXPECT_GE(WarningLines(daemon_->Log(), "its request was incomplete for 5000 ms"), 1u);
  EXPECT_LE(WarningLines(daemon_->Log(), "its request was incomplete"), 2u) << "throttled";

  // After the flood: new clients are served, descriptors are back.
  EXPECT_TRUE(WaitFor([&] { return Stat(*daemon_, "control_clients") <= 2; }));
  EXPECT_LT(OpenDescriptors(daemon_->pid()), 100u);
  tc_cache* fresh = nullptr;
  ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &fresh), 0);
  const std::string k = UserId(300000);
  EXPECT_EQ(tc_cache_lookup(fresh, ns, k.data(), k.size(), 2000, &v), TC_NOT_FOUND) << "after the flood";
  admin_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + UserId(3) + "'");
  const std::string u3 = UserId(3);
  EXPECT_TRUE(WaitFor([&] { return tc_cache_get(fresh, ns, u3.data(), u3.size(), &v) == TC_MISS; }));
  ASSERT_EQ(tc_cache_lookup(fresh, ns, u3.data(), u3.size(), 2000, &v), TC_FOUND);
  const char* role = nullptr;
  size_t len = 0;
  ASSERT_EQ(tc_value_get(&v, "role", &role, &len), 0);
  EXPECT_EQ(std::string(role, len), "guest") << "fresh data after the flood";
  tc_cache_close(fresh);
  std::printf(
      "%d half-sent requests: %llu held (max_clients %llu), %zu daemon descriptors, all closed after %lld "
      "ms\n",
      kAttackers, static_cast<unsigned long long>(timeouts), static_cast<unsigned long long>(max_clients),
      held, static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));
}

TEST_F(ControlLimitsTest, ADescriptorLimitBelowTheDaemonsOwnNeedsIsRefusedAtStart) {
  const std::string config = FleetConfig(dir_.path(), SharedCluster().Conninfo(db_));
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), config, std::map<std::string, std::string>{}, 24);
  const auto status = daemon_->Wait();
  ASSERT_TRUE(status.has_value()) << "it started with 24 descriptors";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << *status;
  EXPECT_NE(daemon_->Log().find("RLIMIT_NOFILE is 24, but the daemon needs"), std::string::npos)
      << daemon_->Log();
}

// Without limits, an allowed client ran 100k flushes in 0.57 s, each one
// making every worker of the host miss.
TEST_F(ControlLimitsTest, AFlushFloodIsAnsweredBusyWhileLookupsKeepHitting) {
  StartDaemon();
  const uint64_t epoch_before = Epoch();
  const uint64_t flushes_before = Stat(*daemon_, "flushes");
  Worker worker(cache_, kUsers, 2000);
  std::map<int, uint64_t> answers;
  const auto t0 = Clock::now();
  while (Clock::now() - t0 < 2s) ++answers[tc_cache_flush(cache_, 2000)];
  const auto flood = Clock::now() - t0;
  // And the others the same way, each until it is refused (or 10 s): a
  // tenant, a key. What was applied is bounded by burst + rate x duration.
  const std::string t1 = TenantId(1), u1 = UserId(1);
  tc_ns ns = 0;
  ASSERT_EQ(tc_namespace(cache_, "user", &ns), 0);
  const auto until_busy = [](const std::function<int()>& command, std::map<int, uint64_t>* got) {
    const auto start = Clock::now();
    while ((*got)[TC_E_BUSY] < 100 && Clock::now() - start < 10s) ++(*got)[command()];
    return static_cast<uint64_t>(std::chrono::ceil<std::chrono::seconds>(Clock::now() - start).count());
  };
  std::map<int, uint64_t> tenant_answers, key_answers;
  const uint64_t tenant_seconds = until_busy(
      [&] { return tc_cache_invalidate_tenant(cache_, t1.data(), t1.size(), 2000); }, &tenant_answers);
  const uint64_t key_seconds =
      until_busy([&] { return tc_cache_invalidate(cache_, ns, u1.data(), u1.size(), 2000); }, &key_answers);
  const uint64_t hits_during = worker.hits();
  EXPECT_TRUE(WaitFor([&] { return worker.hits() > hits_during + 1000; })) << worker.Summary();
  worker.Stop();

  for (const auto& [st, n] : answers) EXPECT_TRUE(st == 0 || st == TC_E_BUSY) << tc_strerror(st) << " x" << n;
  const uint64_t applied = answers[0];
  const uint64_t seconds = static_cast<uint64_t>(std::chrono::ceil<std::chrono::seconds>(flood).count());
  EXPECT_GT(answers[TC_E_BUSY], 1000u) << "the flood was not refused";
  EXPECT_LE(applied, 5 + seconds) << "burst 5, then 1 a second";
  EXPECT_GE(applied, 5u) << "the burst was not served";
  EXPECT_EQ(Epoch() - epoch_before, applied) << "each applied flush bumps the epoch once, no more";
  EXPECT_EQ(Stat(*daemon_, "flushes") - flushes_before, applied);
  EXPECT_EQ(tenant_answers.size(), 2u) << "only applied or busy";
  EXPECT_EQ(tenant_answers[TC_E_BUSY], 100u);
  EXPECT_GE(tenant_answers[0], 200u) << "the burst was not served";
  EXPECT_LE(tenant_answers[0], 200 + 100 * tenant_seconds);
  EXPECT_EQ(key_answers.size(), 2u) << "only applied or busy";
  EXPECT_EQ(key_answers[TC_E_BUSY], 100u);
  EXPECT_GE(key_answers[0], 2000u) << "the burst was not served";
  EXPECT_LE(key_answers[0], 2000 + 1000 * key_seconds);
  EXPECT_EQ(Stat(*daemon_, "control_rate_limited"),
            answers[TC_E_BUSY] + tenant_answers[TC_E_BUSY] + key_answers[TC_E_BUSY]);
  EXPECT_LE(WarningLines(daemon_->Log(), "answered busy"), 2u) << "throttled";

  // Lookups kept hitting: the few flushes applied cost a refill each.
  const auto statuses = worker.statuses();
  for (const auto& [st, n] : statuses) EXPECT_TRUE(st == TC_FOUND || st == TC_NOT_FOUND) << worker.Summary();
  EXPECT_GT(worker.hits(), 10 * worker.misses()) << worker.Summary();
  std::printf("flush flood for %lld ms: %llu applied, %llu busy; worker: %s\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(flood).count()),
              static_cast<unsigned long long>(applied), static_cast<unsigned long long>(answers[TC_E_BUSY]),
              worker.Summary().c_str());
}

// The timeouts at unit level, with short ones: the real ControlServer and
// Daemon (its sources never started) on a loop run by the test.
TEST(ControlTimeouts, IdleAndHalfSentConnectionsAreClosedAndActiveOnesKept) {
  TempDir dir;
  std::istringstream text("[cache]\npath = \"" + dir.File("cache") +
                          "\"\ncapacity = 64\n\n[control]\nsocket = \"" + dir.File("ctl.sock") +
                          "\"\n\n[[source]]\nname = \"main\"\n\n"
                          "[[namespace]]\nname = \"user\"\nkind = \"uuid\"\n"
                          "query = \"SELECT $1 AS t, 'v' AS v\"\ntenant_column = \"t\"\nfields = [\"v\"]\n");
  const Config config = ParseConfig(text, dir.File("tenantcached.toml"));
  CacheOptions options;
  options.path = config.cache_path;
  options.capacity = config.capacity;
  options.namespaces.push_back(NamespaceSpec{"user", config.namespaces[0].key_kind, 0, {"v"}});
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  {
    Daemon daemon(&loop, config, CacheWriter::Open(options));
    ControlLimits limits;
    limits.idle_timeout = 600ms;
    limits.partial_frame_timeout = 300ms;
    ControlServer control(&daemon, limits);
    control.Start();
    const int idle = ConnectControl(config.control_socket);
    const int half = ConnectControl(config.control_socket);
    const int active = ConnectControl(config.control_socket);
    ASSERT_TRUE(idle >= 0 && half >= 0 && active >= 0);
    ASSERT_EQ(send(half, "\x20\x00", 2, MSG_NOSIGNAL), 2);
    std::string stats;
    protocol::AppendFrame(&stats, protocol::kStats, 0, 1, "");
    const auto closed = [](int fd) {
      char b[4096];
      ssize_t n;
      while ((n = recv(fd, b, sizeof b, MSG_DONTWAIT)) > 0) {
      }
      return n == 0;
    };
    const auto t0 = Clock::now();
    std::chrono::nanoseconds half_closed{}, idle_closed{};
    auto next_request = t0;
    while (Clock::now() - t0 < 3s && (idle_closed.count() == 0 || half_closed.count() == 0)) {
      // The active client asks for stats every 100 ms: never idle.
      if (Clock::now() >= next_request) {
        ASSERT_EQ(send(active, stats.data(), stats.size(), MSG_NOSIGNAL), static_cast<ssize_t>(stats.size()));
        next_request += 100ms;
      }
      uv_run(&loop, UV_RUN_NOWAIT);
      pollfd p[3] = {{idle, POLLIN, 0}, {half, POLLIN, 0}, {active, POLLIN, 0}};
      ASSERT_GE(poll(p, 3, 10), 0);  // waits for the daemon's next move, at most 10 ms
      if (half_closed.count() == 0 && closed(half)) half_closed = Clock::now() - t0;
      if (idle_closed.count() == 0 && closed(idle)) idle_closed = Clock::now() - t0;
      EXPECT_FALSE(closed(active)) << "an active connection was closed";
    }
    EXPECT_GE(half_closed, 300ms);
    EXPECT_LT(half_closed, 600ms) << "the incomplete request outlived its timeout";
    EXPECT_GE(idle_closed, 600ms);
    EXPECT_LT(idle_closed, 1200ms) << "the idle connection outlived its timeout";
    EXPECT_EQ(daemon.stats().control_timeouts, 1u);
    EXPECT_EQ(daemon.stats().control_idle_closed, 1u);
    EXPECT_EQ(control.clients(), 1u);
    for (int fd : {idle, half, active}) close(fd);
    control.Stop();
    daemon.Stop();
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0) << "a handle was left open";
}

}  // namespace
}  // namespace tenantcache::test
