// tenantcached end to end: the real daemon binary against the real
// PostgreSQL of the harness, the real client library, real signals.
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

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

class DaemonTest : public FleetTest {
 protected:
  void StartDaemon(const std::string& cache = "", const std::string& source = "",
                   const std::string& extra = "") {
    config_ = FleetConfig(dir_.path(), Conninfo(), cache, source, extra);
    StartDaemonOn(config_);
  }

  bool Available() {
    tc_info info;
    tc_cache_info(cache_, &info);
    return info.available != 0;
  }

  std::string config_;
};

TEST_F(DaemonTest, LookupFillsThenHitsAndAnUpdateIsSeenOnTheNextRead) {
  StartDaemon();
  const std::string u = UserId(1);
  EXPECT_EQ(Get("user", u), TC_MISS);
  ASSERT_EQ(Lookup("user", u), TC_FOUND);
  EXPECT_EQ(Field("role"), "captain");
  EXPECT_EQ(std::string(tc_value_tenant(&v_, nullptr)), TenantId(1));
  ASSERT_EQ(Get("user", u), TC_FOUND) << "the fill was written to shared memory";
  EXPECT_EQ(Field("tenant_code"), "Y00001");

  admin_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + u + "'");
  ASSERT_TRUE(WaitFor([&] { return Get("user", u) == TC_MISS; }))
      << "the commit did not invalidate the entry";
  ASSERT_EQ(Lookup("user", u), TC_FOUND);
  EXPECT_EQ(Field("role"), "guest");
}

TEST_F(DaemonTest, ARegistryChangeInvalidatesEveryEntryOfThatTenantInEveryNamespace) {
  StartDaemon();
  // Users 1, 6, 11 belong to tenant 1 (50 users over 5 tenants); users 2 and
  // 3 to tenants 2 and 3.
  for (int u : {1, 6, 11, 2, 3}) ASSERT_EQ(Lookup("user", UserId(u)), TC_FOUND);
  ASSERT_EQ(Lookup("tenant", TenantId(1)), TC_FOUND);
  ASSERT_EQ(Lookup("tenant_by_slug", "yacht-1"), TC_FOUND);
  ASSERT_EQ(Lookup("tenant_by_host", "YACHT-1.fleet.example.com:443"), TC_FOUND);
  EXPECT_EQ(Field("yacht_code"), "Y00001");

  admin_->Exec("UPDATE fleet.fleet_registry SET tenant_url = 'https://moved.example.com' WHERE id = '" +
               TenantId(1) + "'");
  ASSERT_TRUE(WaitFor([&] { return Get("user", UserId(1)) == TC_MISS; }));
  for (int u : {6, 11}) EXPECT_EQ(Get("user", UserId(u)), TC_MISS);
  EXPECT_EQ(Get("tenant", TenantId(1)), TC_MISS);
  EXPECT_EQ(Get("tenant_by_slug", "yacht-1"), TC_MISS);
  EXPECT_EQ(Get("tenant_by_host", "yacht-1.fleet.example.com"), TC_MISS);
  // Tenant generations are slots picked by a seeded hash: another tenant may
  // share tenant 1's (an extra miss, 1 in 1024 here), not both of these.
  EXPECT_TRUE(Get("user", UserId(2)) == TC_FOUND || Get("user", UserId(3)) == TC_FOUND)
      << "other tenants' entries were invalidated";
  ASSERT_EQ(Lookup("user", UserId(6)), TC_FOUND);
  EXPECT_EQ(Field("tenant_url"), "https://moved.example.com");
}

TEST_F(DaemonTest, NegativeEntriesAreCachedAndAnInsertClearsThem) {
  StartDaemon();
  const std::string u = UserId(999);
  ASSERT_EQ(Lookup("user", u), TC_NOT_FOUND);
  EXPECT_EQ(Get("user", u), TC_NOT_FOUND) << "the negative answer was cached";
  admin_->Exec("INSERT INTO fleet.user_accounts (id, yacht_id, email, role) VALUES ('" + u + "', '" +
               TenantId(2) + "', 'new@x', 'crew')");
  ASSERT_TRUE(WaitFor([&] { return Get("user", u) == TC_MISS; }));
  ASSERT_EQ(Lookup("user", u), TC_FOUND);
  EXPECT_EQ(Field("role"), "crew");
}

TEST_F(DaemonTest, RolledBackChangesInvalidateNothing) {
  StartDaemon();
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  ASSERT_EQ(Lookup("user", UserId(2)), TC_FOUND);
  admin_->Exec("BEGIN; UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + UserId(1) +
               "'; ROLLBACK");
  // Notifications arrive in commit order: once a later commit's invalidation
  // is applied, the rolled-back one would have been too.
  admin_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + UserId(2) + "'");
  ASSERT_TRUE(WaitFor([&] { return Get("user", UserId(2)) == TC_MISS; }));
  EXPECT_EQ(Get("user", UserId(1)), TC_FOUND);
  EXPECT_EQ(Field("role"), "captain");
}

TEST_F(DaemonTest, ManualSqlFunctionsAndClientCommandsInvalidate) {
  StartDaemon();
  for (int u : {1, 2, 3, 5}) ASSERT_EQ(Lookup("user", UserId(u)), TC_FOUND);
  admin_->Exec("SELECT tenantcache.invalidate('user', '" + UserId(1) + "')");
  ASSERT_TRUE(WaitFor([&] { return Get("user", UserId(1)) == TC_MISS; }));
  EXPECT_EQ(Get("user", UserId(2)), TC_FOUND);
  admin_->Exec("SELECT tenantcache.invalidate_tenant('" + TenantId(2) + "')");
  ASSERT_TRUE(WaitFor([&] { return Get("user", UserId(2)) == TC_MISS; }));
  // Users 3 and 5 belong to tenants 3 and 5. Tenant generations are slots
  // picked by a seeded hash, so another tenant may share tenant 2's (an
  // extra miss, 1 in 1024 here): one of the two must stay.
  int kept = 0;
  for (int u : {3, 5})
    if (Get("user", UserId(u)) == TC_FOUND) kept = u;
  ASSERT_NE(kept, 0) << "invalidating tenant 2 dropped the entries of other tenants";
  admin_->Exec("SELECT tenantcache.flush()");
  ASSERT_TRUE(WaitFor([&] { return Get("user", UserId(kept)) == TC_MISS; }));

  // The same through the client library, applied before the call returns.
  ASSERT_EQ(Lookup("user", UserId(4)), TC_FOUND);
  const std::string u4 = UserId(4);
  EXPECT_EQ(tc_cache_invalidate(cache_, Ns("user"), u4.data(), u4.size(), 2000), 0);
  EXPECT_EQ(Get("user", u4), TC_MISS);
  ASSERT_EQ(Lookup("user", u4), TC_FOUND);
  const std::string t4 = TenantId(4);
  EXPECT_EQ(tc_cache_invalidate_tenant(cache_, t4.data(), t4.size(), 2000), 0);
  EXPECT_EQ(Get("user", u4), TC_MISS);
  ASSERT_EQ(Lookup("user", u4), TC_FOUND);
  EXPECT_EQ(tc_cache_flush(cache_, 2000), 0);
  EXPECT_EQ(Get("user", u4), TC_MISS);
  EXPECT_EQ(tc_cache_invalidate(cache_, Ns("user"), "bad", 3, 2000), TC_E_INVALID_KEY);
}

TEST_F(DaemonTest, EntriesExpireAfterTheirTtl) {
  StartDaemon("ttl = \"300ms\"\nnegative_ttl = \"300ms\"\n");
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  ASSERT_EQ(Lookup("user", UserId(777)), TC_NOT_FOUND);
  EXPECT_EQ(Get("user", UserId(1)), TC_FOUND);
  const auto filled = std::chrono::steady_clock::now();
  ASSERT_TRUE(
      WaitFor([&] { return Get("user", UserId(1)) == TC_MISS && Get("user", UserId(777)) == TC_MISS; }));
  EXPECT_GE(std::chrono::steady_clock::now() - filled, 250ms);
}

TEST_F(DaemonTest, IdleEntriesExpire) {
  StartDaemon("idle_timeout = \"300ms\"\n");
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  ASSERT_EQ(Lookup("user", UserId(2)), TC_FOUND);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] {
    EXPECT_EQ(Get("user", UserId(2)), TC_FOUND) << "an entry read all along went idle";
    return std::chrono::steady_clock::now() - start > 500ms;
  }));
  EXPECT_EQ(Get("user", UserId(1)), TC_MISS);
}

// 100 concurrent lookups of one cold key from 8 processes make one query.
TEST_F(DaemonTest, AStampedeOfMissesMakesOneQuery) {
  admin_->Exec("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()");
  StartDaemon(
      "", "",
      "[[namespace]]\nname = \"slow_user\"\nkind = \"uuid\"\n"
      "query = \"SELECT u.yacht_id::text AS tenant_id, u.role, pg_sleep(0.3)::text AS stampede_marker "
      "FROM fleet.user_accounts u WHERE u.id = $1::uuid\"\n"
      "tenant_column = \"tenant_id\"\nfields = [\"role\", \"stampede_marker\"]\n");
  const std::string key = UserId(3);
  constexpr int kProcs = 8, kPerProc = 13;  // 104 lookups
  const std::string path = daemon_->cache_path();
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; ++p) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      tc_cache* c = nullptr;
      if (tc_cache_open(path.c_str(), &c) != 0) _exit(2);
      tc_ns ns;
      tc_namespace(c, "slow_user", &ns);
      std::atomic<int> ok{0};
      std::vector<std::thread> threads;
      for (int t = 0; t < kPerProc; ++t)
        threads.emplace_back([&] {
          tc_value v;
          if (tc_cache_lookup(c, ns, key.data(), key.size(), 10000, &v) == TC_FOUND) ++ok;
        });
      for (auto& t : threads) t.join();
      tc_cache_close(c);
      _exit(ok == kPerProc ? 0 : 1);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a process saw a failed lookup";
  }
  EXPECT_EQ(admin_->Scalar("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE "
                           "'%stampede_marker%' AND query NOT LIKE '%pg_stat_statements%'"),
            "1");
  EXPECT_EQ(Get("slow_user", key), TC_FOUND);
  const std::string stats = ControlRequest(dir_.path() + "/ctl.sock", protocol::kStats);
  EXPECT_NE(stats.find("\"coalesced\":103"), std::string::npos) << stats;
  // A late miss (a client whose read came just before the fill landed) is
  // answered from the cache: no second query.
  const std::string answer =
      ControlRequest(daemon_->control_socket(), protocol::kLookup, protocol::KeyPayload("slow_user", key));
  protocol::ValuePayload value;
  ASSERT_TRUE(protocol::ParseValue(answer, &value));
  EXPECT_EQ(value.field_count, 2);
  EXPECT_EQ(DaemonStats(*daemon_)["answered_cached"], "1");
  EXPECT_EQ(admin_->Scalar("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE "
                           "'%stampede_marker%' AND query NOT LIKE '%pg_stat_statements%'"),
            "1");
}

TEST_F(DaemonTest, ClientReadCountsReachTheDaemonsStatistics) {
  StartDaemon();
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(Get("user", UserId(1)), TC_FOUND);
  ASSERT_EQ(Lookup("user", UserId(999)), TC_NOT_FOUND);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(Get("user", UserId(999)), TC_NOT_FOUND);
  tc_stats mine;
  ASSERT_EQ(tc_cache_stats(cache_, &mine), 0);
  EXPECT_EQ(mine.hits, 10u);
  EXPECT_EQ(mine.negative_hits, 5u);
  EXPECT_EQ(mine.misses, 2u);
  // Counts travel with the next request the handle sends (at most once a second).
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return std::chrono::steady_clock::now() - start > 1100ms; }));
  ASSERT_EQ(Lookup("user", UserId(2)), TC_FOUND);
  const std::string stats = ControlRequest(dir_.path() + "/ctl.sock", protocol::kStats);
  EXPECT_NE(stats.find("\"hits\":10,"), std::string::npos) << stats;
  EXPECT_NE(stats.find("\"negative_hits\":5,"), std::string::npos) << stats;
  EXPECT_NE(stats.find("\"misses\":3,"), std::string::npos) << stats;
  EXPECT_NE(stats.find("\"fills\":3,"), std::string::npos) << stats;
}

TEST_F(DaemonTest, StatisticsAreWrittenForTheTextfileCollector) {
  const std::string prom = dir_.path() + "/tenantcache.prom";
  config_ = FleetConfig(dir_.path(), Conninfo());
  config_.replace(config_.find("[daemon]\n"), 9,
                  "[daemon]\nprometheus_file = \"" + prom + "\"\nprometheus_interval = \"100ms\"\n");
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), config_);
  ASSERT_TRUE(daemon_->WaitReady()) << Tail(daemon_->Log());
  ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &cache_), 0);
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  ASSERT_TRUE(WaitFor([&] {
    try {
      return ReadFile(prom).find("tenantcache_fills 1\n") != std::string::npos;
    } catch (...) {
      return false;
    }
  })) << "no statistics file";
  const std::string text = ReadFile(prom);
  EXPECT_NE(text.find("# TYPE tenantcache_synced gauge\ntenantcache_synced 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE tenantcache_lookups counter\n"), std::string::npos) << text;
}

TEST_F(DaemonTest, TheCacheIsSyncedOnlyWhileEverySourceIs) {
  const std::string db2 = SharedCluster().CreateDatabase();
  PgConn admin2(SharedCluster().Conninfo(db2));
  admin2.Exec(ReadFile(SqlDir() + "/install.sql"));
  admin2.Exec(
      "CREATE TABLE roles (user_id uuid PRIMARY KEY, tenant_id uuid, role text);"
      "INSERT INTO roles VALUES ('" +
      UserId(1) + "', '" + TenantId(1) +
      "', 'admin');"
      "SELECT tenantcache.watch_table('roles', NULL, '{\"role\": \"user_id\"}');"
      "DROP ROLE IF EXISTS tc_roles_listener; CREATE ROLE tc_roles_listener LOGIN;"
      "GRANT USAGE ON SCHEMA tenantcache TO tc_roles_listener;"
      "GRANT SELECT ON ALL TABLES IN SCHEMA tenantcache TO tc_roles_listener;");
  StartDaemon(
      "", "",
      "[[source]]\nname = \"roles\"\nconninfo = \"" + SharedCluster().Conninfo(db2) +
          "\"\nlistener_conninfo = \"" + SharedCluster().Conninfo(db2, "tc_roles_listener") +
          "\"\nreconnect_min = \"20ms\"\nreconnect_max = \"200ms\"\n\n"
          "[[namespace]]\nname = \"role\"\nkind = \"uuid\"\nsource = \"roles\"\n"
          "query = \"SELECT tenant_id::text AS tenant_id, role FROM roles WHERE user_id = $1::uuid\"\n"
          "tenant_column = \"tenant_id\"\nfields = [\"role\"]\n");
  ASSERT_EQ(Lookup("role", UserId(1)), TC_FOUND);
  EXPECT_EQ(Field("role"), "admin");
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  admin2.Exec("UPDATE roles SET role = 'viewer'");
  ASSERT_TRUE(WaitFor([&] { return Get("role", UserId(1)) == TC_MISS; }));
  ASSERT_EQ(Lookup("role", UserId(1)), TC_FOUND);
  EXPECT_EQ(Field("role"), "viewer");
  // Losing the second source's listener makes the whole cache unavailable,
  // the first source's entries included.
  admin2.Exec("ALTER ROLE tc_roles_listener NOLOGIN");
  admin2.Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'tc_roles_listener'");
  ASSERT_TRUE(WaitFor([&] { return !Available(); }, 5s));
  EXPECT_EQ(Get("user", UserId(1)), TC_E_UNAVAILABLE);
  admin2.Exec("ALTER ROLE tc_roles_listener LOGIN");
  ASSERT_TRUE(WaitFor([&] { return Available(); }, 10s));
  EXPECT_EQ(ControlRequest(dir_.path() + "/ctl.sock", protocol::kStats).find("\"reconnects\":0,"),
            std::string::npos);
  EXPECT_EQ(Lookup("role", UserId(1)), TC_FOUND);
  daemon_.reset();
  admin2.Exec("DROP OWNED BY tc_roles_listener; DROP ROLE tc_roles_listener");
}

TEST_F(DaemonTest, AMissingSchemaKeepsTheCacheUnavailableUntilInstalled) {
  admin_->Exec(ReadFile(SqlDir() + "/uninstall.sql"));
  config_ = FleetConfig(dir_.path(), Conninfo());
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), config_);
  EXPECT_FALSE(daemon_->WaitReady(1500ms)) << "READY without the schema";
  ASSERT_TRUE(
      WaitFor([&] { return daemon_->Log().find("is sql/install.sql installed?") != std::string::npos; }));
  ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &cache_), 0);
  EXPECT_EQ(Get("user", UserId(1)), TC_E_UNAVAILABLE);
  admin_->Exec(ReadFile(SqlDir() + "/install.sql"));
  ASSERT_TRUE(daemon_->WaitReady(10s)) << Tail(daemon_->Log());
  EXPECT_EQ(Lookup("user", UserId(1)), TC_FOUND);
}

TEST_F(DaemonTest, SystemdWatchdogIsPinged) {
  config_ = FleetConfig(dir_.path(), Conninfo());
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), config_,
                                            std::map<std::string, std::string>{{"WATCHDOG_USEC", "200000"}});
  ASSERT_TRUE(daemon_->WaitReady()) << Tail(daemon_->Log());
  EXPECT_TRUE(daemon_->WaitNotify("WATCHDOG=1", 2s));
  EXPECT_TRUE(daemon_->WaitNotify("WATCHDOG=1", 2s));
}

// A change committed while a fill's query runs must not leave the old row cached.
TEST_F(DaemonTest, AFillOvertakenByAnInvalidationIsNotCached) {
  StartDaemon("", "",
              "[[namespace]]\nname = \"slow_user\"\nkind = \"uuid\"\n"
              "query = \"SELECT u.yacht_id::text AS tenant_id, u.role, pg_sleep(0.5)::text AS slow "
              "FROM fleet.user_accounts u WHERE u.id = $1::uuid\"\n"
              "tenant_column = \"tenant_id\"\nfields = [\"role\", \"slow\"]\n");
  admin_->Exec(
      "SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '{\"user\": \"id\", \"slow_user\": "
      "\"id\"}', ARRAY['yacht_id', 'role', 'active'])");
  const std::string key = UserId(4);
  int lookup_status = 0;
  std::string seen_role;
  std::thread filler([&] {
    tc_value v;
    lookup_status = tc_cache_lookup(cache_, Ns("slow_user"), key.data(), key.size(), 10000, &v);
    const char* role = nullptr;
    size_t len = 0;
    if (tc_value_get(&v, "role", &role, &len) == 0 && role != nullptr) seen_role.assign(role, len);
  });
  // The query has read the old row (its snapshot is taken when it starts)
  // and is sleeping: commit a change now.
  ASSERT_TRUE(WaitFor([&] {
    return admin_->Scalar(
               "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.5)%' AND "
               "state = 'active' AND pid <> pg_backend_pid()") == "1";
  }));
  admin_->Exec("UPDATE fleet.user_accounts SET role = 'owner' WHERE id = '" + key + "'");
  filler.join();
  ASSERT_EQ(lookup_status, TC_FOUND);
  // Whatever the lookup answered, the cache never holds the old role.
  const int rc = Get("slow_user", key);
  if (rc == TC_FOUND) {
    EXPECT_EQ(Field("role"), "owner") << "the stale fill was cached";
  }
  ASSERT_EQ(Lookup("slow_user", key), TC_FOUND);
  EXPECT_EQ(Field("role"), "owner");
}

// Disconnect the listener and keep it out while a change commits: clients
// must see unavailable meanwhile, and the change must not be served after.
void ListenerOutage(DaemonTest* t, PgConn& admin, bool log_enabled,
                    const std::function<int(const char*, const std::string&)>& get,
                    const std::function<int(const char*, const std::string&)>& lookup,
                    const std::function<bool()>& available,
                    const std::function<std::string(const char*)>& field) {
  ASSERT_EQ(lookup("user", UserId(1)), TC_FOUND);
  ASSERT_EQ(lookup("user", UserId(2)), TC_FOUND);
  admin.Exec("ALTER ROLE tc_listener NOLOGIN");
  admin.Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'tc_listener'");
  ASSERT_TRUE(WaitFor([&] { return !available(); })) << "readers were not failed closed";
  EXPECT_EQ(get("user", UserId(1)), TC_E_UNAVAILABLE);
  admin.Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + UserId(1) + "'");
  admin.Exec("ALTER ROLE tc_listener LOGIN");
  ASSERT_TRUE(WaitFor([&] { return available(); }, std::chrono::seconds(15))) << "never resynced";
  EXPECT_EQ(get("user", UserId(1)), TC_MISS) << "a change committed while disconnected was served";
  if (log_enabled) {
    EXPECT_EQ(get("user", UserId(2)), TC_FOUND) << "the log replay should not flush unrelated entries";
  } else {
    EXPECT_EQ(get("user", UserId(2)), TC_MISS) << "without the log the epoch must be bumped";
  }
  ASSERT_EQ(lookup("user", UserId(1)), TC_FOUND);
  EXPECT_EQ(field("role"), "guest");
  (void)t;
}

class ListenerFaultTest : public DaemonTest, public ::testing::WithParamInterface<bool> {};

TEST_P(ListenerFaultTest, AChangeCommittedWhileDisconnectedIsNotServedAfterResync) {
  const bool log_enabled = GetParam();
  admin_->Exec(
      "DROP ROLE IF EXISTS tc_listener; CREATE ROLE tc_listener LOGIN; "
      "GRANT USAGE ON SCHEMA tenantcache TO tc_listener; "
      "GRANT SELECT ON ALL TABLES IN SCHEMA tenantcache TO tc_listener;");
  if (!log_enabled) admin_->Exec("UPDATE tenantcache.settings SET log_enabled = false");
  StartDaemon("", "listener_conninfo = \"" + SharedCluster().Conninfo(db_, "tc_listener") + "\"\n");
  ListenerOutage(
      this, *admin_, log_enabled, [&](const char* ns, const std::string& k) { return Get(ns, k); },
      [&](const char* ns, const std::string& k) { return Lookup(ns, k); }, [&] { return Available(); },
      [&](const char* f) { return Field(f); });
  daemon_.reset();
  admin_->Exec("DROP OWNED BY tc_listener; DROP ROLE tc_listener");
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutTheLog, ListenerFaultTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "LogReplay" : "EpochBump";
                         });

TEST_F(DaemonTest, ADeafListenerIsDetectedByItsHeartbeat) {
  StartDaemon();
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  const std::string pid = admin_->Scalar(
      "SELECT pid FROM pg_stat_activity WHERE application_name = 'tenantcached listener main'");
  ASSERT_EQ(kill(std::stoi(pid), SIGSTOP), 0);
  const auto stopped = std::chrono::steady_clock::now();
  const bool detected = WaitFor([&] { return !Available(); }, std::chrono::seconds(10));
  const auto took = std::chrono::steady_clock::now() - stopped;
  kill(std::stoi(pid), SIGCONT);
  ASSERT_TRUE(detected) << "a stopped listener backend went unnoticed";
  EXPECT_LT(took, 3s) << "detected later than stale_after (2s) plus slack";
  ASSERT_TRUE(WaitFor([&] { return Available(); }, std::chrono::seconds(15)));
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
}

// An attack on the bound: a role with PUBLIC's defaults LISTENs,
// learns the daemon's heartbeat tokens, and while the daemon's listener lags
// (here: its backend stopped, so everything queues) commits the tokens it
// predicts will come next, then two million key messages that are slow to apply,
// ahead of a revoking UPDATE. Had a prediction matched a heartbeat the daemon sends meanwhile, the
// daemon would take everything before that heartbeat as applied while the
// revoke is still queued behind the burst, and serve the old role past
// stale_after. Every read is checked against the revoke's commit.
TEST_F(DaemonTest, ForgedHeartbeatsNeverStretchTheStalenessBound) {
  admin_->Exec("DO $$ BEGIN CREATE ROLE mallory LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  StartDaemon();
  const std::string user = UserId(1);
  ASSERT_EQ(Lookup("user", user), TC_FOUND);
  const std::string old_role = Field("role");
  ASSERT_NE(old_role, "guest");

  PgListener spy(SharedCluster().Conninfo(db_, "mallory"), "tenantcache");
  std::vector<std::string> tokens;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& p : spy.WaitFor(1, 1s))
          if (p.rfind("1 h ", 0) == 0) tokens.push_back(p.substr(4));
        return tokens.size() >= 3;
      },
      10s));
  // Every guess an attacker can make: the tokens seen, and what follows each
  // of them if it ends in a counter.
  std::vector<std::string> guesses = tokens;
  for (const auto& t : tokens) {
    size_t digits = t.size();
    while (digits > 0 && std::isdigit(static_cast<unsigned char>(t[digits - 1]))) --digits;
    if (digits == t.size() || t.size() - digits > 18) continue;
    const uint64_t n = std::stoull(t.substr(digits));
    for (uint64_t k = 1; k <= 100; ++k) guesses.push_back(t.substr(0, digits) + std::to_string(n + k));
  }
  // Shared heartbeats ("1 h 2 <snapshot> <signature>"): a seen signature
  // over a snapshot claiming every transaction far ahead, and one unsigned.
  bool shared = false;
  for (const auto& t : tokens) {
    if (t.rfind("2 ", 0) != 0) continue;
    shared = true;
    guesses.push_back("2 99999999999:99999999999: " + t.substr(t.rfind(' ') + 1));
    guesses.push_back("2 99999999999:99999999999: " + std::string(32, '0'));
  }
  EXPECT_TRUE(shared) << "the daemon shares its heartbeats (schema version 6)";
  std::string forged = "SELECT count(pg_notify('tenantcache', '1 h ' || g)) FROM unnest(ARRAY[";
  for (size_t i = 0; i < guesses.size(); ++i) forged += (i ? ",'" : "'") + guesses[i] + "'";
  forged +=
      "]) g; SELECT count(pg_notify('tenantcache', '1 k - user 00000000-0000-4000-8000-' || lpad(g::text, "
      "12, '0'))) FROM generate_series(1, 2000000) g";

  PgConn mallory(SharedCluster().Conninfo(db_, "mallory"));
  mallory.Exec("BEGIN");
  mallory.Exec(forged);  // queued at commit, in this order
  const std::string pid = admin_->Scalar(
      "SELECT pid FROM pg_stat_activity WHERE application_name = 'tenantcached listener main'");

  std::atomic<bool> stop{false};
  std::atomic<int64_t> revoked_at_ns{0}, last_old_ns{0};
  std::thread reader([&] {
    tc_cache* c = nullptr;
    if (tc_cache_open(daemon_->cache_path().c_str(), &c) != 0) return;
    tc_ns ns = 0;
    tc_namespace(c, "user", &ns);
    tc_value v;
    while (!stop) {
      const int64_t t0 = std::chrono::steady_clock::now().time_since_epoch().count();
      if (tc_cache_get(c, ns, user.data(), user.size(), &v) != TC_FOUND) continue;
      const char* text = nullptr;
      size_t len = 0;
      if (tc_value_get(&v, "role", &text, &len) == 0 && text != nullptr &&
          std::string(text, len) == old_role && revoked_at_ns != 0 && t0 > revoked_at_ns)
        last_old_ns = t0;
    }
    tc_cache_close(c);
  });
  ASSERT_EQ(kill(std::stoi(pid), SIGSTOP), 0);
  const auto stopped = std::chrono::steady_clock::now();
  mallory.Exec("COMMIT");
  admin_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + user + "'");
  revoked_at_ns = std::chrono::steady_clock::now().time_since_epoch().count();
  // Resume before a deaf listener would be noticed (stale_after 2s - 200ms),
  // while the daemon has sent heartbeats the predictions may match.
  std::this_thread::sleep_until(stopped + 1600ms);  // the fault's length, not a synchronisation
  kill(std::stoi(pid), SIGCONT);
  const bool applied =
      WaitFor([&] { return Lookup("user", user, 1000) == TC_FOUND && Field("role") == "guest"; }, 30s);
  stop = true;
  reader.join();
  ASSERT_TRUE(applied) << "the revoke never reached the cache";
  EXPECT_GE(std::stoull(DaemonStat("heartbeats_rejected")), 2u);
  const auto served_past = std::chrono::nanoseconds(last_old_ns - revoked_at_ns);
  EXPECT_TRUE(last_old_ns == 0 || served_past < 2s + 20ms)
      << "the revoked role was served "
      << std::chrono::duration_cast<std::chrono::milliseconds>(served_past).count()
      << " ms after its commit; stale_after is 2s";
}

TEST_F(DaemonTest, PostgresRestartIsSurvived) {
  StartDaemon();
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  SharedCluster().Restart();
  admin_ = std::make_unique<PgConn>(Conninfo());
  ASSERT_TRUE(WaitFor([&] { return Available(); }, std::chrono::seconds(20)));
  // The log replay proves nothing changed while the server was away.
  EXPECT_EQ(Get("user", UserId(1)), TC_FOUND);
  EXPECT_GE(std::stoi(admin_->Scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                                     "'tenantcached listener%'")),
            1);
  admin_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + UserId(1) + "'");
  ASSERT_TRUE(WaitFor([&] { return Get("user", UserId(1)) == TC_MISS; }));
}

TEST_F(DaemonTest, AKilledDaemonFailsClosedAndARestartedOneIsAttachedAgain) {
  StartDaemon();
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  daemon_->Signal(SIGKILL);
  ASSERT_TRUE(daemon_->Wait().has_value());
  const auto killed = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return Get("user", UserId(1)) == TC_E_UNAVAILABLE; }, std::chrono::seconds(10)));
  EXPECT_LT(std::chrono::steady_clock::now() - killed, 2500ms) << "served past the fail-closed bound (2s)";
  EXPECT_EQ(Lookup("user", UserId(2), 500), TC_E_UNAVAILABLE);
  // A new daemon reuses the file: the same handle works again.
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), config_);
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  EXPECT_EQ(Get("user", UserId(1)), TC_MISS) << "a restarted daemon must not trust old entries";
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  EXPECT_EQ(Get("user", UserId(1)), TC_FOUND);
}

TEST_F(DaemonTest, MalformedNotificationsAreCountedAndFlushConservatively) {
  StartDaemon();
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  const std::vector<std::string> junk = {"garbage",    "2 k 1 user x", "1 k 1", "1 q 1 x",
                                         "1 k x user", "1 k 1 BAD x",  ""};
  for (const std::string& payload : junk) admin_->Exec("SELECT pg_notify('tenantcache', '" + payload + "')");
  // Each is counted; wait for the last, since they may arrive over several reads.
  ASSERT_TRUE(
      WaitFor([&] { return std::stoull(DaemonStats(*daemon_)["malformed_notifications"]) == junk.size(); }));
  EXPECT_EQ(Get("user", UserId(1)), TC_MISS);
  // Still serving; unknown namespaces and invalid keys are no reason to flush.
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  admin_->Exec(
      "SELECT pg_notify('tenantcache', '1 k - unknown_ns x'), pg_notify('tenantcache', '1 k - user "
      "not-a-uuid')");
  admin_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + UserId(2) + "'");
  ASSERT_EQ(Lookup("user", UserId(3)), TC_FOUND);
  admin_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + UserId(3) + "'");
  ASSERT_TRUE(WaitFor([&] { return Get("user", UserId(3)) == TC_MISS; }));
  EXPECT_EQ(Get("user", UserId(1)), TC_FOUND);
  EXPECT_NE(daemon_->Log().find("malformed notification"), std::string::npos);
}

// Any role can NOTIFY on the channel. What it sends may cost misses, never
// fresh data, and never the log: a flood of flushes and of malformed messages
// is logged about once a second with a count, and a newline in a payload
// cannot forge a line.
TEST_F(DaemonTest, NotificationFloodsCannotFloodOrForgeTheLog) {
  admin_->Exec("DO $$ BEGIN CREATE ROLE mallory LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  StartDaemon();
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  PgConn mallory(SharedCluster().Conninfo(db_, "mallory"));
  const auto started = std::chrono::steady_clock::now();
  mallory.Exec(
      "SELECT count(pg_notify('tenantcache', '1 f ' || g)) FROM generate_series(1, 20000) g;"
      "SELECT pg_notify('tenantcache', E'junk\nFORGED: cache synced, all is well\n\x1b[2J')");
  ASSERT_TRUE(WaitFor([&] { return std::stoull(DaemonStats(*daemon_)["flushes"]) >= 20001; }, 30s));
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started);
  const std::string log = daemon_->Log();
  size_t flush_lines = 0;
  for (size_t p = log.find("cache flushed"); p != std::string::npos; p = log.find("cache flushed", p + 1))
    ++flush_lines;
  EXPECT_LE(flush_lines, static_cast<size_t>(seconds.count()) + 3) << "over " << seconds.count() << " s";
  // The next line let through counts what was suppressed.
  EXPECT_TRUE(WaitFor(
      [&] {
        mallory.Exec("SELECT pg_notify('tenantcache', '1 f -')");
        return daemon_->Log().find("not logged)") != std::string::npos;
      },
      5s))
      << "suppressed lines must be counted";
  EXPECT_EQ(log.find("\nFORGED"), std::string::npos) << "a payload wrote a line of its own";
  EXPECT_EQ(log.find('\x1b'), std::string::npos) << "a payload wrote a terminal escape";
  // Still current: a real change is applied and served.
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  admin_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + UserId(1) + "'");
  ASSERT_TRUE(WaitFor([&] { return Lookup("user", UserId(1)) == TC_FOUND && Field("role") == "guest"; }));
}

TEST_F(DaemonTest, MalformedAndOversizedControlRequestsCloseOnlyThatConnection) {
  StartDaemon();
  const std::string sock = dir_.path() + "/ctl.sock";
  std::vector<std::string> bad;
  bad.push_back(std::string("\xff\xff\xff\x7f", 4) + std::string(64, 'x'));  // huge length
  bad.push_back(std::string("\x02\x00\x00\x00", 4) + "xx");                  // shorter than a header
  std::string wrong_version;
  protocol::AppendFrame(&wrong_version, protocol::kStats, 0, 1, "");
  wrong_version[4] = 9;
  bad.push_back(wrong_version);
  std::string unknown_op;
  protocol::AppendFrame(&unknown_op, 77, 0, 1, "");
  bad.push_back(unknown_op);
  std::string bad_payload;
  protocol::AppendFrame(&bad_payload, protocol::kLookup, 0, 1, "\x10short");
  bad.push_back(bad_payload);
  std::string oversized;
  protocol::AppendFrame(&oversized, protocol::kLookup, 0, 1, std::string(5000, 'k'));
  bad.push_back(oversized);
  for (const auto& b : bad) {
    const int fd = ConnectControl(sock);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(send(fd, b.data(), b.size(), MSG_NOSIGNAL), static_cast<ssize_t>(b.size()));
    EXPECT_TRUE(ClosedByPeer(fd));
    close(fd);
  }
  // A client that connects and sends half a frame does not stall anyone.
  const int idle = ConnectControl(sock);
  ASSERT_EQ(send(idle, "\x20\x00", 2, MSG_NOSIGNAL), 2);
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  close(idle);
  EXPECT_EQ(Lookup("user", "not a uuid"), TC_E_INVALID_KEY);
}

TEST_F(DaemonTest, QueryErrorsAndTimeoutsBecomeStatuses) {
  StartDaemon("", "query_timeout = \"300ms\"\n",
              "[[namespace]]\nname = \"broken\"\nkind = \"text\"\n"
              "query = \"SELECT 'x' AS tenant_id, (1 / (length($1) - length($1)))::text AS v\"\n"
              "tenant_column = \"tenant_id\"\nfields = [\"v\"]\n\n"
              "[[namespace]]\nname = \"slow\"\nkind = \"text\"\n"
              "query = \"SELECT 'x' AS tenant_id, pg_sleep(2)::text AS v WHERE $1 <> ''\"\n"
              "tenant_column = \"tenant_id\"\nfields = [\"v\"]\n");
  EXPECT_EQ(Lookup("broken", "k"), TC_E_DAEMON);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(Lookup("slow", "k", 5000), TC_E_TIMEOUT);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_EQ(Lookup("slow", "k2", 100), TC_E_TIMEOUT) << "the client's own timeout";
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND) << "the daemon stays usable";
}

TEST_F(DaemonTest, BrokenConfigFilesAreRefusedWithFileLineAndKey) {
  const std::string good = FleetConfig(dir_.path(), Conninfo());
  const std::string path = dir_.path() + "/bad.toml";
  struct Case {
    std::string config, want;
  };
  const std::vector<Case> cases = {
      {good + "\n[cache]\n", "syntax error"},
      {"[cache]\ncapacity = \"many\"\n" + good.substr(good.find("[control]")),
       "cache.capacity: must be an integer"},
      {good +
           "\n[[namespace]]\nname = \"user\"\nkind = \"uuid\"\nquery = \"SELECT $1\"\ntenant_column = \"t\"\n"
           "fields = []\n",
       "is defined twice"},
      {good +
           "\n[[namespace]]\nname = \"n2\"\nkind = \"guid\"\nquery = \"SELECT $1\"\ntenant_column = \"t\"\n"
           "fields = []\n",
       "is not a key kind"},
      {good + "\n[[namespace]]\nname = \"n3\"\nkind = \"uuid\"\nquery = \"SELECT 1\"\ntenant_column = \"t\"\n"
              "fields = []\n",
       "must use $1"},
      {good + "\n[[namespace]]\nname = \"n4\"\nkind = \"uuid\"\nsource = \"nope\"\nquery = \"SELECT $1\"\n"
              "tenant_column = \"t\"\nfields = []\n",
       "no [[source]] is named"},
      {good + "\n[extra]\nx = 1\n", "unknown table"},
      {"source = []\nnamespace = []\n[cache]\npath = \"/dev/shm/x\"\n", "source: at least one [[source]]"},
      {"[cache]\npath = '/dev/shm/\x88'\n" + good.substr(good.find("[control]")), ":2: not valid UTF-8"},
      {"[cache]\nttl = \"forever\"\n" + good.substr(good.find("[control]")), "is not a duration"},
      {"[cache]\ncolour = \"blue\"\n" + good.substr(good.find("[control]")), "cache.colour: unknown key"},
  };
  for (const auto& c : cases) {
    std::ofstream(path, std::ios::trunc) << c.config;
    const auto r = RunDaemonCommand("--check-config --config " + path);
    EXPECT_EQ(r.exit_code, 2) << c.want;
    EXPECT_NE(r.output.find(c.want), std::string::npos) << "wanted \"" << c.want << "\" in: " << r.output;
    EXPECT_NE(r.output.find(path), std::string::npos) << r.output;
  }
  // The line is named: line 2 of this file holds the bad value.
  std::ofstream(path, std::ios::trunc) << "[cache]\ncapacity = -5\n" << good.substr(good.find("[control]"));
  const auto r = RunDaemonCommand("--check-config --config " + path);
  EXPECT_NE(r.output.find(path + ":2: cache.capacity"), std::string::npos) << r.output;
  // A good file passes; a missing one fails; starting on a bad one exits non-zero.
  std::ofstream(path, std::ios::trunc) << good;
  EXPECT_EQ(RunDaemonCommand("--check-config --config " + path).exit_code, 0);
  EXPECT_EQ(RunDaemonCommand("--check-config --config " + dir_.path() + "/absent.toml").exit_code, 2);
  std::ofstream(path, std::ios::trunc) << good + "\n[cache]\n";
  EXPECT_EQ(RunDaemonCommand("--config " + path).exit_code, 2);
}

TEST_F(DaemonTest, SighupReloadsAGoodConfigAndKeepsTheOldOneOnABadOne) {
  StartDaemon();
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  // A bad file: the daemon logs why and keeps running on the old config.
  daemon_->Rewrite(config_ + "\n[cache]\n");
  daemon_->Signal(SIGHUP);
  ASSERT_TRUE(daemon_->WaitNotify("READY=1", 10s));
  ASSERT_TRUE(WaitFor([&] { return daemon_->Log().find("reload failed") != std::string::npos; }));
  EXPECT_EQ(Lookup("user", UserId(2)), TC_FOUND);
  // A good one: a shorter TTL applies to new fills.
  std::string shorter = config_;
  shorter.replace(shorter.find("heartbeat_interval"), 0, "ttl = \"200ms\"\n");
  daemon_->Rewrite(shorter);
  daemon_->Signal(SIGHUP);
  ASSERT_TRUE(daemon_->WaitNotify("RELOADING=1", 10s));
  ASSERT_TRUE(daemon_->WaitNotify("READY=1", 10s));
  ASSERT_EQ(Lookup("user", UserId(3)), TC_FOUND);
  ASSERT_TRUE(WaitFor([&] { return Get("user", UserId(3)) == TC_MISS; }, 5s)) << "the new TTL did not apply";
  EXPECT_EQ(Get("user", UserId(1)), TC_FOUND) << "entries filled under the old TTL keep it";
}

TEST_F(DaemonTest, ANotifySocketNobodyReadsNeverBlocksTheDaemon) {
  // The kernel queues 10 datagrams per unix socket by default; each reload
  // sends two (RELOADING, READY). This test never reads its notify socket
  // after READY (found by the soak: a blocked sd_notify froze the loop).
  StartDaemon();
  auto reloads = [&] {
    const std::string log = daemon_->Log();
    size_t n = 0;
    for (size_t at = 0; (at = log.find("reloaded ", at)) != std::string::npos; ++at) ++n;
    return n;
  };
  for (size_t i = 1; i <= 15; ++i) {
    daemon_->Signal(SIGHUP);
    ASSERT_TRUE(WaitFor([&] { return reloads() >= i; })) << "reload " << i << " was not handled";
  }
  EXPECT_EQ(Lookup("user", UserId(3)), TC_FOUND);
  EXPECT_FALSE(DaemonStats(*daemon_).empty());
  // SIGTERM still ends it, with exit 0, though its last messages cannot be sent.
}

TEST_F(DaemonTest, SigtermStopsCleanlyAndMarksTheCacheUnavailable) {
  StartDaemon();
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  daemon_->Signal(SIGTERM);
  EXPECT_TRUE(daemon_->WaitNotify("STOPPING=1", 10s));
  const auto status = daemon_->Wait();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << daemon_->Log();
  EXPECT_EQ(Get("user", UserId(1)), TC_E_UNAVAILABLE) << "readers must not wait for the heartbeat to age";
  EXPECT_NE(daemon_->Log().find("stopped"), std::string::npos) << "the loop did not close cleanly";
  EXPECT_EQ(daemon_->Log().find("password"), std::string::npos);
}

TEST_F(DaemonTest, LookupsWorkInAForkedChildWithItsOwnConnection) {
  StartDaemon();
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);  // the parent now holds a pooled connection
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    tc_value v;
    const std::string k = UserId(2);
    tc_ns ns;
    tc_namespace(cache_, "user", &ns);
    const int a = tc_cache_lookup(cache_, ns, k.data(), k.size(), 5000, &v);
    const int b = tc_cache_get(cache_, ns, k.data(), k.size(), &v);
    _exit(a == TC_FOUND && b == TC_FOUND ? 0 : 1);
  }
  ASSERT_EQ(Lookup("user", UserId(3)), TC_FOUND) << "the parent's connection must be unaffected";
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(Get("user", UserId(2)), TC_FOUND) << "the child's fill is shared with the parent";
  ASSERT_EQ(Lookup("user", UserId(4)), TC_FOUND);
}

TEST_F(DaemonTest, PeersOutsideTheAllowedGroupsAreRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another user";
  config_ = FleetConfig(dir_.path(), Conninfo());
  config_.replace(config_.find("[control]\n"), 10,
                  "[control]\nmode = \"0666\"\nallowed_groups = [\"root\"]\n");
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), config_);
  ASSERT_TRUE(daemon_->WaitReady()) << Tail(daemon_->Log());
  chmod(dir_.path().c_str(), 0755);
  const std::string sock = dir_.path() + "/ctl.sock";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Dropping privileges drops root's supplementary groups too: the daemon
    // sees the peer's real groups (SO_PEERGROUPS).
    if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
    _exit(ControlRequest(sock, protocol::kStats).empty() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "nobody got an answer";
  EXPECT_FALSE(ControlRequest(sock, protocol::kStats).empty()) << "root was refused";
  EXPECT_TRUE(WaitFor([&] { return daemon_->Log().find("not in allowed_groups") != std::string::npos; }));
}

// ---- overload ----------------------------------------------------------------

// How far the daemon's resident memory may grow while it is overloaded.
constexpr size_t kRssGrowthKb = 64 * 1024;

// Under AddressSanitizer freed memory waits in a quarantine (256 MiB by
// default) before it is reused, which a flood of small allocations fills:
// the daemons of the overload tests get a small one, so that their resident
// memory shows what they hold. (No effect on builds without ASan.)
class SmallAsanQuarantine {
 public:
  SmallAsanQuarantine() {
    if (const char* old = std::getenv("ASAN_OPTIONS")) saved_ = old;
    setenv("ASAN_OPTIONS", (saved_ + (saved_.empty() ? "" : ":") + "quarantine_size_mb=8").c_str(), 1);
  }
  ~SmallAsanQuarantine() {
    if (saved_.empty())
      unsetenv("ASAN_OPTIONS");
    else
      setenv("ASAN_OPTIONS", saved_.c_str(), 1);
  }
  SmallAsanQuarantine(const SmallAsanQuarantine&) = delete;
  SmallAsanQuarantine& operator=(const SmallAsanQuarantine&) = delete;

 private:
  std::string saved_;
};

// Watches the daemon while a test overloads it: how long the control socket
// takes to answer a stats request (its event loop's responsiveness) and the
// daemon's resident memory, sampled every 50 ms from another thread.
class DaemonWatch {
 public:
  explicit DaemonWatch(const DaemonProcess& d)
      : socket_(d.control_socket()), pid_(d.pid()), thread_([this] { Run(); }) {}
  ~DaemonWatch() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::chrono::milliseconds slowest_answer() const { return slowest_; }
  size_t max_rss_kb() const { return max_rss_kb_; }
  int unanswered() const { return unanswered_; }
  int answered() const { return answered_; }

 private:
  void Run() {
    while (!stop_) {
      const auto t0 = std::chrono::steady_clock::now();
      const std::string json = ControlRequest(socket_, protocol::kStats);
      const auto took =
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
      if (json.empty()) {
        ++unanswered_;
      } else {
        ++answered_;
        slowest_ = std::max(slowest_, took);
      }
      max_rss_kb_ = std::max(max_rss_kb_, ResidentKb(pid_));
      std::this_thread::sleep_for(50ms);  // sampling period
    }
  }
  std::string socket_;
  pid_t pid_;
  std::atomic<bool> stop_{false};
  std::chrono::milliseconds slowest_{0};
  size_t max_rss_kb_ = 0;
  int unanswered_ = 0, answered_ = 0;
  std::thread thread_;
};

// Reader threads looking users up until stopped; every status they get.
class Readers {
 public:
  Readers(tc_cache* cache, int users, int threads) {
    tc_ns ns = 0;
    tc_namespace(cache, "user", &ns);
    for (int t = 0; t < threads; ++t)
      threads_.emplace_back([=, this] {
        tc_value v;
        for (int i = t; !stop_; ++i) {
          const std::string k = UserId(1 + i % users);
          const int st = tc_cache_lookup(cache, ns, k.data(), k.size(), 2000, &v);
          std::lock_guard lock(mu_);
          ++statuses_[st];
        }
      });
  }
  ~Readers() { Stop(); }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  std::map<int, uint64_t> statuses() {
    std::lock_guard lock(mu_);
    return statuses_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<int, uint64_t> statuses_;
  std::vector<std::thread> threads_;
};

TEST_F(DaemonTest, AMillionNotificationsWhileReadersRunLeaveItResponsiveAndBounded) {
  const SmallAsanQuarantine small_quarantine;
  StartDaemon();
  for (int n = 1; n <= 50; ++n) ASSERT_EQ(Lookup("user", UserId(n)), TC_FOUND);
  const size_t rss_before = ResidentKb(daemon_->pid());
  const uint64_t notified_before = std::stoull(DaemonStats(*daemon_)["notifications"]);
  DaemonWatch watch(*daemon_);
  Readers readers(cache_, 50, 2);
  // 1M key messages in 10 transactions: one in 100 names a cached user, the
  // rest keys nobody cached (as a bulk job touching other rows would).
  for (int batch = 0; batch < 10; ++batch)
    admin_->Exec(
        "SELECT count(pg_notify('tenantcache', '1 k ' || g || ' user ' || "
        "fleet.user_id(CASE WHEN g % 100 = 0 THEN 1 + g % 50 ELSE 1000 + g END)::text)) "
        "FROM generate_series(" +
        std::to_string(batch * 100000 + 1) + ", " + std::to_string((batch + 1) * 100000) + ") g");
  // Every message is applied (or, had the listener been declared deaf and
  // reconnected, covered by the flush that follows a reconnect).
  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = DaemonStats(*daemon_);
        return st["synced"] == "true" &&
               (std::stoull(st["notifications"]) >= notified_before + 1000000 || st["reconnects"] != "0");
      },
      120s))
      << Tail(daemon_->Log());
  readers.Stop();
  watch.Stop();
  const auto statuses = readers.statuses();
  std::string seen;
  for (const auto& [st, count] : statuses)
    seen += std::string(tc_strerror(st)) + "=" + std::to_string(count) + " ";
  for (const auto& [st, count] : statuses) EXPECT_TRUE(st == TC_FOUND || st == TC_E_UNAVAILABLE) << seen;
  EXPECT_GT(statuses.count(TC_FOUND) ? statuses.at(TC_FOUND) : 0, 0u) << seen;
  EXPECT_EQ(watch.unanswered(), 0);
  EXPECT_GT(watch.answered(), 0);
  EXPECT_LT(watch.slowest_answer(), 2s) << "the control socket stalled during the flood";
  EXPECT_LT(watch.max_rss_kb(), rss_before + kRssGrowthKb) << "resident memory grew with the flood";
  std::printf("1M notifications: statuses %s; slowest stats answer %lld ms; RSS %zu -> max %zu KiB\n",
              seen.c_str(), static_cast<long long>(watch.slowest_answer().count()), rss_before,
              watch.max_rss_kb());
  // Readers are served again once a heartbeat behind the backlog proves the
  // cache current (a slow build may still be catching up here).
  EXPECT_TRUE(WaitFor([&] { return Lookup("user", UserId(1)) == TC_FOUND; }, 30s));
}

TEST_F(DaemonTest, AFloodOfMissesFromManyClientsIsAnsweredBusyNotQueuedWithoutBound) {
  const SmallAsanQuarantine small_quarantine;
  StartDaemon("", "loaders = 1\nqueue_bound = 20\n",
              "[[namespace]]\nname = \"slowish\"\nkind = \"text\"\n"
              "query = \"SELECT 'x' AS tenant_id, $1 || pg_sleep(0.02)::text AS v\"\n"
              "tenant_column = \"tenant_id\"\nfields = [\"v\"]\n");
  const size_t rss_before = ResidentKb(daemon_->pid());
  DaemonWatch watch(*daemon_);
  tc_ns ns = Ns("slowish");
  std::mutex mu;
  std::map<int, int> statuses;
  std::chrono::milliseconds slowest{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 200; ++c)
    clients.emplace_back([&, c] {
      tc_value v;
      for (int i = 0; i < 5; ++i) {
        const std::string key = "k" + std::to_string(c) + "-" + std::to_string(i);  // every miss distinct
        const auto t0 = std::chrono::steady_clock::now();
        const int st = tc_cache_lookup(cache_, ns, key.data(), key.size(), 3000, &v);
        const auto took =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
        std::lock_guard lock(mu);
        ++statuses[st];
        slowest = std::max(slowest, took);
      }
    });
  for (auto& t : clients) t.join();
  watch.Stop();
  std::string seen;
  for (const auto& [st, count] : statuses)
    seen += std::string(tc_strerror(st)) + "=" + std::to_string(count) + " ";
  for (const auto& [st, count] : statuses) EXPECT_TRUE(st == TC_FOUND || st == TC_E_BUSY) << seen;
  EXPECT_GT(statuses[TC_E_BUSY], 0) << seen;
  EXPECT_GT(statuses[TC_FOUND], 0) << seen;
  EXPECT_LT(slowest, 3500ms) << "a lookup outlived its timeout";
  EXPECT_EQ(watch.unanswered(), 0);
  EXPECT_LT(watch.slowest_answer(), 2s);
  EXPECT_LT(watch.max_rss_kb(), rss_before + kRssGrowthKb);
  auto st = DaemonStats(*daemon_);
  EXPECT_EQ(std::stoull(st["busy"]), static_cast<uint64_t>(statuses[TC_E_BUSY]));
  std::printf("1000 misses from 200 clients, queue_bound 20: %s; slowest stats answer %lld ms\n",
              seen.c_str(), static_cast<long long>(watch.slowest_answer().count()));
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND) << "the daemon stays usable";
}

TEST_F(DaemonTest, ManyFailingAndTimingOutQueriesGetClearStatusesInTime) {
  const SmallAsanQuarantine small_quarantine;
  StartDaemon("", "loaders = 2\nquery_timeout = \"200ms\"\n",
              "[[namespace]]\nname = \"broken\"\nkind = \"text\"\n"
              "query = \"SELECT 'x' AS tenant_id, (1 / (length($1) - length($1)))::text AS v\"\n"
              "tenant_column = \"tenant_id\"\nfields = [\"v\"]\n\n"
              "[[namespace]]\nname = \"slow\"\nkind = \"text\"\n"
              "query = \"SELECT 'x' AS tenant_id, pg_sleep(5)::text AS v WHERE $1 <> ''\"\n"
              "tenant_column = \"tenant_id\"\nfields = [\"v\"]\n");
  const size_t rss_before = ResidentKb(daemon_->pid());
  DaemonWatch watch(*daemon_);
  std::mutex mu;
  std::map<std::pair<std::string, int>, int> statuses;
  std::chrono::milliseconds slowest{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 60; ++c)
    clients.emplace_back([&, c] {
      const char* name = c % 2 == 0 ? "broken" : "slow";
      tc_ns ns = 0;
      tc_namespace(cache_, name, &ns);
      tc_value v;
      for (int i = 0; i < 3; ++i) {
        const std::string key = "k" + std::to_string(c) + "-" + std::to_string(i);
        const auto t0 = std::chrono::steady_clock::now();
        const int st = tc_cache_lookup(cache_, ns, key.data(), key.size(), 1500, &v);
        const auto took =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
        std::lock_guard lock(mu);
        ++statuses[{name, st}];
        slowest = std::max(slowest, took);
      }
    });
  for (auto& t : clients) t.join();
  watch.Stop();
  std::string seen;
  for (const auto& [k, count] : statuses)
    seen += k.first + ":" + tc_strerror(k.second) + "=" + std::to_string(count) + " ";
  // A failing query is answered with the error, unless the lookup's own
  // timeout ran out first while it queued behind the slow ones; nothing is
  // ever answered as found or absent.
  for (const auto& [k, count] : statuses) {
    if (k.first == "broken")
      EXPECT_TRUE(k.second == TC_E_DAEMON || k.second == TC_E_TIMEOUT) << seen;
    else
      EXPECT_TRUE(k.second == TC_E_TIMEOUT || k.second == TC_E_BUSY) << seen;
  }
  EXPECT_GT((statuses[{"broken", TC_E_DAEMON}]), 0) << seen;
  EXPECT_LT(slowest, 2000ms) << "a lookup outlived its timeout";
  EXPECT_EQ(watch.unanswered(), 0);
  EXPECT_LT(watch.slowest_answer(), 2s);
  EXPECT_LT(watch.max_rss_kb(), rss_before + kRssGrowthKb);
  std::printf("90 failing and 90 timing-out lookups: %s\n", seen.c_str());
  EXPECT_TRUE(WaitFor([&] { return Lookup("user", UserId(1)) == TC_FOUND; }, 20s)) << "the daemon recovers";
}

}  // namespace
}  // namespace tenantcache::test
