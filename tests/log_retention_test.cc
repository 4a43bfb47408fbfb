// The daemon prunes the invalidation log itself ([[source]].log_retention,
// tenantcache.daemon_prune_log in sql/install.sql), against the real
// PostgreSQL and the real daemon: the log stays bounded under a steady write
// load; a disconnect within the retention is still replayed (no flush) and a
// longer one flushes (never a stale read); a daemon with a short retention
// never prunes what one with a longer retention still needs; no other role
// can prune or plant a retention; version 3 installations upgrade with their
// triggers working, and a daemon on one says once how to upgrade.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/daemon_process.h"
#include "support/fleet_test.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The fleet config with a short stale_after and heartbeat, so that a
// retention of a few seconds is valid (at least 2 x (stale_after +
// reconnect_max) = 1.4 s), and `source` lines added to [[source]].
std::string RetentionConfig(const std::string& dir, const std::string& conninfo, const std::string& source) {
  std::string c = FleetConfig(dir, conninfo, "", source);
  const auto replace = [&c](const std::string& from, const std::string& to) {
    const size_t at = c.find(from);
    if (at != std::string::npos) c.replace(at, from.size(), to);
  };
  replace("stale_after = \"2s\"", "stale_after = \"500ms\"");
  replace("heartbeat_interval = \"200ms\"", "heartbeat_interval = \"100ms\"");
  return c;
}

// One daemon of the test, in a directory of its own.
struct Daemon {
  TempDir dir;
  std::unique_ptr<DaemonProcess> process;
  tc_cache* cache = nullptr;
  tc_value value;

  ~Daemon() { tc_cache_close(cache); }
  void Start(const std::string& conninfo, const std::string& source) {
    process = std::make_unique<DaemonProcess>(dir.path(), RetentionConfig(dir.path(), conninfo, source));
    ASSERT_TRUE(process->WaitReady()) << process->Log();
    ASSERT_EQ(tc_cache_open(process->cache_path().c_str(), &cache), 0);
  }
  tc_ns Ns(const char* name) const {
    tc_ns ns = 0;
    tc_namespace(cache, name, &ns);
    return ns;
  }
  int Get(const std::string& user) {
    return tc_cache_get(cache, Ns("user"), user.data(), user.size(), &value);
  }
  int Lookup(const std::string& user) {
    return tc_cache_lookup(cache, Ns("user"), user.data(), user.size(), 5000, &value);
  }
  std::string Role() {
    const char* text = nullptr;
    size_t len = 0;
    return tc_value_get(&value, "role", &text, &len) == 0 && text != nullptr ? std::string(text, len)
                                                                             : "<none>";
  }
  bool Available() const {
    tc_info info;
    tc_cache_info(cache, &info);
    return info.available != 0;
  }
  uint64_t Stat(const std::string& name) const {
    const auto stats = DaemonStats(*process);
    return stats.count(name) != 0 ? std::stoull(stats.at(name)) : 0;
  }
};

class LogRetentionTest : public FleetTest {
 protected:
  void TearDown() override {
    if (HasFailure()) {
      for (const Daemon* d : {&a_, &b_})
        if (d->process) std::fprintf(stderr, "--- daemon log ---\n%s\n", Tail(d->process->Log()).c_str());
    }
    FleetTest::TearDown();
  }

  // A login role for one daemon's listener, with the daemon grants; it is
  // held out (and let back in) by the tests.
  std::string ListenerRole(const std::string& name) {
    std::string role = name + "_" + db_;
    admin_->Exec("CREATE ROLE " + role + " LOGIN; SELECT tenantcache.grant_daemon('" + role + "')");
    return role;
  }
  std::string ListenerLine(const std::string& role) const {
    return "listener_conninfo = \"" + SharedCluster().Conninfo(db_, role) + "\"\n";
  }
  // Ends the role's sessions and refuses new ones: its daemon's listener is
  // disconnected and stays so until LetIn.
  void HoldOut(Daemon& d, const std::string& role) {
    admin_->Exec("ALTER ROLE " + role + " NOLOGIN");
    admin_->Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '" + role + "'");
    ASSERT_TRUE(WaitFor([&] { return !d.Available(); })) << "readers were not failed closed";
  }
  void LetIn(Daemon& d, const std::string& role) {
    admin_->Exec("ALTER ROLE " + role + " LOGIN");
    ASSERT_TRUE(WaitFor([&] { return d.Available(); }, 15s)) << "never resynced";
  }
  std::string SetRole(int user, const std::string& role) {
    admin_->Exec("UPDATE fleet.user_accounts SET role = '" + role + "' WHERE id = '" + UserId(user) + "'");
    return admin_->Scalar("SELECT max(seq) FROM tenantcache.invalidation_log");
  }
  std::string PrunedThrough() {
    return admin_->Scalar("SELECT pruned_through_seq FROM tenantcache.log_horizon");
  }

  Daemon a_, b_;
};

// A steady write load with log_retention = 2s: the table never holds more
// than the rows written in one retention plus one pruning period (and the
// heartbeat that carries the call), with a second of slack, at the measured
// write rate. The load writes several times that bound in all, so an
// unpruned log would fail. Status and the metrics show the pruning.
TEST_F(LogRetentionTest, TheLogStaysBoundedUnderASteadyWriteLoad) {
  a_.Start(Conninfo(), "log_retention = \"2s\"\n");
  const std::string first = admin_->Scalar("SELECT coalesce(max(seq), 0) FROM tenantcache.invalidation_log");
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    PgConn w(Conninfo());
    for (int i = 0; !stop.load(); ++i) {
      w.Exec(
          "UPDATE fleet.user_accounts SET role = CASE role WHEN 'guest' THEN 'crew' ELSE 'guest' END "
          "WHERE id = '" +
          UserId(10 + i % 30) + "'");
      std::this_thread::sleep_for(5ms);  // pacing of the load, not synchronisation
    }
  });
  const auto start = Clock::now();
  long max_rows = 0;
  while (Clock::now() - start < 10s) {
    max_rows =
        std::max(max_rows, std::stol(admin_->Scalar("SELECT count(*) FROM tenantcache.invalidation_log")));
    std::this_thread::sleep_for(50ms);  // sampling period of the measurement
  }
  stop = true;
  writer.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const long written =
      std::stol(admin_->Scalar("SELECT max(seq) FROM tenantcache.invalidation_log")) - std::stol(first);
  const double rate = static_cast<double>(written) / seconds;
  // retention 2 s + pruning period (2 s / 10, +25 % jitter) + one heartbeat
  // (100 ms) + 1 s slack for the database and a busy machine.
  const double bound = rate * (2.0 + 0.25 + 0.1 + 1.0);
  EXPECT_GT(static_cast<double>(written), 2.5 * bound) << "the load is too light to tell pruning from none";
  EXPECT_LE(static_cast<double>(max_rows), bound)
      << max_rows << " rows at most in the log; " << written << " written at " << rate << "/s";
  EXPECT_GT(a_.Stat("log_pruned_rows"), 0U);
  EXPECT_EQ(a_.Stat("log_prune_errors"), 0U);
  // What an operator sees.
  const auto status =
      RunCommand(std::string(TC_CTL_BIN) + " --cache " + a_.process->cache_path() + " status");
  EXPECT_TRUE(Contains(status.output, "log pruning     ")) << status.output;
  EXPECT_FALSE(Contains(status.output, "log pruning     0 row(s)")) << status.output;
  EXPECT_TRUE(Contains(status.output, " s ago (errors 0)")) << status.output;
  const std::string metrics = RunCommand(std::string(TC_CTL_BIN) + " --cache " + a_.process->cache_path() +
                                         " stats --format prometheus")
                                  .output;
  EXPECT_TRUE(Contains(metrics, "# TYPE tenantcache_log_pruned_rows counter")) << metrics;
  EXPECT_TRUE(Contains(metrics, "# TYPE tenantcache_log_prune_age_seconds gauge")) << metrics;
}

// Pruning is running (older rows are gone) when the listener is held out
// and a change commits; it comes back within the retention (6 s): the change
// is replayed from the log, and nothing else is flushed.
TEST_F(LogRetentionTest, ADisconnectWithinTheRetentionIsReplayedNotFlushed) {
  const std::string role = ListenerRole("tcl");
  a_.Start(Conninfo(), "log_retention = \"6s\"\n" + ListenerLine(role));
  // Rows to prune: written now, older than the retention 6 s later.
  SetRole(20, "guest");
  ASSERT_TRUE(WaitFor([&] { return a_.Stat("log_pruned_rows") > 0; }, 20s)) << "nothing was ever pruned";
  ASSERT_EQ(a_.Lookup(UserId(1)), TC_FOUND);
  ASSERT_EQ(a_.Lookup(UserId(2)), TC_FOUND);
  const uint64_t flushes = a_.Stat("flushes");
  HoldOut(a_, role);
  const std::string seq = SetRole(1, "guest");
  // Held out for a while (several failed reconnects), well within 6 s.
  const uint64_t reconnects = a_.Stat("reconnects");
  ASSERT_TRUE(WaitFor([&] { return a_.Stat("reconnects") >= reconnects + 3; }));
  LetIn(a_, role);
  EXPECT_LT(std::stol(PrunedThrough()), std::stol(seq)) << "the change's row was pruned within the retention";
  EXPECT_EQ(a_.Get(UserId(1)), TC_MISS) << "a change committed while disconnected was served";
  EXPECT_EQ(a_.Get(UserId(2)), TC_FOUND) << "the replay flushed unrelated entries";
  EXPECT_EQ(a_.Stat("flushes"), flushes);
  EXPECT_TRUE(Contains(a_.process->Log(), "replayed 1 logged invalidation(s)")) << a_.process->Log();
  ASSERT_EQ(a_.Lookup(UserId(1)), TC_FOUND);
  EXPECT_EQ(a_.Role(), "guest");
}

// The listener stays out longer than the retention (2 s) while another
// daemon on the database, with the same retention, prunes the change's row:
// the daemon finds the log no longer reaches back and flushes; nothing
// stale is ever served.
TEST_F(LogRetentionTest, ADisconnectLongerThanTheRetentionFlushesAndServesNothingStale) {
  const std::string role = ListenerRole("tcl");
  a_.Start(Conninfo(), "log_retention = \"2s\"\n" + ListenerLine(role));
  b_.Start(Conninfo(), "log_retention = \"2s\"\n");
  ASSERT_EQ(a_.Lookup(UserId(1)), TC_FOUND);
  ASSERT_EQ(a_.Lookup(UserId(2)), TC_FOUND);
  const uint64_t flushes = a_.Stat("flushes");
  HoldOut(a_, role);
  const std::string seq = SetRole(1, "guest");
  ASSERT_TRUE(WaitFor([&] { return std::stol(PrunedThrough()) >= std::stol(seq); }, 20s))
      << "the other daemon never pruned the change's row";
  EXPECT_EQ(a_.Get(UserId(1)), TC_E_UNAVAILABLE);
  LetIn(a_, role);
  EXPECT_EQ(a_.Get(UserId(1)), TC_MISS) << "a change whose log row was pruned was served";
  EXPECT_EQ(a_.Get(UserId(2)), TC_MISS) << "the cache was not flushed";
  EXPECT_GT(a_.Stat("flushes"), flushes);
  EXPECT_TRUE(
      Contains(a_.process->Log(), "the invalidation log no longer reaches back to the last sync point"))
      << a_.process->Log();
  ASSERT_EQ(a_.Lookup(UserId(1)), TC_FOUND);
  EXPECT_EQ(a_.Role(), "guest");
}

// Daemon A keeps 8 s, daemon B keeps 2 s and prunes all along. A's listener
// is out for longer than B's retention: B does not prune the change A still
// needs, A replays it (no flush); and a row goes only once older than 8 s.
TEST_F(LogRetentionTest, AShortRetentionNeverPrunesWhatALongerOneStillNeeds) {
  const std::string role = ListenerRole("tcl");
  a_.Start(Conninfo(), "log_retention = \"8s\"\n" + ListenerLine(role));
  b_.Start(Conninfo(), "log_retention = \"2s\"\n");
  // Both have recorded their retention.
  ASSERT_TRUE(WaitFor([&] {
    return admin_->Scalar("SELECT count(*) FROM tenantcache.daemons WHERE log_retention IS NOT NULL") == "2";
  }));
  ASSERT_EQ(a_.Lookup(UserId(1)), TC_FOUND);
  ASSERT_EQ(a_.Lookup(UserId(2)), TC_FOUND);
  const uint64_t flushes = a_.Stat("flushes");
  HoldOut(a_, role);
  const std::string seq = SetRole(1, "guest");
  const auto committed = Clock::now();
  // B prunes several times after the row is older than its own 2 s.
  ASSERT_TRUE(WaitFor([&] { return Clock::now() - committed > 3s; }, 5s));
  const uint64_t runs = b_.Stat("log_prune_runs");
  ASSERT_TRUE(WaitFor([&] { return b_.Stat("log_prune_runs") >= runs + 3; }));
  ASSERT_LT(Clock::now() - committed, 7s) << "too slow to prove anything before A's 8 s";
  EXPECT_EQ(admin_->Scalar("SELECT count(*) FROM tenantcache.invalidation_log WHERE seq = " + seq), "1")
      << "the daemon keeping 2 s pruned a row the daemon keeping 8 s needs";
  LetIn(a_, role);
  EXPECT_EQ(a_.Get(UserId(1)), TC_MISS);
  EXPECT_EQ(a_.Get(UserId(2)), TC_FOUND) << "replay was possible, yet the cache was flushed";
  EXPECT_EQ(a_.Stat("flushes"), flushes);
  // The row goes, but not before it is older than the longest retention:
  // the last time it was seen, it was at least that old (less the polling).
  double last_seen_age = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        const auto rows = admin_->Exec(
            "SELECT extract(epoch FROM now() - created_at) FROM tenantcache.invalidation_log WHERE seq = " +
            seq);
        if (rows.empty()) return true;
        last_seen_age = std::stod(rows[0][0]);
        return false;
      },
      20s));
  EXPECT_GE(last_seen_age, 7.5) << "pruned before the longest retention (8 s) had passed";
}

// No role but a daemon role may prune or record a retention; a daemon role
// can touch only its own rows and cannot plant more than a day.
TEST_F(LogRetentionTest, OnlyADaemonRoleMayPruneAndOnlyByTheRule) {
  SetRole(1, "guest");
  admin_->Exec("UPDATE tenantcache.invalidation_log SET created_at = now() - interval '1 hour'");
  const std::string rows = admin_->Scalar("SELECT count(*) FROM tenantcache.invalidation_log");
  ASSERT_NE(rows, "0");
  const std::string intruder = "intruder_" + db_;
  admin_->Exec("CREATE ROLE " + intruder + " LOGIN");
  const std::string daemon1 = ListenerRole("tcd1"), daemon2 = ListenerRole("tcd2");
  PgConn as_intruder(SharedCluster().Conninfo(db_, intruder));
  EXPECT_TRUE(Contains(as_intruder.ExecError("SELECT tenantcache.daemon_prune_log('h:/c', '1 second')"),
                       "permission denied for function daemon_prune_log"));
  EXPECT_TRUE(
      Contains(as_intruder.ExecError("DELETE FROM tenantcache.invalidation_log"), "permission denied"));
  EXPECT_TRUE(Contains(as_intruder.ExecError("UPDATE tenantcache.daemons SET log_retention = '1 day'"),
                       "permission denied"));
  PgConn as_daemon2(SharedCluster().Conninfo(db_, daemon2));
  as_daemon2.Exec("SELECT tenantcache.daemon_seen('h2:/c', '{user}')");
  PgConn as_daemon1(SharedCluster().Conninfo(db_, daemon1));
  // Daemon 2's row is not daemon 1's to use.
  EXPECT_TRUE(Contains(as_daemon1.ExecError("SELECT tenantcache.daemon_prune_log('h2:/c', '1 second')"),
                       "no daemon 'h2:/c' of role " + daemon1 + " is recorded"));
  EXPECT_TRUE(Contains(as_daemon2.ExecError("SELECT tenantcache.daemon_prune_log('h2:/c', '2 days')"),
                       "at most 1 day"));
  EXPECT_TRUE(
      Contains(as_daemon2.ExecError("SELECT tenantcache.daemon_prune_log('h2:/c', '0')"), "more than 0"));
  EXPECT_EQ(admin_->Scalar("SELECT count(*) FROM tenantcache.invalidation_log"), rows);
  // Within the rule: rows an hour old go for a retention of one second.
  EXPECT_EQ(as_daemon2.Scalar("SELECT tenantcache.daemon_prune_log('h2:/c', '1 second')"), rows);
  EXPECT_EQ(admin_->Scalar("SELECT count(*) FROM tenantcache.invalidation_log"), "0");
  EXPECT_EQ(
      admin_->Scalar("SELECT array_to_string(tenantcache.daemon_missing_grants('" + intruder + "'), ', ')"),
      "SELECT ON tenantcache.version, SELECT ON tenantcache.settings, SELECT ON tenantcache.watched_tables, "
      "SELECT ON tenantcache.invalidation_log, SELECT ON tenantcache.log_horizon, EXECUTE ON FUNCTION "
      "tenantcache.daemon_seen(text, text[]), EXECUTE ON FUNCTION tenantcache.daemon_prune_log(text, "
      "interval), SELECT ON tenantcache.heartbeat_key");
}

// A version 3 installation with triggers attached and a daemon role granted
// upgrades in place: the role may prune, the triggers still log and notify,
// and installing again changes nothing.
TEST_F(LogRetentionTest, UpgradingFromVersion3KeepsTheTriggersAndGrantsTheDaemonRoles) {
  const std::string db = SharedCluster().CreateDatabase();
  PgConn admin(SharedCluster().Conninfo(db));
  admin.Exec(ReadFile(TC_SOURCE_DIR "/tests/data/install-v3.sql"));
  admin.Exec(ReadFile(SqlDir() + "/examples/fleet.sql"));
  admin.Exec("SELECT fleet.generate(5, 2)");
  const std::string role = "tcd_v3_" + db;
  admin.Exec("CREATE ROLE " + role + " LOGIN; SELECT tenantcache.grant_daemon('" + role + "')");
  ASSERT_EQ(admin.Scalar("SELECT tenantcache.schema_version()"), "3");
  admin.Exec(ReadFile(SqlDir() + "/install.sql"));
  const std::string state =
      "SELECT (SELECT string_agg(version::text, ',' ORDER BY version) FROM tenantcache.version) || ' ' || "
      "(SELECT count(*) FROM tenantcache.watched_tables) || ' ' || "
      "has_function_privilege('" +
      role +
      "', 'tenantcache.daemon_prune_log(text, interval)', 'EXECUTE') || ' ' || "
      "has_table_privilege('" +
      role + "', 'tenantcache.heartbeat_key', 'SELECT')";
  // The daemon role may also read the heartbeat key (version 6).
  EXPECT_EQ(admin.Scalar(state), "1,2,3,4,5,6 2 true true");
  admin.Exec(ReadFile(SqlDir() + "/install.sql"));
  EXPECT_EQ(admin.Scalar(state), "1,2,3,4,5,6 2 true true");
  EXPECT_EQ(
      admin.Scalar("SELECT has_function_privilege('public', 'tenantcache.daemon_prune_log(text, interval)', "
                   "'EXECUTE')"),
      "f");
  PgListener listener(SharedCluster().Conninfo(db), "tenantcache");
  admin.Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + UserId(1) + "'");
  const auto got = listener.WaitFor(1);
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(Contains(got[0], "1 k ")) << got[0];
  EXPECT_EQ(admin.Scalar("SELECT count(*) > 0 FROM tenantcache.invalidation_log"), "t");
  PgConn as_daemon(SharedCluster().Conninfo(db, role));
  as_daemon.Exec("SELECT tenantcache.daemon_seen('h:/c', '{user}')");
  EXPECT_EQ(as_daemon.Scalar("SELECT tenantcache.daemon_prune_log('h:/c', '1 hour')"), "0");
}

// A daemon with log_retention on a version 3 schema serves as before, and
// says once (not at every reconnect) that pruning needs the upgrade and how.
TEST_F(LogRetentionTest, ADaemonOnAVersion3SchemaLogsTheUpgradeHintOnce) {
  const std::string db = SharedCluster().CreateDatabase();
  PgConn admin(SharedCluster().Conninfo(db));
  admin.Exec(ReadFile(TC_SOURCE_DIR "/tests/data/install-v3.sql"));
  admin.Exec(ReadFile(SqlDir() + "/examples/fleet.sql"));
  admin.Exec("SELECT fleet.generate(5, 2)");
  a_.Start(SharedCluster().Conninfo(db), "log_retention = \"2s\"\n");
  ASSERT_EQ(a_.Lookup(UserId(1)), TC_FOUND);
  for (int i = 0; i < 2; ++i) {
    const uint64_t reconnects = a_.Stat("reconnects");
    admin.Exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tenantcached "
        "listener "
        "main'");
    ASSERT_TRUE(WaitFor([&] { return a_.Stat("reconnects") > reconnects && a_.Available(); }));
  }
  const std::string log = a_.process->Log();
  EXPECT_EQ(Count(log, "the tenantcache schema is version 3: this daemon cannot prune"), 1U) << log;
  EXPECT_TRUE(Contains(log, "tenantcachectl install-sql --conninfo CONNINFO")) << log;
  EXPECT_EQ(a_.Stat("log_prune_runs"), 0U);
  EXPECT_EQ(a_.Stat("log_prune_errors"), 0U);
}

// A retention that cannot replay a single reconnect, or beyond what the
// database keeps a claim for, is refused by name.
TEST_F(LogRetentionTest, ARetentionTooShortOrTooLongIsRefusedByName) {
  const std::string path = dir_.File("bad.toml");
  for (const auto& [value, want] : std::vector<std::pair<std::string, std::string>>{
           {"1s", "must be \"0s\" (never prune) or at least 1400 ms"}, {"2d", "must be at most 1d"}}) {
    std::ofstream(path, std::ios::trunc)
        << RetentionConfig(dir_.path(), Conninfo(), "log_retention = \"" + value + "\"\n");
    const auto r = RunDaemonCommand("--check-config --config " + path);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_TRUE(Contains(r.output, "source[0].log_retention")) << r.output;
    EXPECT_TRUE(Contains(r.output, want)) << r.output;
  }
  std::ofstream(path, std::ios::trunc)
      << RetentionConfig(dir_.path(), Conninfo(), "log_retention = \"0s\"\n");
  EXPECT_EQ(RunDaemonCommand("--check-config --config " + path).exit_code, 0);
}

}  // namespace
}  // namespace tenantcache::test
