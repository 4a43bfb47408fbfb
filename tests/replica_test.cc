// Loaders on a hot standby (conninfo = a streaming replica, listener_conninfo
// = the primary): the real daemon, the real primary of the harness and a
// real standby made from it with pg_basebackup -R, lagging by
// recovery_min_apply_delay or with its replay paused (daemon/replica.h).
#include "replica.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "stats_format.h"
#include "support/daemon_process.h"
#include "support/fleet_test.h"
#include "support/pg_cluster.h"
#include "support/standby.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

CommandResult RunCtl(const std::string& args) { return RunCommand(std::string(TC_CTL_BIN) + " " + args); }

class ReplicaTest : public FleetTest {
 protected:
  void TearDown() override {
    if (HasFailure() && standby_)
      std::fprintf(stderr, "--- standby log ---\n%s\n", standby_->LogTail().c_str());
    FleetTest::TearDown();
    standby_.reset();
  }

  // After SetUp: the standby holds the test's database from the start.
  void StartStandby(std::chrono::milliseconds apply_delay = {}) {
    standby_ = std::make_unique<Standby>(SharedCluster(), apply_delay);
  }
  std::string StandbyConninfo() const { return standby_->Conninfo(db_); }

  // Loaders on the standby, the listener on the primary; `source` adds
  // lines to [[source]], `edit` rewrites the whole config.
  std::string Config(const std::string& source, bool with_listener = true) const {
    return FleetConfig(
        dir_.path(), StandbyConninfo(), "",
        (with_listener ? "listener_conninfo = \"" + Conninfo() + "\"\n" : std::string()) + source);
  }
  void StartDaemon(const std::string& config) { StartDaemonOn(config); }
  std::string RoleOnStandby(const std::string& user) {
    PgConn c(StandbyConninfo());
    return c.Scalar("SELECT role FROM fleet.user_accounts WHERE id = '" + user + "'");
  }

  std::unique_ptr<Standby> standby_;
};

TEST(ReplicaLsn, ParsesPostgresNotationAndRejectsTheRest) {
  EXPECT_EQ(ParseLsn("16/B374D848"), 0x16B374D848ULL);
  EXPECT_EQ(ParseLsn("0/0"), 0ULL);
  EXPECT_EQ(ParseLsn("FFFFFFFF/FFFFFFFF"), std::numeric_limits<uint64_t>::max());
  for (const char* bad : {"", "/", "16/", "/B3", "16B374D848", "1/2/3", "x/1", "1/x", "123456789/0"})
    EXPECT_EQ(ParseLsn(bad), 0ULL) << bad;
}

// The repro: a role change committed on the primary, the standby
// 3 s behind it, the lookup made once the daemon applied the invalidation.
// The old role must never come back: the fill waits for the replay.
TEST_F(ReplicaTest, ALookupAfterACommittedChangeWaitsUntilTheStandbyReplayedIt) {
  StartStandby(3s);
  StartDaemon(Config("query_timeout = \"8s\"\n"));
  const std::string u = UserId(1);
  ASSERT_EQ(Lookup("user", u, 10000), TC_FOUND) << tc_last_error_detail();
  EXPECT_EQ(Field("role"), "captain");
  // Each loader finds the standby when it connects, which may be after the
  // first fill.
  EXPECT_TRUE(WaitFor([&] { return DaemonStat("standby_loaders") == "2"; })) << DaemonStat("standby_loaders");

  admin_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + u + "'");
  const auto committed = Clock::now();
  ASSERT_TRUE(WaitFor([&] { return Get("user", u) == TC_MISS; }))
      << "the commit did not invalidate the entry";
  // The attack is real: the standby still has the old role.
  ASSERT_EQ(RoleOnStandby(u), "captain") << "the standby is not behind; this test would prove nothing";
  const uint64_t waits_before = std::stoull(DaemonStat("replica_waits"));
  ASSERT_EQ(Lookup("user", u, 10000), TC_FOUND) << tc_last_error_detail();
  EXPECT_EQ(Field("role"), "guest") << "a fill from the lagging standby returned the old role";
  EXPECT_GE(Clock::now() - committed, 2s) << "answered before the standby can have replayed the change";
  EXPECT_GT(std::stoull(DaemonStat("replica_waits")), waits_before);
  EXPECT_EQ(RoleOnStandby(u), "guest");
}

// Same change, but the standby stays behind for longer than query_timeout:
// the lookup is answered timeout, and the detail says why.
TEST_F(ReplicaTest, AStandbyBehindForLongerThanQueryTimeoutIsAnsweredTimeoutNamingItsLag) {
  StartStandby(3s);
  StartDaemon(Config("query_timeout = \"1s\"\n"));
  ASSERT_TRUE(standby_->CatchUp());  // past the daemon's first flush
  const std::string u = UserId(2);
  ASSERT_EQ(Lookup("user", u, 5000), TC_FOUND) << tc_last_error_detail();
  admin_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + u + "'");
  ASSERT_TRUE(WaitFor([&] { return Get("user", u) == TC_MISS; }));
  ASSERT_NE(RoleOnStandby(u), "guest") << "the standby is not behind; this test would prove nothing";

  EXPECT_EQ(Lookup("user", u, 5000), TC_E_TIMEOUT) << "role " << Field("role");
  const std::string detail = tc_last_error_detail();
  EXPECT_NE(detail.find("on a hot standby"), std::string::npos) << detail;
  EXPECT_NE(detail.find("bytes of WAL behind"), std::string::npos) << detail;
  EXPECT_NE(detail.find("query_timeout (1000 ms)"), std::string::npos) << detail;
  EXPECT_GE(std::stoull(DaemonStat("replica_timeouts")), 1u);
  EXPECT_NE(daemon_->Log().find("on a hot standby: the standby has not replayed past the last invalidation"),
            std::string::npos)
      << "the daemon log does not say why";

  ASSERT_TRUE(standby_->CatchUp());
  ASSERT_EQ(Lookup("user", u, 5000), TC_FOUND) << tc_last_error_detail();
  EXPECT_EQ(Field("role"), "guest");
}

// The heartbeat NOTIFYs and the namespace record (a write) run on the
// primary: nothing fails every interval on the standby.
TEST_F(ReplicaTest, HeartbeatsAndWritesRunOnThePrimaryNotOnTheStandby) {
  StartStandby();
  const size_t primary_log = SharedCluster().LogSize();
  StartDaemon(Config(""));
  ASSERT_TRUE(WaitFor([&] { return std::stoull(DaemonStat("heartbeats_received")) >= 5; }))
      << "no heartbeat came back: " << DaemonStat("heartbeats_received");
  ASSERT_TRUE(WaitFor([&] { return admin_->Scalar("SELECT count(*) FROM tenantcache.daemons") == "1"; }))
      << "the daemon did not record its namespaces on the primary";
  ASSERT_EQ(Lookup("user", UserId(3), 5000), TC_FOUND) << tc_last_error_detail();
  ASSERT_TRUE(WaitFor([&] { return DaemonStat("standby_loaders") == "2"; })) << DaemonStat("standby_loaders");
  const std::string log = daemon_->Log();
  EXPECT_EQ(log.find("heartbeat failed"), std::string::npos) << Tail(log);
  EXPECT_EQ(log.find("during recovery"), std::string::npos) << Tail(log);
  EXPECT_EQ(log.find("cannot record"), std::string::npos) << Tail(log);
  EXPECT_EQ(standby_->LogTail(1 << 20).find("during recovery"), std::string::npos) << standby_->LogTail();
  EXPECT_EQ(SharedCluster().LogTail(1 << 20, primary_log).find("ERROR"), std::string::npos)
      << SharedCluster().LogTail(6000, primary_log);
  EXPECT_NE(log.find("loader 0 is on a hot standby"), std::string::npos) << Tail(log);

  const CommandResult status = RunCtl("--cache " + daemon_->cache_path() + " status");
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("standby         2 loader(s) on a hot standby"), std::string::npos)
      << status.output;
}

// Without listener_conninfo the listener lands on the standby, where LISTEN
// is refused: the log names the setting to change.
TEST_F(ReplicaTest, AListenerOnTheStandbyIsNamedWithTheSettingToChange) {
  StartStandby();
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), Config("", /*with_listener=*/false));
  EXPECT_TRUE(WaitFor([&] {
    return daemon_->Log().find(
               "the listener's server is a hot standby, which sends no notifications; set "
               "listener_conninfo of [[source]] main to the primary") != std::string::npos;
  })) << Tail(daemon_->Log());
  EXPECT_FALSE(daemon_->WaitReady(200ms)) << "synced without a listener";
}

// Replay paused: every changed key is answered timeout, never its old row;
// the lag shows in status and in the metrics; once replay resumes, fills
// succeed again with the new rows.
TEST_F(ReplicaTest, APausedStandbyNeverServesAChangedKeyStaleAndShowsItsLag) {
  StartStandby();
  StartDaemon(Config("query_timeout = \"1s\"\n"));
  for (int u = 1; u <= 10; ++u)
    ASSERT_EQ(Lookup("user", UserId(u), 5000), TC_FOUND) << tc_last_error_detail();
  standby_->PauseReplay();
  // Every one of them changes (the triggers ignore a write that changes
  // nothing): guest, or owner for a guest.
  std::vector<std::string> old_roles, new_roles;
  for (int u = 1; u <= 5; ++u) {
    old_roles.push_back(
        admin_->Scalar("SELECT role FROM fleet.user_accounts WHERE id = '" + UserId(u) + "'"));
    new_roles.push_back(old_roles.back() == "guest" ? "owner" : "guest");
    admin_->Exec("UPDATE fleet.user_accounts SET role = '" + new_roles.back() + "' WHERE id = '" + UserId(u) +
                 "'");
  }
  for (int u = 1; u <= 5; ++u) ASSERT_TRUE(WaitFor([&] { return Get("user", UserId(u)) == TC_MISS; })) << u;
  for (int u = 1; u <= 5; ++u)
    ASSERT_EQ(RoleOnStandby(UserId(u)), old_roles[u - 1])
        << "the standby replayed; this test would prove nothing";

  for (int u = 1; u <= 5; ++u) {
    const int rc = Lookup("user", UserId(u), 5000);
    EXPECT_EQ(rc, TC_E_TIMEOUT) << "user " << u << " answered " << rc << " role " << Field("role");
  }
  for (int u = 6; u <= 10; ++u)
    EXPECT_EQ(Get("user", UserId(u)), TC_FOUND) << "unchanged entries stay cached";
  EXPECT_GE(std::stoull(DaemonStat("replica_timeouts")), 5u);

  ASSERT_TRUE(WaitFor([&] { return std::stoull(DaemonStat("replica_lag_bytes")) > 0; }));
  ASSERT_TRUE(WaitFor([&] { return std::stod(DaemonStat("replica_lag_seconds")) >= 1.0; }))
      << "lag " << DaemonStat("replica_lag_seconds") << " s";
  ASSERT_TRUE(WaitFor([&] { return DaemonStat("standby_loaders") == "2"; })) << DaemonStat("standby_loaders");
  const CommandResult status = RunCtl("--cache " + daemon_->cache_path() + " status");
  EXPECT_NE(status.output.find("standby         2 loader(s) on a hot standby, lag "), std::string::npos)
      << status.output;
  EXPECT_EQ(status.output.find("lag 0 bytes"), std::string::npos) << status.output;
  const CommandResult prom = RunCtl("--cache " + daemon_->cache_path() + " stats --format prometheus");
  EXPECT_NE(prom.output.find("# TYPE tenantcache_replica_lag_bytes gauge\n"), std::string::npos)
      << prom.output;
  const std::string sample = "\ntenantcache_replica_lag_bytes ";
  const size_t at = prom.output.find(sample);
  ASSERT_NE(at, std::string::npos) << prom.output;
  EXPECT_GT(std::stoull(prom.output.substr(at + sample.size())), 0u) << prom.output;

  standby_->ResumeReplay();
  ASSERT_TRUE(WaitFor([&] { return Lookup("user", UserId(1), 5000) == TC_FOUND; })) << tc_last_error_detail();
  EXPECT_EQ(Field("role"), new_roles[0]);
  for (int u = 2; u <= 5; ++u) {
    ASSERT_EQ(Lookup("user", UserId(u), 5000), TC_FOUND) << tc_last_error_detail();
    EXPECT_EQ(Field("role"), new_roles[u - 1]);
  }
}

// Like the soak, for ~10 s: a writer commits role changes on the primary,
// readers look the users up through the cache and the daemon, and every
// answer is checked against the commits. The standby lags 1.5 s, more than
// stale_after (1 s): a fill answered from it unchecked would break the bound.
TEST_F(ReplicaTest, ContinuousChangesOverALaggingStandbyNeverAnswerBeyondTheBound) {
  constexpr int kUsers = 20;
  constexpr auto kBound = 1s;
  admin_->Exec("INSERT INTO fleet.roles (name) SELECT 'v' || g FROM generate_series(1, 5000) g");
  StartStandby(1500ms);
  std::string config = Config("query_timeout = \"4s\"\n");
  const size_t at = config.find("stale_after = \"2s\"");
  ASSERT_NE(at, std::string::npos);
  config.replace(at, 18, "stale_after = \"1s\"");
  StartDaemon(config);

  // Per user, every role it had: (role, committed no earlier than, committed
  // no later than). A role is recorded before its commit is sent.
  struct Version {
    std::string role;
    Clock::time_point begin, end;
  };
  std::mutex mu;
  std::map<std::string, std::vector<Version>> history;
  for (int u = 1; u <= kUsers; ++u)
    history[UserId(u)].push_back(
        {admin_->Scalar("SELECT role FROM fleet.user_accounts WHERE id = '" + UserId(u) + "'"),
         Clock::time_point::min(), Clock::time_point::min()});

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> answers{0}, timeouts{0}, violations{0}, unknown{0}, behind{0};
  std::string first_violation, first_unknown;
  std::thread writer([&] {
    PgConn c(Conninfo());
    for (int k = 1; !stop && k <= 5000; ++k) {
      const std::string u = UserId(1 + k % kUsers), role = "v" + std::to_string(k);
      {
        std::lock_guard<std::mutex> lock(mu);
        history[u].push_back({role, Clock::now(), Clock::time_point::max()});
      }
      std::string sql = "UPDATE fleet.user_accounts SET role = '";
      sql.append(role).append("' WHERE id = '").append(u).append("'");
      c.Exec(sql);
      const auto end = Clock::now();
      std::lock_guard<std::mutex> lock(mu);
      history[u].back().end = end;
      // Paced so that each user changes every ~2 s: longer than a fill's
      // wait for the standby (1.5 s), or few fills would outlive their key.
      std::this_thread::sleep_for(100ms);
    }
  });
  // Direct reads of the standby, to show that it really serves rows older
  // than the bound (else the check below would prove nothing).
  std::thread prober([&] {
    PgConn c(StandbyConninfo());
    std::mt19937 rng(7);
    while (!stop) {
      const std::string u = UserId(1 + static_cast<int>(rng() % kUsers));
      const auto started = Clock::now();
      const std::string role = c.Scalar("SELECT role FROM fleet.user_accounts WHERE id = '" + u + "'");
      std::lock_guard<std::mutex> lock(mu);
      const auto& h = history[u];
      for (size_t j = 0; j + 1 < h.size(); ++j)
        if (h[j].role == role && h[j + 1].end < started - kBound) ++behind;
      std::this_thread::sleep_for(50ms);
    }
  });
  std::vector<std::thread> readers;
  readers.reserve(3);
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&, r] {
      tc_cache* cache = nullptr;
      if (tc_cache_open(daemon_->cache_path().c_str(), &cache) != 0) {
        ++violations;
        return;
      }
      tc_ns ns = 0;
      tc_namespace(cache, "user", &ns);
      std::mt19937 rng(static_cast<unsigned>(r));
      tc_value v;
      while (!stop) {
        const std::string u = UserId(1 + static_cast<int>(rng() % kUsers));
        const auto started = Clock::now();
        const int rc = tc_cache_lookup(cache, ns, u.data(), u.size(), 6000, &v);
        if (rc == TC_E_TIMEOUT || rc == TC_E_UNAVAILABLE) {
          ++timeouts;
          continue;
        }
        if (rc != TC_FOUND) {
          const char* detail = tc_last_error_detail();
          std::lock_guard<std::mutex> lock(mu);
          if (unknown++ == 0)
            first_unknown = std::string(tc_strerror(rc)) + ": " + (detail != nullptr ? detail : "");
          continue;
        }
        const std::string role = FieldOf(v, "role");
        ++answers;
        std::lock_guard<std::mutex> lock(mu);
        const auto& h = history[u];
        size_t j = 0;
        while (j < h.size() && h[j].role != role) ++j;
        if (j == h.size()) {
          if (unknown++ == 0) first_unknown = "user " + u + " answered role " + role + ", which it never had";
          continue;
        }
        // The next role committed more than the bound before the lookup
        // began: this answer is too old.
        if (j + 1 < h.size() && h[j + 1].end < started - kBound) {
          if (violations++ == 0)
            first_violation.append("user ")
                .append(u)
                .append(" answered ")
                .append(role)
                .append(", replaced by ")
                .append(h[j + 1].role)
                .append(" ")
                .append(std::to_string(
                    std::chrono::duration_cast<std::chrono::milliseconds>(started - h[j + 1].end).count()))
                .append(" ms before the lookup began");
        }
      }
      tc_cache_close(cache);
    });
  }
  const auto until = Clock::now() + 10s;
  EXPECT_FALSE(WaitFor([&] { return violations > 0; },
                       std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now())))
      << first_violation;
  stop = true;
  writer.join();
  prober.join();
  for (auto& t : readers) t.join();

  std::fprintf(stderr, "answers %llu, timeouts/unavailable %llu, standby reads beyond the bound %llu\n",
               static_cast<unsigned long long>(answers.load()),
               static_cast<unsigned long long>(timeouts.load()),
               static_cast<unsigned long long>(behind.load()));
  EXPECT_EQ(violations, 0u) << first_violation;
  EXPECT_EQ(unknown, 0u) << "answers that are no role the user ever had, or errors; the first: "
                         << first_unknown;
  // Each miss waits about the standby's delay (1.5 s) and keys change every
  // 2 s, so a loaded machine answers few lookups in 10 s: enough that some
  // fills were checked is what counts.
  EXPECT_GE(answers, 10u);
  EXPECT_GT(behind, 0u) << "the standby never served a row older than the bound: the check proves nothing";
  EXPECT_GT(std::stoull(DaemonStat("replica_waits")), 0u);
}

}  // namespace
}  // namespace tenantcache::test
