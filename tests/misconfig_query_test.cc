// The mistakes a new user makes in a namespace's query, its groups and its
// conninfo, each made against the real daemon, tenantcachectl and
// PostgreSQL: every one must be named where the user looks (the command's
// output, the daemon's log, the lookup's detail), never left to fail
// silently.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <string>

#include "support/daemon_process.h"
#include "support/fleet_test.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"
#include "tenantcache/tenantcache.hpp"

namespace tenantcache::test {
namespace {

using namespace std::chrono_literals;

const char* const kUserFields = "fields = [\"tenant_code\", \"tenant_url\", \"role\"]";
const char* const kTypoFields = "fields = [\"tenant_code\", \"tenant_url\", \"rol\"]";

// `text` with the first `from` replaced by `to`; fails the test if absent.
std::string Replaced(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// The 1-based line of the first `needle` after `after` in `text`.
size_t LineOf(const std::string& text, const std::string& after, const std::string& needle) {
  const size_t at = text.find(needle, text.find(after));
  return 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + static_cast<ptrdiff_t>(at), '\n'));
}

class MisconfigQueryTest : public FleetTest {
 protected:
  // The fleet config with the `user` namespace's fields mistyped ("rol").
  std::string TypoConfig(const std::string& conninfo) {
    return Replaced(FleetConfig(dir_.path(), conninfo), kUserFields, kTypoFields);
  }
  std::string ConfigPath() const { return dir_.File("tenantcached.toml"); }
  void Write(const std::string& config) const { std::ofstream(ConfigPath()) << config; }
  // What a user sees for the typo: the query's FILE:LINE, the column, and
  // what the query does return.
  std::string TypoMessage(const std::string& config) const {
    return ConfigPath() + ":" + std::to_string(LineOf(config, "name = \"user\"", "query = ")) +
           ": namespace user: the query returns no column \"rol\" (it returns: tenant_id, tenant_code, "
           "tenant_url, role)";
  }
};

TEST_F(MisconfigQueryTest, CheckConfigConnectNamesTheLineAndTheColumnOfAFieldsTypo) {
  const std::string config = TypoConfig(Conninfo());
  Write(config);
  // Without --connect the file alone is valid: the column is the database's.
  CommandResult r = RunDaemonCommand("--check-config --config " + ConfigPath());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = RunDaemonCommand("--check-config --connect --config " + ConfigPath());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(TypoMessage(config)), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("configuration OK"), std::string::npos) << r.output;
  // The other namespaces' queries are sound and not reported.
  EXPECT_EQ(r.output.find("namespace tenant"), std::string::npos) << r.output;

  // A query that cannot be prepared is named with its line and the server's message.
  const std::string missing_table =
      Replaced(FleetConfig(dir_.path(), Conninfo()), "FROM fleet.fleet_registry WHERE slug = $1",
               "FROM fleet.fleet_registy WHERE slug = $1");
  Write(missing_table);
  r = RunDaemonCommand("--check-config --connect --config " + ConfigPath());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(ConfigPath() + ":" +
                          std::to_string(LineOf(missing_table, "name = \"tenant_by_slug\"", "query = ")) +
                          ": namespace tenant_by_slug: the query cannot be prepared: ERROR:  relation "
                          "\"fleet.fleet_registy\" does not exist"),
            std::string::npos)
      << r.output;

  // A key that can never parse as $1's type, and a second parameter no key fills.
  const std::string extra =
      "[[namespace]]\nname = \"by_id_as_slug\"\nkind = \"slug\"\n"
      "query = \"SELECT id::text AS tenant_id, yacht_code FROM fleet.fleet_registry WHERE id = $1\"\n"
      "tenant_column = \"tenant_id\"\nfields = [\"yacht_code\"]\n\n"
      "[[namespace]]\nname = \"two_params\"\nkind = \"text\"\n"
      "query = \"SELECT id::text AS tenant_id, yacht_code FROM fleet.fleet_registry WHERE slug = $1 AND host "
      "= "
      "$2\"\n"
      "tenant_column = \"tenant_id\"\nfields = [\"yacht_code\"]\n";
  const std::string params = FleetConfig(dir_.path(), Conninfo(), "", "", extra);
  Write(params);
  r = RunDaemonCommand("--check-config --connect --config " + ConfigPath());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(ConfigPath() + ":" +
                          std::to_string(LineOf(params, "name = \"by_id_as_slug\"", "query = ")) +
                          ": namespace by_id_as_slug: the query compares $1 as uuid, but keys of kind slug"),
            std::string::npos)
      << r.output;
  EXPECT_NE(
      r.output.find(ConfigPath() + ":" + std::to_string(LineOf(params, "name = \"two_params\"", "query = ")) +
                    ": namespace two_params: the query takes 2 parameters; it must take exactly one"),
      std::string::npos)
      << r.output;

  // The corrected file passes, and says that the queries were checked.
  Write(FleetConfig(dir_.path(), Conninfo()));
  r = RunDaemonCommand("--check-config --connect --config " + ConfigPath());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("every query checked against its database"), std::string::npos) << r.output;

  // A database that cannot be reached is not a pass: exit 3, naming the source.
  Write(FleetConfig(dir_.path(), SharedCluster().Conninfo(db_, "tc_no_such_role")));
  r = RunDaemonCommand("--check-config --connect --config " + ConfigPath());
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("cannot check the queries of source main: cannot connect"), std::string::npos)
      << r.output;
}

TEST_F(MisconfigQueryTest, TheDaemonRefusesToStartOnAQueryThatDoesNotReturnItsFields) {
  const std::string config = TypoConfig(Conninfo());
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), config);
  const auto status = daemon_->Wait();
  ASSERT_TRUE(status.has_value()) << "the daemon kept running on a query that cannot fill its namespace";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 2) << daemon_->Log();
  EXPECT_TRUE(LogHas(TypoMessage(config))) << daemon_->Log();
  EXPECT_TRUE(LogHas("refusing to start")) << daemon_->Log();
  EXPECT_FALSE(daemon_->WaitNotify("READY=1", 0ms));
  struct stat st {};
  EXPECT_NE(stat(daemon_->cache_path().c_str(), &st), 0) << "the refused start created the cache file";
}

// The database cannot be reached at start (its role may not log in yet):
// the daemon starts as it always did, failing closed, and its loaders make
// the check when they connect. The broken namespace answers TC_E_DAEMON with
// the reason; the others are served.
TEST_F(MisconfigQueryTest, WithTheDatabaseUnreachableAtStartTheLoadersCheckWhenTheyConnect) {
  admin_->Exec("CREATE ROLE tc_late SUPERUSER NOLOGIN");
  const std::string config = TypoConfig(SharedCluster().Conninfo(db_, "tc_late"));
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), config);
  ASSERT_TRUE(WaitFor([&] { return LogHas("could not be checked at start"); })) << daemon_->Log();
  EXPECT_FALSE(daemon_->WaitReady(500ms)) << "READY without a database";
  admin_->Exec("ALTER ROLE tc_late LOGIN");
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  ASSERT_TRUE(WaitFor([&] { return LogHas(TypoMessage(config)); })) << daemon_->Log();
  ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &cache_), 0);

  EXPECT_EQ(Lookup("user", UserId(1)), TC_E_DAEMON);
  const std::string detail = tc_last_error_detail();
  EXPECT_NE(detail.find(TypoMessage(config)), std::string::npos) << detail;
  // The C++ header's exception says it after the status.
  const tenantcache::Error error(tenantcache::Status::kDaemon, "tenantcache: lookup user", detail);
  EXPECT_EQ(std::string(error.what()),
            "tenantcache: lookup user: " + std::string(tc_strerror(TC_E_DAEMON)) + ": " + detail);
  EXPECT_EQ(error.detail(), detail);
  EXPECT_EQ(Lookup("tenant", TenantId(1)), TC_FOUND) << tc_last_error_detail();
  EXPECT_STREQ(tc_last_error_detail(), "") << "a success leaves no detail behind";
  // Logged once, not once per loader connection.
  const std::string log = daemon_->Log();
  EXPECT_EQ(log.find(TypoMessage(config), log.find(TypoMessage(config)) + 1), std::string::npos) << log;
  admin_.reset();
  daemon_.reset();
  PgConn(Conninfo()).Exec("DROP ROLE tc_late");
}

// A namespace found broken by what the database holds (here: the table its
// query reads is missing, as before a migration) recovers once the database
// is fixed, without a restart: a lookup of it has a loader check the query
// again (at most once per reconnect_max).
TEST_F(MisconfigQueryTest, ANamespaceBrokenInTheDatabaseRecoversOnceTheDatabaseIsFixed) {
  admin_->Exec("CREATE ROLE tc_migrating SUPERUSER NOLOGIN");
  // Unreachable at start (NOLOGIN), so the loaders make the check.
  daemon_ = std::make_unique<DaemonProcess>(
      dir_.path(), FleetConfig(dir_.path(), SharedCluster().Conninfo(db_, "tc_migrating")));
  ASSERT_TRUE(WaitFor([&] { return LogHas("could not be checked at start"); })) << daemon_->Log();
  admin_->Exec("ALTER TABLE fleet.user_accounts RENAME TO user_accounts_next; ALTER ROLE tc_migrating LOGIN");
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &cache_), 0);
  ASSERT_TRUE(WaitFor([&] { return Lookup("user", UserId(1)) == TC_E_DAEMON; })) << daemon_->Log();
  EXPECT_NE(std::string(tc_last_error_detail()).find("relation \"fleet.user_accounts\" does not exist"),
            std::string::npos)
      << tc_last_error_detail();
  EXPECT_EQ(Lookup("tenant", TenantId(1)), TC_FOUND) << tc_last_error_detail();
  const auto status = [&] {
    return RunCommand(std::string(TC_CTL_BIN) + " --cache " + daemon_->cache_path() + " status").output;
  };
  EXPECT_NE(status().find("broken queries  1 namespace(s): their lookups fail"), std::string::npos)
      << status();

  admin_->Exec("ALTER TABLE fleet.user_accounts_next RENAME TO user_accounts");
  EXPECT_TRUE(WaitFor([&] { return Lookup("user", UserId(1)) == TC_FOUND; })) << daemon_->Log();
  EXPECT_TRUE(LogHas("namespace user: its query checks out now")) << daemon_->Log();
  EXPECT_EQ(status().find("broken queries"), std::string::npos) << status();
  admin_.reset();
  daemon_.reset();
  PgConn(Conninfo()).Exec("DROP ROLE tc_migrating");
}

TEST_F(MisconfigQueryTest, ASighupWithABadQueryIsRefusedAndTheOldConfigStillServes) {
  const std::string good = FleetConfig(dir_.path(), Conninfo());
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), good);
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &cache_), 0);
  ASSERT_EQ(Lookup("user", UserId(1)), TC_FOUND);

  // The typo, and a reloadable change that must not apply with it.
  const std::string bad = Replaced(Replaced(good, kUserFields, kTypoFields), "heartbeat_interval",
                                   "ttl = \"200ms\"\nheartbeat_interval");
  daemon_->Rewrite(bad);
  daemon_->Signal(SIGHUP);
  ASSERT_TRUE(daemon_->WaitNotify("RELOADING=1", 10s));
  ASSERT_TRUE(daemon_->WaitNotify("READY=1", 10s));
  ASSERT_TRUE(WaitFor([&] {
    return LogHas("reload refused, keeping the running configuration: " + TypoMessage(bad));
  })) << daemon_->Log();
  EXPECT_TRUE(LogHas("reload: checking the changed queries of namespace user")) << daemon_->Log();
  EXPECT_FALSE(LogHas("reloaded ")) << daemon_->Log();
  // The running definition still serves, with the old TTL (1h): the entry stays.
  ASSERT_EQ(Lookup("user", UserId(2)), TC_FOUND) << tc_last_error_detail();
  const char* role = nullptr;
  size_t len = 0;
  ASSERT_EQ(tc_value_get(&v_, "role", &role, &len), 0);
  EXPECT_GT(len, 0u);
  tc_ns user = 0;
  ASSERT_EQ(tc_namespace(cache_, "user", &user), 0);
  const std::string key = UserId(2);
  EXPECT_FALSE(
      WaitFor([&] { return tc_cache_get(cache_, user, key.data(), key.size(), &v_) != TC_FOUND; }, 600ms))
      << "the refused file's ttl = 200ms applied";
}

// A SIGHUP says which namespaces it changed (and that they need a
// restart), which keys it applied, and at debug each old and new value.
TEST_F(MisconfigQueryTest, ASighupSaysWhichNamespacesAndKeysItChanged) {
  const std::string good = FleetConfig(dir_.path(), Conninfo());
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), good);
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  const std::string changed = Replaced(
      Replaced(good, "SELECT id::text AS tenant_id, yacht_code FROM fleet.fleet_registry WHERE slug = $1",
               "SELECT id::text AS tenant_id, yacht_code, host FROM fleet.fleet_registry WHERE slug = $1"),
      "heartbeat_interval", "ttl = \"30m\"\nheartbeat_interval");
  daemon_->Rewrite(changed);
  daemon_->Signal(SIGHUP);
  ASSERT_TRUE(WaitFor([&] { return LogHas("reloaded " + daemon_->config_path()); })) << daemon_->Log();
  EXPECT_TRUE(
      LogHas("reload: namespace tenant_by_slug (query) changed; that needs a restart and was not applied"))
      << daemon_->Log();
  EXPECT_TRUE(
      LogHas("reloaded " + daemon_->config_path() + ": changed cache.ttl, namespace tenant_by_slug.query"))
      << daemon_->Log();
  EXPECT_TRUE(LogHas("reload: cache.ttl: 3600000ms -> 1800000ms")) << daemon_->Log();
  EXPECT_TRUE(LogHas("reload: namespace tenant_by_slug.query: changed (" + daemon_->config_path() + ":" +
                     std::to_string(LineOf(changed, "name = \"tenant_by_slug\"", "query = ")) + ")"))
      << daemon_->Log();
}

TEST_F(MisconfigQueryTest, CheckConfigNamesGroupsThatDoNotExistAndTheDaemonRefusesToStart) {
  const std::string base = FleetConfig(dir_.path(), Conninfo(), "group = \"tc_no_such_cache_group\"\n");
  const std::string config =
      Replaced(base, "[control]\n", "[control]\nallowed_groups = [\"root\", \"tc_no_such_workers\"]\n");
  Write(config);
  CommandResult r = RunDaemonCommand("--check-config --config " + ConfigPath());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(ConfigPath() + ": cache.group: no group named \"tc_no_such_cache_group\""),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find(ConfigPath() + ": control.allowed_groups: no group named \"tc_no_such_workers\""),
            std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("\"root\""), std::string::npos)
      << "an existing group is not a problem: " << r.output;

  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), config);
  const auto status = daemon_->Wait();
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 2) << daemon_->Log();
  EXPECT_TRUE(LogHas("control.allowed_groups: no group named \"tc_no_such_workers\"")) << daemon_->Log();
}

TEST_F(MisconfigQueryTest, CheckConfigRefusesAConninfoLibpqCannotParseWithoutShowingIt) {
  Write(FleetConfig(dir_.path(), "host=/tmp password=s3cret dbname"));
  CommandResult r = RunDaemonCommand("--check-config --config " + ConfigPath());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(ConfigPath() + ": source[0].conninfo: libpq cannot parse it"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("s3cret"), std::string::npos) << r.output;
}

TEST_F(MisconfigQueryTest, CheckConfigRefusesACacheDirectoryOthersCanWrite) {
  const std::string open_dir = dir_.File("open");
  ASSERT_EQ(mkdir(open_dir.c_str(), 0777), 0);
  ASSERT_EQ(chmod(open_dir.c_str(), 0777), 0);  // past the umask
  Write(Replaced(FleetConfig(dir_.path(), Conninfo()), "path = \"" + dir_.path() + "/cache\"",
                 "path = \"" + open_dir + "/cache\""));
  CommandResult r = RunDaemonCommand("--check-config --config " + ConfigPath());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("is writable by other users"), std::string::npos) << r.output;

  // A directory that does not exist yet may be made at start: a warning only.
  Write(Replaced(FleetConfig(dir_.path(), Conninfo()), "path = \"" + dir_.path() + "/cache\"",
                 "path = \"" + dir_.path() + "/not-yet/cache\""));
  r = RunDaemonCommand("--check-config --config " + ConfigPath());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("warning: " + ConfigPath() + ": cache.path: the directory " + dir_.path() +
                          "/not-yet does not exist"),
            std::string::npos)
      << r.output;
}

// A query that is sound but fails when it runs: the database's own message
// reaches tenantcachectl's output and the daemon's log.
TEST_F(MisconfigQueryTest, AFillErrorsDatabaseMessageReachesTenantcachectlLookup) {
  admin_->Exec(
      "CREATE FUNCTION fleet.registry_offline(k text) RETURNS text LANGUAGE plpgsql AS "
      "$$BEGIN RAISE EXCEPTION 'registry offline for %', k; END$$");
  const std::string extra =
      "[[namespace]]\nname = \"failing\"\nkind = \"slug\"\n"
      "query = \"SELECT id::text AS tenant_id, yacht_code FROM fleet.fleet_registry WHERE slug = "
      "fleet.registry_offline($1)\"\n"
      "tenant_column = \"tenant_id\"\nfields = [\"yacht_code\"]\n";
  daemon_ = std::make_unique<DaemonProcess>(dir_.path(), FleetConfig(dir_.path(), Conninfo(), "", "", extra));
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  const CommandResult r = RunCommand(std::string(TC_CTL_BIN) + " --cache " + daemon_->cache_path() +
                                     " lookup failing some-yacht");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(std::string(tc_strerror(TC_E_DAEMON)) +
                          ": namespace failing: ERROR:  registry offline for some-yacht"),
            std::string::npos)
      << r.output;
  EXPECT_TRUE(WaitFor([&] {
    return LogHas("fill failed: namespace failing: ERROR:  registry offline for some-yacht");
  })) << daemon_->Log();

  // The C ABI's detail, for a caller of the library.
  ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &cache_), 0);
  EXPECT_EQ(Lookup("failing", "other-yacht"), TC_E_DAEMON);
  EXPECT_NE(std::string(tc_last_error_detail()).find("registry offline for other-yacht"), std::string::npos)
      << tc_last_error_detail();

#if !defined(__SANITIZE_THREAD__)
  // Python's result carries it too (a TSan build does not build the
  // extension).
  const CommandResult py = RunCommand(
      "PYTHONPATH='" TC_PYTHON_LIB "' " TC_PYTHON " -c \"import tenantcache; c = tenantcache.Cache.open('" +
      daemon_->cache_path() +
      "'); r = c.lookup('failing', 'py-yacht', 5000); print(r.status.name, r.detail)\"");
  EXPECT_EQ(py.exit_code, 0) << py.output;
  EXPECT_NE(py.output.find("DAEMON namespace failing: ERROR:  registry offline for py-yacht"),
            std::string::npos)
      << py.output;
#endif
}

}  // namespace
}  // namespace tenantcache::test
