// Loaders behind a real transaction-pooling PgBouncer (the Debian package,
// started by tests/support/pgbouncer.*) in front of the harness's
// PostgreSQL, with the listener connected directly: the topology the README
// allows. PgBouncer keeps only two server connections per database here, so
// the daemon's four loaders, its query check and the tests' own clients share
// them, as an application and tenantcached do in production.
#include "support/pgbouncer.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "support/daemon_process.h"
#include "support/fleet_test.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::test {
namespace {

using namespace std::chrono_literals;

constexpr int kProcesses = 4;
constexpr int kLookupsEach = 10;

class PgBouncerTest : public FleetTest {
 protected:
  void SetUp() override {
    FleetTest::SetUp();
    bouncer_ = std::make_unique<PgBouncer>(SharedCluster());
  }

  void TearDown() override {
    if (HasFailure() && bouncer_)
      std::fprintf(stderr, "--- pgbouncer log ---\n%s\n", Tail(bouncer_->Log()).c_str());
    FleetTest::TearDown();  // the daemon stops before PgBouncer does
    bouncer_.reset();
  }

  std::string Pooled() const { return bouncer_->Conninfo(db_); }

  // The fleet config with its loaders behind PgBouncer; the listener direct
  // unless `listener` names another conninfo.
  std::string Config(const std::string& listener, int loaders = 4) const {
    return FleetConfig(dir_.path(), Pooled(), "",
                       "loaders = " + std::to_string(loaders) +
                           "\nquery_timeout = \"3s\"\nlistener_conninfo = \"" + listener + "\"\n");
  }

  void StartDaemon(const std::map<std::string, std::string>& env = {}, int loaders = 4) {
    StartDaemonOn(Config(Conninfo(), loaders), env);
  }

  // What PostgreSQL itself says user n resolves to: "<tenant id> <role>",
  // or "none" when the user namespace's query finds no row.
  std::string Expected(int n) {
    return admin_->Scalar(
        "SELECT coalesce((SELECT r.id::text || ' ' || u.role FROM fleet.user_accounts u JOIN "
        "fleet.fleet_registry r ON r.id = u.yacht_id WHERE u.id = '" +
        UserId(n) + "' AND u.active), 'none')");
  }

  // The reproduction: kProcesses worker processes, released at once,
  // each look up kLookupsEach users that are not cached (users first..) and
  // compare every answer with PostgreSQL's. Returns every wrong answer.
  std::vector<std::string> ColdLookupsFromProcesses(int first) {
    std::map<int, std::string> expected;
    for (int n = first; n < first + kProcesses * kLookupsEach; ++n) expected[n] = Expected(n);
    int go[2], report[2];
    if (pipe(go) != 0 || pipe(report) != 0) return {"pipe failed"};
    const std::string cache_path = daemon_->cache_path();
    std::vector<pid_t> children;
    for (int p = 0; p < kProcesses; ++p) {
      const pid_t pid = fork();
      if (pid == 0) {
        close(go[1]);
        close(report[0]);
        char b;
        (void)!read(go[0], &b, 1);  // returns when the parent closes its end: all start together
        tc_cache* c = nullptr;
        std::string out;
        if (tc_cache_open(cache_path.c_str(), &c) != 0) out += "process cannot open the cache\n";
        tc_ns ns = 0;
        if (c != nullptr && tc_namespace(c, "user", &ns) != 0) out += "no namespace user\n";
        for (int k = 0; c != nullptr && k < kLookupsEach; ++k) {
          const int n = first + p * kLookupsEach + k;
          const std::string key = UserId(n);
          tc_value v;
          const int rc = tc_cache_lookup(c, ns, key.data(), key.size(), 5000, &v);
          std::string got;
          if (rc == TC_NOT_FOUND) {
            got = "none";
          } else if (rc == TC_FOUND) {
            got = std::string(tc_value_tenant(&v, nullptr)) + " " + FieldOf(v, "role");
          } else {
            got = std::string(tc_strerror(rc)) + ": " + tc_last_error_detail();
          }
          if (got != expected[n])
            out += "user " + std::to_string(n) + ": got " + got + ", expected " + expected[n] + "\n";
        }
        if (c != nullptr) tc_cache_close(c);
        (void)!write(report[1], out.data(), out.size());
        _exit(0);
      }
      children.push_back(pid);
    }
    close(go[0]);
    close(report[1]);
    close(go[1]);
    std::string all;
    char buf[4096];
    for (ssize_t r; (r = read(report[0], buf, sizeof buf)) > 0;) all.append(buf, static_cast<size_t>(r));
    close(report[0]);
    std::vector<std::string> wrong;
    for (const pid_t pid : children) {
      int status = 0;
      waitpid(pid, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        wrong.push_back("a lookup process died: " + std::to_string(status));
    }
    for (size_t at = 0, end; (end = all.find('\n', at)) != std::string::npos; at = end + 1)
      wrong.push_back(all.substr(at, end - at));
    return wrong;
  }

  // What a client of PgBouncer finds on each of its server connections,
  // holding them all at once (one transaction each): "<pid> timeout=<...>
  // prepared=<n> listening=<n>".
  std::vector<std::string> ServerConnectionState() {
    std::vector<std::unique_ptr<PgConn>> clients;
    std::vector<std::string> state;
    for (int i = 0; i < 2; ++i) {
      clients.push_back(std::make_unique<PgConn>(Pooled()));
      clients.back()->Exec("BEGIN");
      state.push_back(clients.back()->Scalar(
          "SELECT pg_backend_pid() || ' timeout=' || current_setting('statement_timeout') || ' prepared=' || "
          "(SELECT count(*) FROM pg_prepared_statements) || ' listening=' || "
          "(SELECT count(*) FROM pg_listening_channels())"));
    }
    for (auto& c : clients) c->Exec("COMMIT");
    return state;
  }

  std::unique_ptr<PgBouncer> bouncer_;
};

std::string Joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

TEST_F(PgBouncerTest, ColdLookupsFromFourProcessesAllSucceedAndAreRight) {
  StartDaemon();
  EXPECT_TRUE(WaitFor([&] { return LogHas("the loaders reach PostgreSQL through a pooler"); }))
      << daemon_->Log();
  const auto wrong = ColdLookupsFromProcesses(1);
  EXPECT_TRUE(wrong.empty()) << Joined(wrong);
  const auto stats = DaemonStats(*daemon_);
  EXPECT_EQ(stats.at("fill_errors"), "0");
  EXPECT_EQ(stats.at("broken_namespaces"), "0");
  EXPECT_FALSE(LogHas("prepared statement")) << daemon_->Log();
  // Filled: the same keys are now hits in shared memory.
  ASSERT_EQ(Get("user", UserId(1)), Expected(1) == "none" ? TC_NOT_FOUND : TC_FOUND);
}

TEST_F(PgBouncerTest, TheDaemonsConsistencyChecksHoldWithLoadersBehindIt) {
  StartDaemon();
  // A role change is seen by the next read.
  const std::string u = UserId(1);
  ASSERT_EQ(Lookup("user", u), TC_FOUND);
  EXPECT_EQ(Field("role"), "captain");
  admin_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + u + "'");
  ASSERT_TRUE(WaitFor([&] { return Get("user", u) == TC_MISS; }))
      << "the commit did not invalidate the entry";
  ASSERT_EQ(Lookup("user", u), TC_FOUND);
  EXPECT_EQ(Field("role"), "guest");

  // A deleted row is not found.
  const std::string gone = UserId(7);
  ASSERT_EQ(Lookup("user", gone), TC_FOUND);
  admin_->Exec("DELETE FROM fleet.user_accounts WHERE id = '" + gone + "'");
  ASSERT_TRUE(WaitFor([&] { return Get("user", gone) == TC_MISS; }));
  EXPECT_EQ(Lookup("user", gone), TC_NOT_FOUND);

  // A registry change invalidates every entry of its tenant (users 1, 6, 11).
  for (int n : {6, 11}) ASSERT_EQ(Lookup("user", UserId(n)), TC_FOUND);
  ASSERT_EQ(Lookup("tenant_by_slug", "yacht-1"), TC_FOUND);
  admin_->Exec("UPDATE fleet.fleet_registry SET tenant_url = 'https://moved.example.com' WHERE id = '" +
               TenantId(1) + "'");
  ASSERT_TRUE(WaitFor([&] { return Get("user", UserId(6)) == TC_MISS; }));
  EXPECT_EQ(Get("user", UserId(11)), TC_MISS);
  EXPECT_EQ(Get("tenant_by_slug", "yacht-1"), TC_MISS);
  ASSERT_EQ(Lookup("user", UserId(6)), TC_FOUND);
  EXPECT_EQ(Field("tenant_url"), "https://moved.example.com");

  // A negative entry is cleared by the INSERT of its row.
  const std::string fresh = UserId(999);
  ASSERT_EQ(Lookup("user", fresh), TC_NOT_FOUND);
  EXPECT_EQ(Get("user", fresh), TC_NOT_FOUND) << "the negative answer was cached";
  admin_->Exec("INSERT INTO fleet.user_accounts (id, yacht_id, email, role) VALUES ('" + fresh + "', '" +
               TenantId(2) + "', 'new@x', 'crew')");
  ASSERT_TRUE(WaitFor([&] { return Get("user", fresh) == TC_MISS; }));
  ASSERT_EQ(Lookup("user", fresh), TC_FOUND);
  EXPECT_EQ(Field("role"), "crew");
  EXPECT_EQ(DaemonStats(*daemon_).at("fill_errors"), "0");
}

TEST_F(PgBouncerTest, NothingTheDaemonDoesOutlivesItsTransactionOnAServerConnection) {
  StartDaemon();  // its start checks every query through PgBouncer too
  const auto wrong = ColdLookupsFromProcesses(1);
  ASSERT_TRUE(wrong.empty()) << Joined(wrong);
  // Another client of PgBouncer gets the default statement_timeout, no
  // prepared statement and no LISTEN on every server connection.
  const auto state = ServerConnectionState();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_NE(state[0].substr(0, state[0].find(' ')), state[1].substr(0, state[1].find(' ')))
      << "two clients in a transaction each hold both server connections";
  for (const auto& s : state) EXPECT_NE(s.find(" timeout=0 prepared=0 listening=0"), std::string::npos) << s;
}

TEST_F(PgBouncerTest, LookupsRecoverAfterAPgBouncerRestart) {
  StartDaemon();
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);
  bouncer_->Restart();
  // The loaders see their connections drop and reconnect with backoff.
  ASSERT_TRUE(WaitFor([&] { return Lookup("user", UserId(2)) == TC_FOUND; }, 20s)) << daemon_->Log();
  const auto wrong = ColdLookupsFromProcesses(3);
  EXPECT_TRUE(wrong.empty()) << Joined(wrong);
  // The listener is direct: the cache stayed synced, invalidations still apply.
  admin_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + UserId(2) + "'");
  ASSERT_TRUE(WaitFor([&] { return Get("user", UserId(2)) == TC_MISS; }));
  ASSERT_EQ(Lookup("user", UserId(2)), TC_FOUND);
  EXPECT_EQ(Field("role"), "guest");
}

TEST_F(PgBouncerTest, AListenerBehindPgBouncerIsRefusedNamingListenerConninfo) {
  for (const bool set : {true, false}) {
    SCOPED_TRACE(set ? "listener_conninfo through PgBouncer" : "listener_conninfo unset, conninfo pooled");
    const std::string config =
        set ? Config(Pooled()) : FleetConfig(dir_.path(), Pooled(), "", "loaders = 2\n");
    daemon_ = std::make_unique<DaemonProcess>(dir_.path(), config);
    const std::string expected =
        set ? "[error] source main: listener refused: listener_conninfo reaches PostgreSQL through a "
              "connection pooler such as PgBouncer"
            : "[error] source main: listener refused: listener_conninfo is not set, so conninfo reaches "
              "PostgreSQL through a connection pooler such as PgBouncer";
    // Refused, then retried with backoff: the refusal is logged again.
    ASSERT_TRUE(WaitFor(
        [&] {
          const std::string log = daemon_->Log();
          const size_t first = log.find(expected);
          return first != std::string::npos && log.find(expected, first + 1) != std::string::npos;
        },
        20s))
        << daemon_->Log();
    EXPECT_TRUE(
        LogHas("LISTEN needs a session of its own: set listener_conninfo in [[source]] \"main\" to "
               "reach PostgreSQL directly"))
        << daemon_->Log();
    EXPECT_FALSE(daemon_->WaitReady(100ms)) << "READY without a listener";
    CommandResult status{};
    ASSERT_TRUE(WaitFor([&] {
      status = RunCommand(std::string(TC_CTL_BIN) + " status --cache " + daemon_->cache_path());
      return status.output.find(
                 "listener        REFUSED for 1 source(s): listener_conninfo reaches "
                 "PostgreSQL through a pooler") != std::string::npos;
    })) << status.output;
    EXPECT_NE(status.output.find("synced          no"), std::string::npos) << status.output;
    EXPECT_NE(status.exit_code, 0) << status.output;
    daemon_.reset();
  }
}

TEST_F(PgBouncerTest, CheckConfigConnectWorksThroughItAndLeavesNothingBehind) {
  const std::string path = dir_.File("tenantcached.toml");
  const std::string check = "--check-config --connect --config " + path;
  std::ofstream(path) << Config(Conninfo());
  // Again and again on the same two server connections.
  for (int i = 0; i < 3; ++i) {
    const CommandResult r = RunDaemonCommand(check);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("every query checked against its database"), std::string::npos) << r.output;
  }
  // A broken query is still named, with the server's message.
  const std::string extra =
      "[[namespace]]\nname = \"misspelt\"\nkind = \"slug\"\n"
      "query = \"SELECT id::text AS tenant_id, yacht_code FROM fleet.fleet_registy WHERE slug = $1\"\n"
      "tenant_column = \"tenant_id\"\nfields = [\"yacht_code\"]\n";
  std::ofstream(path) << FleetConfig(dir_.path(), Pooled(), "",
                                     "listener_conninfo = \"" + Conninfo() + "\"\n", extra);
  CommandResult r = RunDaemonCommand(check);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("namespace misspelt: the query cannot be prepared: ERROR:  relation "
                          "\"fleet.fleet_registy\" does not exist"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("namespace user"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("listener_conninfo"), std::string::npos) << r.output;
  for (const auto& s : ServerConnectionState()) EXPECT_NE(s.find(" prepared=0 "), std::string::npos) << s;

  // A listener the start would refuse is named now, with the setting to change.
  std::ofstream(path) << Config(Pooled());
  r = RunDaemonCommand(check);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(
      r.output.find("tenantcached: source main: listener_conninfo reaches PostgreSQL through a connection "
                    "pooler such as PgBouncer"),
      std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("set listener_conninfo in [[source]] \"main\" to reach PostgreSQL directly"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("configuration OK"), std::string::npos) << r.output;
  std::ofstream(path) << FleetConfig(dir_.path(), Pooled());
  r = RunDaemonCommand(check);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("tenantcached: source main: listener_conninfo is not set, so conninfo reaches "
                          "PostgreSQL through a connection pooler"),
            std::string::npos)
      << r.output;
  // A listener_conninfo that cannot connect is not a pass.
  std::ofstream(path) << Config(SharedCluster().Conninfo(db_, "tc_no_such_role"));
  r = RunDaemonCommand(check);
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("tenantcached: cannot check the listener of source main: listener_conninfo cannot "
                          "connect: "),
            std::string::npos)
      << r.output;
}

// A pooler that the pid does not reveal (played by forcing named statements
// behind PgBouncer): named statements go missing or collide; the loaders say
// so, switch to unnamed statements, and every lookup is still answered.
TEST_F(PgBouncerTest, APoolerTheDetectionMissesIsFoundByItsStatements) {
  StartDaemon({{"TENANTCACHED_LOADER_STATEMENTS", "named"}});
  EXPECT_TRUE(LogHas("the loaders use named statements, as TENANTCACHED_LOADER_STATEMENTS says"))
      << daemon_->Log();
  const auto wrong = ColdLookupsFromProcesses(1);
  EXPECT_TRUE(wrong.empty()) << Joined(wrong);
  ASSERT_TRUE(WaitFor([&] { return LogHas("use unnamed statements from now on"); })) << daemon_->Log();
  EXPECT_TRUE(
      LogHas("a prepared statement was not kept: the connection does not keep prepared statements "
             "between transactions (a transaction-pooling PgBouncer before 1.21?)"))
      << daemon_->Log();
  const auto stats = DaemonStats(*daemon_);
  EXPECT_EQ(stats.at("fill_errors"), "0");
  EXPECT_EQ(stats.at("broken_namespaces"), "0") << "a pooler's doing is not the query's fault";
}

// A named statement that a server connection lost after the check (played by
// DEALLOCATE ALL on every server connection, as a pooler's reset or a
// recycled server connection does): the fill is run again unnamed.
TEST_F(PgBouncerTest, AStatementTheServerConnectionLostIsRunAgainUnnamed) {
  // One loader: its named statements are prepared once, on one server
  // connection, and nothing collides before the first fill.
  StartDaemon({{"TENANTCACHED_LOADER_STATEMENTS", "named"}}, 1);
  ASSERT_FALSE(LogHas("a prepared statement was not kept")) << daemon_->Log();
  {
    std::vector<std::unique_ptr<PgConn>> clients;
    for (int i = 0; i < 2; ++i) {
      clients.push_back(std::make_unique<PgConn>(Pooled()));
      clients.back()->Exec("BEGIN; DEALLOCATE ALL");
    }
    for (auto& c : clients) c->Exec("COMMIT");
  }
  const std::string expected = Expected(3);
  ASSERT_EQ(Lookup("user", UserId(3)), expected == "none" ? TC_NOT_FOUND : TC_FOUND)
      << tc_last_error_detail() << "\n"
      << daemon_->Log();
  if (expected != "none") {
    EXPECT_EQ(std::string(tc_value_tenant(&v_, nullptr)) + " " + Field("role"), expected);
  }
  EXPECT_TRUE(
      LogHas("ERROR:  prepared statement \"tenantcache_ns0\" does not exist; the loaders of source main "
             "use unnamed statements from now on"))
      << daemon_->Log();
  EXPECT_EQ(DaemonStats(*daemon_).at("fill_errors"), "0");
  // And from now on without any error.
  ASSERT_EQ(Lookup("user", UserId(4)), Expected(4) == "none" ? TC_NOT_FOUND : TC_FOUND);
}

TEST_F(PgBouncerTest, AnUnknownStatementsSettingIsNamedInTheLog) {
  StartDaemon({{"TENANTCACHED_LOADER_STATEMENTS", "nammed"}});
  EXPECT_TRUE(
      LogHas("[error] TENANTCACHED_LOADER_STATEMENTS=\"nammed\" is neither \"named\" nor \"unnamed\": "
             "ignored, the loaders detect a pooler themselves"))
      << daemon_->Log();
  EXPECT_TRUE(WaitFor([&] { return LogHas("the loaders reach PostgreSQL through a pooler"); }))
      << daemon_->Log();
  ASSERT_EQ(Lookup("user", UserId(1)), Expected(1) == "none" ? TC_NOT_FOUND : TC_FOUND);
}

}  // namespace
}  // namespace tenantcache::test
