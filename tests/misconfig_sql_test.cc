// A new user's database-side mistakes, made against the real PostgreSQL and
// the real daemon, and what they are told: a daemon role without the
// tenantcache grants (the log names the one statement to run, and the daemon
// recovers without a restart once it has run), a watch_table() key naming a
// namespace no daemon serves (a WARNING at watch_table, the key in
// watched_tables, a counted and logged notification, `tenantcachectl status`),
// and host keys stored in mixed case (found whatever case is looked up).
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>

#include <chrono>
#include <string>
#include <vector>

#include "support/daemon_process.h"
#include "support/fleet_test.h"
#include "support/pg_cluster.h"
#include "support/sql_messages.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::test {
namespace {

using namespace std::chrono_literals;

class MisconfigSqlTest : public FleetTest {
 protected:
  // A login role with PUBLIC's rights only, named for this test's database
  // (roles belong to the whole cluster).
  std::string Role(const std::string& name) {
    std::string role = name + "_" + db_;
    admin_->Exec("CREATE ROLE " + role + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE");
    return role;
  }
  void StartDaemon(const std::string& conninfo) {
    daemon_ = std::make_unique<DaemonProcess>(dir_.path(), FleetConfig(dir_.path(), conninfo));
  }
  bool LogShows(const std::string& what, std::chrono::milliseconds timeout = 10s) {
    return WaitFor([&] { return Contains(daemon_->Log(), what); }, timeout);
  }
  // Whether `tenantcachectl status` comes to print `what` (shown when not).
  bool StatusShows(const std::string& what) {
    std::string output;
    const bool shown = WaitFor([&] {
      output = RunCommand(std::string(TC_CTL_BIN) + " --cache " + daemon_->cache_path() + " status").output;
      return Contains(output, what);
    });
    if (!shown) std::fprintf(stderr, "tenantcachectl status:\n%s\n", output.c_str());
    return shown;
  }
  void OpenCache() { ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &cache_), 0); }
  // Looks `key` up through the daemon; the status, and in `field` the value
  // of field `name` when found.
  int Lookup(const char* ns_name, const std::string& key, const char* name, std::string* field) {
    tc_ns ns = 0;
    if (tc_namespace(cache_, ns_name, &ns) != 0) return TC_E_NO_NAMESPACE;
    tc_value v;
    const int st = tc_cache_lookup(cache_, ns, key.data(), key.size(), 5000, &v);
    if (st == TC_FOUND) {
      const char* text = nullptr;
      size_t len = 0;
      *field =
          tc_value_get(&v, name, &text, &len) == 0 && text != nullptr ? std::string(text, len) : "<none>";
    }
    return st;
  }
};

// The daemon's role may read the user's tables but nothing of schema
// tenantcache. The log says which privilege is missing and the one statement
// that grants everything; once the installer runs it, the retrying daemon
// syncs, serves and records its namespaces, with no restart.
TEST_F(MisconfigSqlTest, ADaemonRoleWithoutTheTenantcacheGrantsIsToldTheFixAndRecoversWithoutARestart) {
  const std::string role = Role("tcd");
  admin_->Exec("GRANT USAGE ON SCHEMA fleet TO " + role + "; GRANT SELECT ON fleet.user_accounts, " +
               "fleet.fleet_registry TO " + role);
  StartDaemon(SharedCluster().Conninfo(db_, role));
  const std::string fix = "SELECT tenantcache.grant_daemon('" + role + "')";
  ASSERT_TRUE(LogShows(fix)) << daemon_->Log();
  const std::string log = daemon_->Log();
  // PostgreSQL names the first object refused (which one depends on the
  // plan); the daemon names every missing privilege and the fix.
  EXPECT_TRUE(Contains(
      log, "the daemon's database role \"" + role +
               "\" lacks SELECT ON tenantcache.version, SELECT ON tenantcache.settings, SELECT ON "
               "tenantcache.watched_tables, SELECT ON tenantcache.invalidation_log, SELECT ON "
               "tenantcache.log_horizon, EXECUTE ON FUNCTION tenantcache.daemon_seen(text, "
               "text[]), EXECUTE ON FUNCTION tenantcache.daemon_prune_log(text, interval), SELECT ON "
               "tenantcache.heartbeat_key in schema "
               "tenantcache (ERROR:  permission denied for "))
      << log;
  EXPECT_TRUE(Contains(log, "); as the role that ran sql/install.sql, run: " + fix + ")")) << log;
  EXPECT_FALSE(Contains(log, "is sql/install.sql installed?")) << log;
  EXPECT_FALSE(daemon_->WaitReady(0ms)) << "READY without the grants";

  std::string notices;
  {
    Notices n(*admin_);
    admin_->Exec(fix);
    notices = n.all();
  }
  EXPECT_TRUE(
      Contains(notices, "tenantcache: granted to role " + role +
                            ": SELECT ON tenantcache.version, SELECT ON tenantcache.settings, SELECT ON "
                            "tenantcache.watched_tables, "
                            "SELECT ON tenantcache.invalidation_log, SELECT ON tenantcache.log_horizon, "
                            "EXECUTE ON FUNCTION tenantcache.daemon_seen(text, text[]), "
                            "EXECUTE ON FUNCTION tenantcache.daemon_prune_log(text, interval)"))
      << notices;

  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  OpenCache();
  const std::string user = UserId(1);
  const std::string stored = admin_->Scalar("SELECT role FROM fleet.user_accounts WHERE id = '" + user + "'");
  std::string role_field;
  ASSERT_EQ(Lookup("user", user, "role", &role_field), TC_FOUND);
  EXPECT_EQ(role_field, stored);
  // Invalidation works too: the change is seen on a later read.
  const std::string changed = stored == "guest" ? "crew" : "guest";
  admin_->Exec("UPDATE fleet.user_accounts SET role = '" + changed + "' WHERE id = '" + user + "'");
  EXPECT_TRUE(WaitFor(
      [&] { return Lookup("user", user, "role", &role_field) == TC_FOUND && role_field == changed; }));
  EXPECT_TRUE(WaitFor([&] {
    return admin_->Scalar(
               "SELECT string_agg(daemon_role || ' ' || array_to_string(namespaces, ','), ';') FROM "
               "tenantcache.daemons") == role + " tenant,tenant_by_host,tenant_by_slug,user";
  })) << daemon_->Log();
  // A reload records them again at once (not only every minute).
  const std::string seen = admin_->Scalar("SELECT last_seen::text FROM tenantcache.daemons");
  daemon_->Signal(SIGHUP);
  EXPECT_TRUE(WaitFor([&] {
    return admin_->Scalar("SELECT last_seen > '" + seen + "'::timestamptz FROM tenantcache.daemons") == "t";
  })) << daemon_->Log();

  // Running it again grants nothing and says so.
  Notices again(*admin_);
  admin_->Exec(fix);
  EXPECT_TRUE(Contains(again.all(), "role " + role + " already has every grant the daemon needs"))
      << again.all();
}

// Partial grants: a role given SELECT by hand (as the README once
// implied) but not daemon_seen() still syncs and serves, and the log says
// why its namespaces are not recorded and the statement that fixes it. On a
// version 2 schema (no grant_daemon yet) the refusal says to upgrade first.
TEST_F(MisconfigSqlTest, PartialGrantsAndOlderSchemasAreNamedToo) {
  const std::string role = Role("tcd");
  admin_->Exec("GRANT USAGE ON SCHEMA fleet TO " + role + "; GRANT SELECT ON fleet.user_accounts, " +
               "fleet.fleet_registry TO " + role + "; GRANT SELECT ON ALL TABLES IN SCHEMA tenantcache TO " +
               role);
  StartDaemon(SharedCluster().Conninfo(db_, role));
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  EXPECT_TRUE(
      LogShows("cannot record this daemon's namespaces in tenantcache.daemons, so watch_table() and "
               "watched_tables cannot tell which keys it serves: the daemon's database role \"" +
               role +
               "\" may not read the tenantcache schema (ERROR:  permission denied for function "
               "daemon_seen); as the role that ran sql/install.sql, run: SELECT "
               "tenantcache.grant_daemon('" +
               role + "');"))
      << daemon_->Log();
  daemon_.reset();

  const std::string db = SharedCluster().CreateDatabase();
  PgConn admin(SharedCluster().Conninfo(db));
  admin.Exec(ReadFile(TC_SOURCE_DIR "/tests/data/install-v2.sql"));
  // The queries must prepare, or the daemon refuses to start before it reads
  // the schema.
  admin.Exec(ReadFile(SqlDir() + "/examples/fleet.sql"));
  admin.Exec("GRANT USAGE ON SCHEMA fleet TO " + role + "; GRANT SELECT ON ALL TABLES IN SCHEMA fleet TO " +
             role);
  TempDir dir;  // a log of its own
  daemon_ = std::make_unique<DaemonProcess>(dir.path(),
                                            FleetConfig(dir.path(), SharedCluster().Conninfo(db, role)));
  EXPECT_TRUE(LogShows("may not read the tenantcache schema (ERROR:  permission denied for "))
      << daemon_->Log();
  EXPECT_TRUE(LogShows("(schema version 3: run sql/install.sql again first if it is older)"))
      << daemon_->Log();
  daemon_.reset();  // before its directory goes
}

// For an installer that is neither superuser nor CREATEROLE (the
// table owner, say): grant_daemon works for it, nobody else can run it, and
// the daemon's record is written only through daemon_seen(), which checks its
// input and keys each row by the login role.
TEST_F(MisconfigSqlTest, GrantDaemonWorksForANonSuperuserInstallerAndTheRecordIsTheDaemonsOwn) {
  const std::string db = SharedCluster().CreateDatabase();
  PgConn admin(SharedCluster().Conninfo(db));
  const std::string owner = Role("owner"), daemon_role = Role("tcd"), other = Role("tcd2"),
                    mallory = Role("mallory");
  admin.Exec("GRANT CREATE ON DATABASE " + db + " TO " + owner);
  PgConn installer(SharedCluster().Conninfo(db, owner));
  installer.Exec(ReadFile(SqlDir() + "/install.sql"));
  ASSERT_EQ(admin.Scalar("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = '" + owner + "'"),
            "f");
  {
    Notices n(installer);
    installer.Exec("SELECT tenantcache.grant_daemon('" + daemon_role + "'), tenantcache.grant_daemon('" +
                   other + "')");
    EXPECT_TRUE(Contains(n.all(), "tenantcache: granted to role " + daemon_role + ": SELECT ON")) << n.all();
  }
  PgConn m(SharedCluster().Conninfo(db, mallory));
  for (const std::string& sql : std::vector<std::string>{
           "SELECT tenantcache.grant_daemon('" + mallory + "')",
           "SELECT tenantcache.daemon_seen('x', '{user}')",
           "INSERT INTO tenantcache.daemons (daemon_role, daemon_id, namespaces) VALUES ('x', 'x', '{}')",
           "DELETE FROM tenantcache.daemons", "SELECT * FROM tenantcache.watched_tables"}) {
    EXPECT_TRUE(Contains(m.ExecError(sql), "permission denied")) << sql;
  }

  PgConn d(SharedCluster().Conninfo(db, daemon_role));
  EXPECT_TRUE(Contains(d.ExecError("SELECT tenantcache.daemon_seen('', '{user}')"), "daemon id must be"));
  EXPECT_TRUE(Contains(d.ExecError("SELECT tenantcache.daemon_seen('h\n', '{user}')"), "daemon id must be"));
  EXPECT_TRUE(Contains(d.ExecError("SELECT tenantcache.daemon_seen('h', '{User}')"), "namespaces must be"));
  EXPECT_TRUE(
      Contains(d.ExecError("SELECT tenantcache.daemon_seen('h', '{user,NULL}')"), "namespaces must be"));
  EXPECT_TRUE(Contains(d.ExecError("SELECT tenantcache.daemon_seen('h', NULL)"), "namespaces must be"));
  EXPECT_TRUE(Contains(d.ExecError("DELETE FROM tenantcache.daemons"), "permission denied"));
  d.Exec("SELECT tenantcache.daemon_seen('host:/c', '{user,tenant,user}')");
  // Another daemon role with the same id gets a row of its own; the first is
  // left as it was.
  PgConn d2(SharedCluster().Conninfo(db, other));
  d2.Exec("SELECT tenantcache.daemon_seen('host:/c', '{}')");
  EXPECT_EQ(admin.Scalar("SELECT string_agg(daemon_role || ' ' || daemon_id || ' ' || namespaces::text, ';' "
                         "ORDER BY daemon_role = '" +
                         other + "') FROM tenantcache.daemons"),
            daemon_role + " host:/c {tenant,user};" + other + " host:/c {}");
  EXPECT_EQ(admin.Scalar("SELECT tenantcache.served_namespaces()::text"), "{tenant,user}");

  // tenantcachectl install-sql --daemon-role: the install, then the grant,
  // with its NOTICE; a role that does not exist is named.
  const std::string third = Role("tcd3");
  const std::string ctl = std::string(TC_CTL_BIN) + " install-sql --conninfo '" +
                          SharedCluster().Conninfo(db, owner) + "' --sql-dir " + SqlDir() + " --daemon-role ";
  const CommandResult r = RunCommand(ctl + third);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(Contains(r.output, "NOTICE: tenantcache: granted to role " + third +
                                     ": SELECT ON tenantcache.version, SELECT ON tenantcache.settings"))
      << r.output;
  const CommandResult bad = RunCommand(ctl + "no_such_role_" + db);
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  EXPECT_TRUE(Contains(bad.output, "role \"no_such_role_" + db + "\" does not exist")) << bad.output;
}

// Items 2 and 3: the issue's `memberz` typo, with a daemon running. The
// mistake is named at watch_table and in watched_tables before any write, and
// the writes' messages are counted, logged (rate-limited) and shown by
// `tenantcachectl status`.
TEST_F(MisconfigSqlTest, AWatchedNamespaceNoDaemonServesIsWarnedShownCountedAndLogged) {
  StartDaemon(Conninfo());
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  // The daemon records its namespaces at its first tick after syncing.
  ASSERT_TRUE(WaitFor([&] {
    return admin_->Scalar("SELECT tenantcache.served_namespaces()::text") ==
           "{tenant,tenant_by_host,tenant_by_slug,user}";
  })) << daemon_->Log();

  admin_->Exec("CREATE TABLE fleet.members (id uuid PRIMARY KEY, org uuid NOT NULL)");
  std::string warned;
  {
    Notices n(*admin_);
    admin_->Exec("SELECT tenantcache.watch_table('fleet.members', NULL, '{\"memberz\": \"id\"}')");
    warned = n.all();
  }
  EXPECT_TRUE(
      Contains(warned,
               "WARNING:  tenantcache: watch_table: no tenantcached seen in the last 5 minutes serves "
               "namespace(s) memberz of table fleet.members: the daemons ignore their invalidations"))
      << warned;
  EXPECT_TRUE(Contains(warned, "The running daemons serve: tenant, tenant_by_host, tenant_by_slug, user."))
      << warned;
  // Through tenantcachectl watch, the operator sees the same warning.
  const CommandResult watched = RunCommand(std::string(TC_CTL_BIN) + " watch fleet.members --keys " +
                                           "'{\"memberz\": \"id\"}' --conninfo '" + Conninfo() + "'");
  EXPECT_EQ(watched.exit_code, 0) << watched.output;
  EXPECT_TRUE(Contains(watched.output,
                       "WARNING: tenantcache: watch_table: no tenantcached seen in the last 5 "
                       "minutes serves namespace(s) memberz of table fleet.members"))
      << watched.output;
  {
    // Watching with served names says nothing.
    Notices n(*admin_);
    admin_->Exec("SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '{\"user\": \"id\"}')");
    EXPECT_EQ(n.all(), "");
  }
  EXPECT_EQ(
      admin_->Exec("SELECT table_name::text, keys::text, unserved_keys::text FROM tenantcache.watched_tables "
                   "ORDER BY 1"),
      (std::vector<std::vector<std::string>>{
          {"fleet.fleet_registry", R"({"tenant": "id", "tenant_by_host": "host", "tenant_by_slug": "slug"})",
           "{}"},
          {"fleet.members", R"({"memberz": "id"})", "{memberz}"},
          {"fleet.user_accounts", R"({"user": "id"})", "{}"}}));

  admin_->Exec("INSERT INTO fleet.members VALUES ('" + UserId(1) + "', '" + TenantId(1) + "')");
  ASSERT_TRUE(WaitFor([&] { return DaemonStat("unknown_namespace_messages") == "1"; })) << daemon_->Log();
  ASSERT_TRUE(
      LogShows("a notification names namespace \"memberz\", which this daemon does not serve (it "
               "serves: user, tenant, tenant_by_slug, tenant_by_host)"))
      << daemon_->Log();
  EXPECT_TRUE(LogShows("[[namespace]] names in " + daemon_->config_path())) << daemon_->Log();

  const CommandResult status =
      RunCommand(std::string(TC_CTL_BIN) + " --cache " + daemon_->cache_path() + " status");
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_TRUE(Contains(status.output,
                       "unknown namespace 1: triggers name a namespace this daemon does not "
                       "serve"))
      << status.output;

  // A flood of them is counted whole but logged once per 10 s.
  admin_->Exec("SELECT pg_notify('tenantcache', '1 k - memberz k' || g) FROM generate_series(1, 50) g");
  ASSERT_TRUE(WaitFor([&] { return DaemonStat("unknown_namespace_messages") == "51"; })) << daemon_->Log();
  EXPECT_LE(Count(daemon_->Log(), "a notification names namespace"), 2u) << daemon_->Log();
}

// A partition created after its partitioned table was watched carries
// PostgreSQL's clones of the row triggers but not the TRUNCATE trigger:
// the daemon names it in its log (with its table and the fix), as
// watched_tables does; watching the table again gives it one.
TEST_F(MisconfigSqlTest, APartitionWithoutTheTruncateTriggerIsNamedInTheLog) {
  admin_->Exec(
      "CREATE TABLE fleet.crew (id uuid, region text) PARTITION BY LIST (region);"
      "CREATE TABLE fleet.crew_eu PARTITION OF fleet.crew FOR VALUES IN ('eu');"
      "SELECT tenantcache.watch_table('fleet.crew', NULL, '{\"user\": \"id\"}');"
      "CREATE TABLE fleet.crew_us PARTITION OF fleet.crew FOR VALUES IN ('us')");
  EXPECT_EQ(admin_->Scalar("SELECT partitions_without_truncate_trigger::text FROM tenantcache.watched_tables "
                           "WHERE table_name = 'fleet.crew'::regclass"),
            "{fleet.crew_us}");
  StartDaemon(Conninfo());
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  EXPECT_TRUE(
      LogShows("partitions fleet.crew_us (of fleet.crew) have no tenantcache TRUNCATE trigger: a "
               "TRUNCATE that names one sends nothing"))
      << daemon_->Log();
  EXPECT_TRUE(LogShows("Run SELECT tenantcache.watch_table(...) again for their partitioned tables"))
      << daemon_->Log();
  EXPECT_FALSE(Contains(daemon_->Log(), "crew_eu")) << daemon_->Log();
  EXPECT_TRUE(
      StatusShows("watched tables  1 partition(s) lack the TRUNCATE trigger (a TRUNCATE of one sends "
                  "nothing), 0 BEFORE UPDATE trigger(s)"));
  admin_->Exec("SELECT tenantcache.watch_table('fleet.crew', NULL, '{\"user\": \"id\"}')");
  EXPECT_EQ(admin_->Scalar("SELECT partitions_without_truncate_trigger::text FROM tenantcache.watched_tables "
                           "WHERE table_name = 'fleet.crew'::regclass"),
            "{}");
}

// A BEFORE UPDATE trigger created after watch_table, on a table whose
// UPDATE trigger is a column trigger, may change a watched column that an
// UPDATE did not name, which nothing sends: the daemon names it in its log
// (with the fix), as watched_tables does, until watch_table runs again.
TEST_F(MisconfigSqlTest, ABeforeTriggerCreatedAfterWatchTableIsNamedInTheLog) {
  admin_->Exec(
      "SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '{\"user\": \"id\"}', ARRAY['role']);"
      "CREATE FUNCTION fleet.promote() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.role := 'owner'; "
      "RETURN NEW; END $$;"
      "CREATE TRIGGER \"Promote\" BEFORE UPDATE ON fleet.user_accounts FOR EACH ROW EXECUTE FUNCTION "
      "fleet.promote();"
      "CREATE FUNCTION fleet.stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;"
      "CREATE TRIGGER stamp BEFORE UPDATE ON fleet.fleet_registry FOR EACH ROW EXECUTE FUNCTION "
      "fleet.stamp()");
  StartDaemon(Conninfo());
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  EXPECT_TRUE(
      LogShows("BEFORE UPDATE triggers \"Promote\" on fleet.user_accounts were created after "
               "watch_table() ran for their tables"))
      << daemon_->Log();
  EXPECT_TRUE(LogShows("Run SELECT tenantcache.watch_table(...) again for those tables")) << daemon_->Log();
  EXPECT_TRUE(
      StatusShows("watched tables  0 partition(s) lack the TRUNCATE trigger (a TRUNCATE of one sends "
                  "nothing), 1 BEFORE UPDATE trigger(s) came after watch_table"));
  // The registry watches every column: its UPDATE trigger compares every
  // UPDATE, and sees what its BEFORE trigger does.
  EXPECT_FALSE(Contains(daemon_->Log(), "stamp on")) << daemon_->Log();
  EXPECT_EQ(admin_->Scalar("SELECT string_agg(table_name || ' ' || unseen_before_update_triggers::text, ', ' "
                           "ORDER BY table_name::text) FROM tenantcache.watched_tables"),
            "fleet.fleet_registry {}, fleet.user_accounts {\"\\\"Promote\\\" on fleet.user_accounts\"}");
}

// Without a daemon: the keys are shown, and which of them are served
// is unknown (NULL) rather than claimed, until a daemon reports recently.
TEST_F(MisconfigSqlTest, WatchedTablesShowTheKeysAndOnlyRecentDaemonsCount) {
  const std::string query =
      "SELECT table_name::text, coalesce(tenant_column, '-'), triggers::text, keys::text, "
      "coalesce(unserved_keys::text, 'unknown') FROM tenantcache.watched_tables ORDER BY 1";
  const std::string registry_keys = R"({"tenant": "id", "tenant_by_host": "host", "tenant_by_slug": "slug"})";
  EXPECT_EQ(admin_->Exec(query), (std::vector<std::vector<std::string>>{
                                     {"fleet.fleet_registry", "id", "4", registry_keys, "unknown"},
                                     {"fleet.user_accounts", "-", "4", R"({"user": "id"})", "unknown"}}));
  {
    Notices n(*admin_);
    admin_->Exec("SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '{\"memberz\": \"id\"}')");
    EXPECT_EQ(n.all(), "") << "no daemon reported: nothing to compare with";
  }
  // A daemon last seen 10 minutes ago does not count; one seen now does.
  admin_->Exec(
      "INSERT INTO tenantcache.daemons (daemon_role, daemon_id, namespaces, last_seen) VALUES "
      "('old', 'h:/c', '{memberz,tenant}', now() - interval '10 minutes')");
  EXPECT_EQ(admin_->Scalar("SELECT count(*) FROM tenantcache.watched_tables WHERE unserved_keys IS NOT NULL"),
            "0");
  admin_->Exec(
      "INSERT INTO tenantcache.daemons (daemon_role, daemon_id, namespaces) VALUES "
      "('new', 'h:/c', '{tenant}')");
  EXPECT_EQ(admin_->Exec(query),
            (std::vector<std::vector<std::string>>{
                {"fleet.fleet_registry", "id", "4", registry_keys, "{tenant_by_host,tenant_by_slug}"},
                {"fleet.user_accounts", "-", "4", R"({"memberz": "id"})", "{memberz}"}}));
}

// Upgrading an installation of version 2 (tests/data/install-v2.sql) keeps
// its triggers, shows their keys and adds what versions 3 and 4 bring; installing
// again changes nothing.
TEST_F(MisconfigSqlTest, UpgradingFromVersion2ShowsTheKeysOfTablesWatchedBefore) {
  const std::string db = SharedCluster().CreateDatabase();
  PgConn admin(SharedCluster().Conninfo(db));
  admin.Exec(ReadFile(TC_SOURCE_DIR "/tests/data/install-v2.sql"));
  admin.Exec(ReadFile(SqlDir() + "/examples/fleet.sql"));
  ASSERT_EQ(admin.Scalar("SELECT tenantcache.schema_version()"), "2");
  admin.Exec(ReadFile(SqlDir() + "/install.sql"));
  const std::string state =
      "SELECT (SELECT string_agg(version::text, ',' ORDER BY version) FROM tenantcache.version) || ' ' || "
      "(SELECT string_agg(keys::text, ' ' ORDER BY table_name::text) FROM tenantcache.watched_tables)";
  const std::string expected =
      R"(1,2,3,4,5,6 {"tenant": "id", "tenant_by_host": "host", "tenant_by_slug": "slug"} {"user": "id"})";
  EXPECT_EQ(admin.Scalar(state), expected);
  admin.Exec(ReadFile(SqlDir() + "/install.sql"));
  EXPECT_EQ(admin.Scalar(state), expected);
  EXPECT_EQ(admin.Scalar("SELECT to_regprocedure('tenantcache.grant_daemon(regrole)') IS NOT NULL"), "t");
}

// The registry stores a host as the customer typed it; host keys
// reach the query lower-cased (and without a trailing dot or port). The
// example's query and index make it found, and invalidated, whatever case is
// looked up, and keep two spellings of one host from naming two tenants.
TEST_F(MisconfigSqlTest, AMixedCaseHostIsFoundWhateverTheCaseLookedUp) {
  const std::string tenant = TenantId(900);
  admin_->Exec("INSERT INTO fleet.fleet_registry (id, yacht_code, slug, host, tenant_url) VALUES ('" +
               tenant + "', 'INI', 'initech', 'Initech.Example.COM', 'https://initech.example.com')");
  StartDaemon(Conninfo());
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  OpenCache();
  for (const std::string key : {"initech.example.com", "INITECH.EXAMPLE.COM", "Initech.Example.COM.:443"}) {
    std::string code;
    EXPECT_EQ(Lookup("tenant_by_host", key, "yacht_code", &code), TC_FOUND) << key;
    EXPECT_EQ(code, "INI") << key;
  }
  // The trigger sends the host as stored; the daemon normalises it.
  admin_->Exec("UPDATE fleet.fleet_registry SET yacht_code = 'INI2' WHERE id = '" + tenant + "'");
  std::string code;
  EXPECT_TRUE(WaitFor([&] {
    return Lookup("tenant_by_host", "initech.example.com", "yacht_code", &code) == TC_FOUND && code == "INI2";
  })) << code;
  EXPECT_TRUE(Contains(admin_->ExecError("INSERT INTO fleet.fleet_registry (id, yacht_code, slug, host, "
                                         "tenant_url) VALUES ('" +
                                         TenantId(901) + "', 'X', 'x', 'initech.example.com', 'https://x')"),
                       "fleet_registry_host_lower"));
  // The query's expression is the index's.
  admin_->Exec("SET enable_seqscan = off");
  std::string plan;
  for (const auto& row : admin_->Exec("EXPLAIN SELECT id FROM fleet.fleet_registry WHERE lower(host) = 'x'"))
    plan += row[0] + "\n";
  EXPECT_TRUE(Contains(plan, "Index Scan using fleet_registry_host_lower")) << plan;
}

}  // namespace
}  // namespace tenantcache::test
