// Attacks on the SQL against a real PostgreSQL: a role with nothing but PUBLIC's rights
// (and a table owner allowed to watch its tables) tries to run code with the
// rights of the role that installed sql/install.sql, to write the invalidation
// log or to change the settings; every attempt is run for real and must fail,
// while the watched tables keep sending exactly the messages they should.
// Also the upgrade from version 1 and uninstalling around another role's
// trigger.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/daemon_process.h"
#include "support/pg_cluster.h"
#include "support/sql_messages.h"
#include "support/test_cache.h"

namespace tenantcache::test {
namespace {

using namespace std::chrono_literals;

const std::string kU1 = "00000000-0001-4000-8000-000000000001";
const std::string kU2 = "00000000-0001-4000-8000-000000000002";
const std::string kT1 = "00000000-0000-4000-8000-000000000001";
const std::string kT2 = "00000000-0000-4000-8000-000000000002";

std::string Version1Install() { return ReadFile(TC_SOURCE_DIR "/tests/data/install-v1.sql"); }

// The attack, as `role` in a session of its own, with nothing but
// PUBLIC's rights: an enum type of its own (to_jsonb looks up casts to json
// for types that are not built in) whose cast to json runs `statements`, a
// temporary table with a column of that type, and on_change attached to it.
// Returns the statements that set it up and the one that attaches the
// trigger; inserting into pg_temp.loot then fires it.
struct Attack {
  std::string setup, attach;
};

Attack CastAttack(const std::vector<std::string>& statements) {
  std::string body;
  for (const auto& s : statements) body += "EXECUTE $s$" + s + "$s$; ";
  return {
      "CREATE TYPE pg_temp.evil AS ENUM ('x');"
      "CREATE FUNCTION pg_temp.evil_json(pg_temp.evil) RETURNS json LANGUAGE plpgsql AS $f$ BEGIN " +
          body +
          "RETURN '\"x\"'; END $f$;"
          "CREATE CAST (pg_temp.evil AS json) WITH FUNCTION pg_temp.evil_json(pg_temp.evil);"
          "CREATE TEMP TABLE loot (id text, e pg_temp.evil)",
      "CREATE TRIGGER loot_tc AFTER INSERT ON pg_temp.loot REFERENCING NEW TABLE AS tc_new FOR EACH "
      "STATEMENT EXECUTE FUNCTION tenantcache.on_change('', '{\"user\": \"id\"}', '')"};
}

class SqlSecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log_start_ = SharedCluster().LogSize();
    db_ = SharedCluster().CreateDatabase();
    admin_ = std::make_unique<PgConn>(SharedCluster().Conninfo(db_));
  }
  void TearDown() override {
    if (HasFailure())
      std::fprintf(stderr, "--- server log ---\n%s\n", SharedCluster().LogTail(8000, log_start_).c_str());
  }

  // A new login role with only PUBLIC's rights, named for this test's
  // database (roles belong to the whole cluster).
  std::string Role(const std::string& name) {
    std::string role = name + "_" + db_;
    admin_->Exec("CREATE ROLE " + role + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE");
    return role;
  }
  std::unique_ptr<PgConn> Connect(const std::string& role) {
    return std::make_unique<PgConn>(SharedCluster().Conninfo(db_, role));
  }
  std::unique_ptr<PgListener> Listen(const std::string& channel = "tenantcache") {
    return std::make_unique<PgListener>(SharedCluster().Conninfo(db_), channel);
  }
  // The example schema with its watched tables, owned by `owner` (who must
  // be allowed to watch tables once the first write happens).
  void InstallExample(const std::string& owner) {
    admin_->Exec(ReadFile(SqlDir() + "/examples/fleet.sql"));
    admin_->Exec("SELECT fleet.generate(20, 4)");
    admin_->Exec("ALTER SCHEMA fleet OWNER TO " + owner + "; ALTER TABLE fleet.user_accounts OWNER TO " +
                 owner + "; ALTER TABLE fleet.fleet_registry OWNER TO " + owner +
                 "; ALTER TABLE fleet.roles OWNER TO " + owner +
                 "; DELETE FROM tenantcache.invalidation_log");
  }
  std::string LogRows() { return admin_->Scalar("SELECT count(*) FROM tenantcache.invalidation_log"); }
  bool IsSuperuser(const std::string& role) {
    return admin_->Scalar("SELECT rolsuper FROM pg_roles WHERE rolname = '" + role + "'") == "t";
  }

  size_t log_start_ = 0;
  std::string db_;
  std::unique_ptr<PgConn> admin_;  // the superuser
};

TEST_F(SqlSecurityTest, APublicRoleCannotRunCodeAsTheSuperuserInstaller) {
  const std::string mallory = Role("mallory");
  const Attack attack = CastAttack({"ALTER ROLE " + mallory + " SUPERUSER"});

  // The control: against version 1, the attack makes mallory superuser. (In
  // its own database, so that this test's schema is the new one.)
  {
    const std::string v1_db = SharedCluster().CreateDatabase();
    PgConn(SharedCluster().Conninfo(v1_db)).Exec(Version1Install());
    PgConn m(SharedCluster().Conninfo(v1_db, mallory));
    m.Exec(attack.setup);
    m.Exec(attack.attach);
    m.Exec("INSERT INTO pg_temp.loot VALUES ('k', 'x')");
    ASSERT_TRUE(IsSuperuser(mallory)) << "the attack no longer works on version 1: this test proves nothing";
    admin_->Exec("ALTER ROLE " + mallory + " NOSUPERUSER");
  }

  admin_->Exec(ReadFile(SqlDir() + "/install.sql"));
  const std::string app = Role("app");
  admin_->Exec("GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO " + app);
  InstallExample(app);
  auto listener = Listen();
  auto m = Connect(mallory);
  m->Exec(attack.setup);
  EXPECT_TRUE(Contains(m->ExecError(attack.attach), "permission denied for function tenantcache.on_change"));
  const std::string refused =
      m->ExecError("SELECT tenantcache.watch_table('pg_temp.loot', NULL, '{\"user\": \"id\"}')");
  EXPECT_TRUE(Contains(refused, "role " + mallory + " may not watch tables")) << refused;
  EXPECT_TRUE(Contains(refused, "GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO " + mallory))
      << refused;
  m->Exec("INSERT INTO pg_temp.loot VALUES ('k', 'x')");
  EXPECT_FALSE(IsSuperuser(mallory));
  EXPECT_EQ(listener->Drain(kQuiet), Messages{});
  EXPECT_EQ(LogRows(), "0");
  // Nor can it see or remove the other roles' watches.
  EXPECT_TRUE(
      Contains(m->ExecError("SELECT * FROM tenantcache.watched_tables"), "permission denied for view"));
  EXPECT_TRUE(
      Contains(m->ExecError("SELECT tenantcache.unwatch_table('fleet.user_accounts')"), "permission denied"));
  EXPECT_EQ(admin_->Scalar("SELECT count(*) FROM tenantcache.watched_tables"), "2");

  // The watched tables still invalidate, exactly.
  EXPECT_EQ(
      SentBy(*admin_, *listener, "UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU1 + "'", 1),
      Messages({"k user " + kU1}));
}

TEST_F(SqlSecurityTest, APublicRoleCannotLogFlushNotifyOrChangeSettings) {
  admin_->Exec(ReadFile(SqlDir() + "/install.sql"));
  const std::string mallory = Role("mallory");
  auto listener = Listen();
  auto m = Connect(mallory);
  // The TRUNCATE path (a flush) and the bulk path (one log row per key).
  m->Exec("CREATE TEMP TABLE bulk (id text)");
  EXPECT_TRUE(
      Contains(m->ExecError("CREATE TRIGGER bulk_trunc AFTER TRUNCATE ON pg_temp.bulk FOR EACH STATEMENT "
                            "EXECUTE FUNCTION tenantcache.on_change('', '{\"user\": \"id\"}', '')"),
               "permission denied for function tenantcache.on_change"));
  EXPECT_TRUE(Contains(
      m->ExecError("CREATE TRIGGER bulk_ins AFTER INSERT ON pg_temp.bulk REFERENCING NEW TABLE AS tc_new "
                   "FOR EACH STATEMENT EXECUTE FUNCTION tenantcache.on_change('', '{\"user\": \"id\"}', '')"),
      "permission denied for function tenantcache.on_change"));
  m->Exec("INSERT INTO pg_temp.bulk SELECT g::text FROM generate_series(1, 1000) g; TRUNCATE pg_temp.bulk");
  // Every function that runs with the installer's rights, called directly.
  for (const std::string call :
       {"tenantcache._emit('f', NULL, NULL)", "tenantcache._emit('k', 'user', 'x')",
        "tenantcache.on_change()", "tenantcache.flush()", "tenantcache.invalidate('user', 'x')",
        "tenantcache.invalidate_tenant('x')", "tenantcache.prune_log('0')"}) {
    const std::string e = m->ExecError("SELECT " + call);
    EXPECT_TRUE(Contains(e, "permission denied for function")) << call << ": " << e;
  }
  // The tables behind them.
  for (const std::string sql :
       {"UPDATE tenantcache.settings SET channel = 'lost'",
        "UPDATE tenantcache.settings SET log_enabled = false",
        "INSERT INTO tenantcache.invalidation_log (kind) VALUES ('f')",
        "DELETE FROM tenantcache.invalidation_log", "UPDATE tenantcache.log_horizon SET pruned_max_xid = 0",
        "SELECT * FROM tenantcache.invalidation_log",
        "INSERT INTO tenantcache.version (version) VALUES (99)"}) {
    const std::string e = m->ExecError(sql);
    EXPECT_TRUE(Contains(e, "permission denied for table")) << sql << ": " << e;
  }
  EXPECT_EQ(listener->Drain(kQuiet), Messages{});
  EXPECT_EQ(LogRows(), "0");
  EXPECT_EQ(admin_->Scalar("SELECT channel || ' ' || log_enabled FROM tenantcache.settings"),
            "tenantcache true");
  // And the product still works for a legitimate caller.
  EXPECT_EQ(SentBy(*admin_, *listener, "SELECT tenantcache.invalidate('user', 'fresh')", 1),
            Messages({"k user fresh"}));
}

TEST_F(SqlSecurityTest, ATriggerWhoseOwnerIsNotAllowedNeitherLogsNorNotifies) {
  admin_->Exec(ReadFile(SqlDir() + "/install.sql"));
  const std::string mallory = Role("mallory");
  auto listener = Listen();
  // A trigger attached while mallory was allowed (or before version 2),
  // then the grant is gone.
  admin_->Exec("GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO " + mallory);
  auto m = Connect(mallory);
  m->Exec(
      "CREATE TEMP TABLE mine (id text); SELECT tenantcache.watch_table('pg_temp.mine', NULL, '{\"user\": "
      "\"id\"}')");
  EXPECT_EQ(SentBy(*m, *listener, "INSERT INTO pg_temp.mine VALUES ('allowed')", 1),
            Messages({"k user allowed"}));
  admin_->Exec("REVOKE EXECUTE ON FUNCTION tenantcache.on_change() FROM " + mallory);
  admin_->Exec("DELETE FROM tenantcache.invalidation_log");
  for (const std::string write : {"INSERT INTO pg_temp.mine VALUES ('a')", "UPDATE pg_temp.mine SET id = 'b'",
                                  "DELETE FROM pg_temp.mine", "TRUNCATE pg_temp.mine"}) {
    const std::string e = m->ExecError(write);
    EXPECT_TRUE(Contains(e, "its owner " + mallory + " may not watch tables")) << write << ": " << e;
    EXPECT_TRUE(Contains(e, "GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO " + mallory)) << e;
  }
  EXPECT_EQ(listener->Drain(kQuiet), Messages{});
  EXPECT_EQ(LogRows(), "0");
  // Not even the superuser can watch a table for an owner not allowed to.
  admin_->Exec("CREATE TABLE public.theirs (id text); ALTER TABLE public.theirs OWNER TO " + mallory);
  const std::string e =
      admin_->ExecError("SELECT tenantcache.watch_table('public.theirs', NULL, '{\"user\": \"id\"}')");
  EXPECT_TRUE(Contains(e, "role " + mallory + " may not watch tables")) << e;
  EXPECT_EQ(admin_->Scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.theirs'::regclass"), "0");
}

TEST_F(SqlSecurityTest, AnAllowedOwnersCastRunsWithoutTheInstallersRights) {
  admin_->Exec(ReadFile(SqlDir() + "/install.sql"));
  const std::string app = Role("app");
  admin_->Exec("GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO " + app +
               "; CREATE SCHEMA a AUTHORIZATION " + app);
  auto listener = Listen();
  auto owner = Connect(app);
  // Casts to json and to text and an equality operator of its own, each
  // trying to make it superuser; a composite and an array column too.
  owner->Exec(
      "CREATE TYPE a.evil AS ENUM ('x', 'y');"
      "CREATE FUNCTION a.escalate() RETURNS void LANGUAGE plpgsql AS $f$ BEGIN EXECUTE 'ALTER ROLE " +
      app +
      " SUPERUSER'; END $f$;"
      "CREATE FUNCTION a.evil_json(a.evil) RETURNS json LANGUAGE sql AS $f$ SELECT a.escalate(); SELECT "
      "'\"x\"'::json $f$;"
      "CREATE FUNCTION a.evil_text(a.evil) RETURNS text LANGUAGE sql AS $f$ SELECT a.escalate(); SELECT 'x' "
      "$f$;"
      "CREATE FUNCTION a.evil_eq(a.evil, a.evil) RETURNS boolean LANGUAGE sql AS $f$ SELECT a.escalate(); "
      "SELECT "
      "true $f$;"
      "CREATE CAST (a.evil AS json) WITH FUNCTION a.evil_json(a.evil);"
      "CREATE CAST (a.evil AS text) WITH FUNCTION a.evil_text(a.evil);"
      "CREATE OPERATOR a.= (LEFTARG = a.evil, RIGHTARG = a.evil, FUNCTION = a.evil_eq);"
      "CREATE TYPE a.pair AS (n integer, e a.evil);"
      "CREATE TABLE a.t (id text, e a.evil, p a.pair, arr a.evil[]);"
      "SELECT tenantcache.watch_table('a.t', NULL, '{\"user\": \"id\"}')");
  // The payload is live: where the cast runs, it runs (and fails, as app).
  EXPECT_TRUE(Contains(owner->ExecError("SELECT to_jsonb('x'::a.evil)"), "must be superuser"));

  EXPECT_EQ(SentBy(*owner, *listener, "INSERT INTO a.t VALUES ('k1', 'x', ROW(1, 'x'), '{x}')", 1),
            Messages({"k user k1"}));
  EXPECT_EQ(SentBy(*owner, *listener, "UPDATE a.t SET e = 'y'", 1), Messages({"k user k1"}));
  EXPECT_EQ(SentBy(*owner, *listener, "UPDATE a.t SET e = 'y'", 0), Messages{})
      << "unchanged values send nothing";
  EXPECT_EQ(SentBy(*owner, *listener, "UPDATE a.t SET p = ROW(NULL, NULL)", 1), Messages({"k user k1"}));
  EXPECT_EQ(SentBy(*owner, *listener, "UPDATE a.t SET p = NULL", 1), Messages({"k user k1"}))
      << "a NULL composite differs from one whose fields are NULL";
  EXPECT_EQ(SentBy(*owner, *listener, "UPDATE a.t SET arr = '{x,y}'", 1), Messages({"k user k1"}));
  EXPECT_EQ(SentBy(*owner, *listener, "UPDATE a.t SET id = 'k2'", 2), Messages({"k user k1", "k user k2"}));
  EXPECT_EQ(SentBy(*owner, *listener, "DELETE FROM a.t", 1), Messages({"k user k2"}));
  EXPECT_FALSE(IsSuperuser(app));
  EXPECT_EQ(admin_->Scalar("SELECT string_agg(kind::text || ' ' || key, ',' ORDER BY seq) FROM "
                           "tenantcache.invalidation_log"),
            "k k1,k k1,k k1,k k1,k k1,k k1,k k2,k k2");
}

TEST_F(SqlSecurityTest, AgainstANonSuperuserInstallerARoleGainsNoTableAndCannotMoveTheChannel) {
  const std::string owner_role = Role("owner");
  const std::string mallory = Role("mallory");
  admin_->Exec("GRANT CREATE ON DATABASE " + db_ + " TO " + owner_role);
  auto owner = Connect(owner_role);
  owner->Exec(ReadFile(SqlDir() + "/install.sql"));
  admin_->Exec(ReadFile(SqlDir() + "/examples/fleet.sql") + ";SELECT fleet.generate(20, 4)");
  admin_->Exec("ALTER SCHEMA fleet OWNER TO " + owner_role + "; ALTER TABLE fleet.user_accounts OWNER TO " +
               owner_role + "; ALTER TABLE fleet.fleet_registry OWNER TO " + owner_role +
               "; ALTER TABLE fleet.roles OWNER TO " + owner_role);
  auto listener = Listen();
  auto m = Connect(mallory);
  const Attack attack = CastAttack({"GRANT ALL ON ALL TABLES IN SCHEMA fleet TO " + mallory,
                                    "UPDATE tenantcache.settings SET channel = 'lost'"});
  m->Exec(attack.setup);
  EXPECT_TRUE(Contains(m->ExecError(attack.attach), "permission denied for function tenantcache.on_change"));
  m->Exec("INSERT INTO pg_temp.loot VALUES ('k', 'x')");
  EXPECT_EQ(admin_->Scalar("SELECT has_table_privilege('" + mallory + "', 'fleet.user_accounts', 'SELECT')"),
            "f");
  EXPECT_EQ(admin_->Scalar("SELECT channel FROM tenantcache.settings"), "tenantcache");
  EXPECT_EQ(
      SentBy(*owner, *listener, "UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU1 + "'", 1),
      Messages({"k user " + kU1}));
}

TEST_F(SqlSecurityTest, WritersWithoutTheGrantSendExactlyTheSameMessages) {
  admin_->Exec(ReadFile(SqlDir() + "/install.sql"));
  const std::string app = Role("app");
  const std::string writer = Role("writer");
  admin_->Exec("GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO " + app);
  InstallExample(app);
  auto owner = Connect(app);
  owner->Exec("GRANT USAGE ON SCHEMA fleet TO " + writer +
              "; GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON " +
              "fleet.user_accounts, fleet.fleet_registry TO " + writer);
  auto w = Connect(writer);
  ASSERT_EQ(w->Scalar("SELECT has_function_privilege('tenantcache.on_change()', 'EXECUTE')"), "f");
  auto listener = Listen();
  // Every message sent, to compare with the log.
  Messages sent;
  auto write = [&](const std::string& sql, size_t expected) {
    Messages got = SentBy(*w, *listener, sql, expected);
    sent.insert(sent.end(), got.begin(), got.end());
    return got;
  };
  const std::string fresh = "00000000-0001-4000-8000-0000000000aa";
  EXPECT_EQ(write("INSERT INTO fleet.user_accounts (id, yacht_id, email, role) VALUES ('" + fresh + "', '" +
                      kT1 + "', 'x@y', 'crew')",
                  1),
            Messages({"k user " + fresh}));
  EXPECT_EQ(write("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU1 + "'", 1),
            Messages({"k user " + kU1}));
  EXPECT_EQ(write("UPDATE fleet.user_accounts SET last_login_at = now() WHERE id = '" + kU1 + "'", 0),
            Messages{});
  EXPECT_EQ(write("DELETE FROM fleet.user_accounts WHERE id = '" + kU2 + "'", 1),
            Messages({"k user " + kU2}));
  EXPECT_EQ(write("UPDATE fleet.fleet_registry SET slug = 'renamed' WHERE id = '" + kT2 + "'", 5),
            Messages({"k tenant " + kT2, "k tenant_by_host yacht-2.fleet.example.com",
                      "k tenant_by_slug renamed", "k tenant_by_slug yacht-2", "t " + kT2}));
  // A statement changing several rows: one message per changed row.
  Messages changed;
  for (const auto& row :
       admin_->Exec("SELECT 'k user ' || id FROM fleet.user_accounts WHERE role <> 'crew' ORDER BY 1"))
    changed.push_back(row[0]);
  ASSERT_GT(changed.size(), 2u);
  EXPECT_EQ(write("UPDATE fleet.user_accounts SET role = 'crew'", changed.size()), changed);
  EXPECT_EQ(write("TRUNCATE fleet.user_accounts", 1), Messages({"f"}));
  // The log holds exactly the messages sent.
  Messages logged;
  for (const auto& row :
       admin_->Exec("SELECT kind::text || coalesce(' ' || namespace, '') || coalesce(' ' || "
                    "key, '') FROM tenantcache.invalidation_log"))
    logged.push_back(row[0]);
  std::sort(logged.begin(), logged.end());
  std::sort(sent.begin(), sent.end());
  EXPECT_EQ(logged, sent);
}

TEST_F(SqlSecurityTest, UpgradingFromVersion1GrantsTheOwnersOfWatchedTablesAndSaysSo) {
  admin_->Exec(Version1Install());
  const std::string app = Role("app");
  const std::string writer = Role("writer");
  const std::string mallory = Role("mallory");
  InstallExample(app);
  admin_->Exec("GRANT USAGE ON SCHEMA fleet TO " + writer +
               "; GRANT SELECT, UPDATE ON fleet.user_accounts TO " + writer);
  // Version 1 let any role watch a table of its own; mallory's session
  // stays open across the upgrade.
  auto m = Connect(mallory);
  m->Exec(
      "CREATE TEMP TABLE mine (id text); SELECT tenantcache.watch_table('pg_temp.mine', NULL, '{\"user\": "
      "\"id\"}')");
  ASSERT_EQ(admin_->Scalar("SELECT tenantcache.schema_version()"), "1");

  std::string notices;
  {
    Notices n(*admin_);
    admin_->Exec(ReadFile(SqlDir() + "/install.sql"));
    notices = n.all();
  }
  EXPECT_TRUE(
      Contains(notices, "NOTICE:  tenantcache: granted EXECUTE on tenantcache.on_change() to role " + app +
                            ", the owner of watched table(s) fleet.fleet_registry, fleet.user_accounts"))
      << notices;
  EXPECT_TRUE(Contains(notices, "WARNING:  tenantcache: role " + mallory + " watches temporary table(s)"))
      << notices;
  EXPECT_FALSE(Contains(notices, "granted EXECUTE on tenantcache.on_change() to role " + mallory)) << notices;
  EXPECT_EQ(admin_->Scalar("SELECT tenantcache.schema_version()"), "6");
  EXPECT_EQ(
      admin_->Scalar("SELECT has_function_privilege('" + app + "', 'tenantcache.on_change()', 'EXECUTE')"),
      "t");
  EXPECT_EQ(
      admin_->Scalar("SELECT has_function_privilege('" + writer + "', 'tenantcache.on_change()', 'EXECUTE')"),
      "f");
  EXPECT_EQ(admin_->Scalar("SELECT to_regprocedure('tenantcache._watched(jsonb, text[])') IS NULL"), "t");

  // The triggers attached under version 1 keep working for the writer.
  auto listener = Listen();
  auto w = Connect(writer);
  EXPECT_EQ(
      SentBy(*w, *listener, "UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU1 + "'", 1),
      Messages({"k user " + kU1}));
  // Mallory's does not.
  EXPECT_TRUE(Contains(m->ExecError("INSERT INTO pg_temp.mine VALUES ('x')"), "may not watch tables"));
  EXPECT_EQ(listener->Drain(kQuiet), Messages{});

  // Installing again changes nothing and says nothing more.
  const std::string acl =
      admin_->Scalar("SELECT proacl::text FROM pg_proc WHERE oid = 'tenantcache.on_change()'::regprocedure");
  {
    Notices n(*admin_);
    admin_->Exec(ReadFile(SqlDir() + "/install.sql"));
    EXPECT_FALSE(Contains(n.all(), "granted")) << n.all();
  }
  EXPECT_EQ(
      admin_->Scalar("SELECT proacl::text FROM pg_proc WHERE oid = 'tenantcache.on_change()'::regprocedure"),
      acl);
  EXPECT_EQ(admin_->Scalar("SELECT string_agg(version::text, ',' ORDER BY version) FROM tenantcache.version"),
            "1,2,3,4,5,6");
}

TEST_F(SqlSecurityTest, UninstallSucceedsAroundAnotherRolesTrigger) {
  const std::string owner_role = Role("owner");
  const std::string mallory = Role("mallory");
  admin_->Exec("GRANT CREATE ON DATABASE " + db_ + " TO " + owner_role);
  // Installed by a table owner, which lets mallory watch a temporary table
  // of its own and then takes the grant back.
  auto owner = Connect(owner_role);
  owner->Exec(ReadFile(SqlDir() + "/install.sql"));
  owner->Exec(
      "CREATE SCHEMA o; CREATE TABLE o.t (id text); SELECT tenantcache.watch_table('o.t', NULL, '{\"user\": "
      "\"id\"}')");
  owner->Exec("GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO " + mallory);
  auto m = Connect(mallory);
  m->Exec(
      "CREATE TEMP TABLE mine (id text); SELECT tenantcache.watch_table('pg_temp.mine', NULL, '{\"user\": "
      "\"id\"}')");
  owner->Exec("REVOKE EXECUTE ON FUNCTION tenantcache.on_change() FROM " + mallory);
  const std::string temp_table = admin_->Scalar(
      "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relname = 'mine' AND c.relpersistence = 't'");

  std::string notices;
  {
    Notices n(*owner);
    owner->Exec(ReadFile(SqlDir() + "/uninstall.sql"));
    notices = n.all();
  }
  EXPECT_TRUE(Contains(notices, "trigger tenantcache_ins on " + temp_table + ", owned by " + mallory +
                                    ", is removed with schema tenantcache"))
      << notices;
  EXPECT_EQ(admin_->Scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenantcache'"), "0");
  EXPECT_EQ(admin_->Scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tenantcache%'"), "0");
  // Both tables are writable again, without triggers.
  m->Exec("INSERT INTO pg_temp.mine VALUES ('x')");
  owner->Exec("INSERT INTO o.t VALUES ('x')");

  // Installed and removed by the superuser, with mallory's trigger left from
  // version 1 (any role could attach one then).
  admin_->Exec(Version1Install());
  m->Exec("SELECT tenantcache.watch_table('pg_temp.mine', NULL, '{\"user\": \"id\"}')");
  admin_->Exec(ReadFile(SqlDir() + "/install.sql"));
  admin_->Exec(ReadFile(SqlDir() + "/uninstall.sql"));
  EXPECT_EQ(admin_->Scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenantcache'"), "0");
  EXPECT_EQ(admin_->Scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tenantcache%'"), "0");
  m->Exec("INSERT INTO pg_temp.mine VALUES ('y')");
  // A normal installation comes and goes too, and works in between.
  admin_->Exec(ReadFile(SqlDir() + "/install.sql"));
  admin_->Exec("GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO " + owner_role);
  owner->Exec("SELECT tenantcache.watch_table('o.t', NULL, '{\"user\": \"id\"}')");
  auto listener = Listen();
  EXPECT_EQ(SentBy(*owner, *listener, "INSERT INTO o.t VALUES ('z')", 1), Messages({"k user z"}));
  admin_->Exec(ReadFile(SqlDir() + "/uninstall.sql"));
  EXPECT_EQ(admin_->Scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tenantcache%'"), "0");
}

// The operator who upgrades with tenantcachectl sees whom the upgrade allowed
// to watch tables, and nothing of PostgreSQL's "already exists" notices.
TEST_F(SqlSecurityTest, TenantcachectlInstallSqlShowsWhomTheUpgradeAllowed) {
  admin_->Exec(Version1Install());
  const std::string app = Role("app");
  InstallExample(app);
  const CommandResult r = RunCommand(std::string(TC_CTL_BIN) + " install-sql --conninfo '" +
                                     SharedCluster().Conninfo(db_) + "' --sql-dir " + SqlDir());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(
      Contains(r.output, "NOTICE: tenantcache: granted EXECUTE on tenantcache.on_change() to role " + app))
      << r.output;
  EXPECT_FALSE(Contains(r.output, "already exists")) << r.output;
  EXPECT_EQ(admin_->Scalar("SELECT tenantcache.schema_version()"), "6");
}

// The daemon speaks to both versions (they send the same messages) and names
// a version 1 schema in its log as the hole it is.
TEST_F(SqlSecurityTest, TheDaemonServesVersion2AndWarnsAboutVersion1) {
  const std::string kWarning = "tenantcache schema version 1 lets any database role run code";
  auto log_shows = [](const DaemonProcess& d, const std::string& what) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (d.Log().find(what) == std::string::npos) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(10ms);  // the log is a file: poll it until the deadline
    }
    return true;
  };
  for (const bool v1 : {false, true}) {
    SCOPED_TRACE(v1 ? "version 1" : "version 2");
    const std::string db = SharedCluster().CreateDatabase();
    PgConn admin(SharedCluster().Conninfo(db));
    admin.Exec(v1 ? Version1Install() : ReadFile(SqlDir() + "/install.sql"));
    admin.Exec(ReadFile(SqlDir() + "/examples/fleet.sql") + ";SELECT fleet.generate(20, 4)");
    TempDir dir;
    DaemonProcess daemon(dir.path(), FleetConfig(dir.path(), SharedCluster().Conninfo(db)));
    ASSERT_TRUE(daemon.WaitReady()) << daemon.Log();
    if (v1)
      EXPECT_TRUE(log_shows(daemon, kWarning)) << daemon.Log();
    else
      EXPECT_EQ(daemon.Log().find(kWarning), std::string::npos) << daemon.Log();
  }
}

// What a role that may create objects in public plants there (every role
// could before PostgreSQL 15): format(`format_args`) and an operator
// int2 & int4, each matching better than pg_catalog's and recording in
// public.loot whom it ran as (kLoot reads it). Checks that the plant runs,
// through `format_call` and the operator, where the path is the default,
// then empties public.loot.
const char* const kLoot = "SELECT coalesce(string_agg(DISTINCT what, ', '), '') FROM public.loot";
void PlantInPublic(PgConn& admin, const std::string& db, const std::string& format_args,
                   const std::string& format_call) {
  const std::string mallory = "tc_mallory_" + db;
  admin.Exec("CREATE ROLE " + mallory + " LOGIN; GRANT CREATE ON SCHEMA public TO " + mallory);
  PgConn attacker(SharedCluster().Conninfo(db, mallory));
  attacker.Exec(
      "CREATE TABLE public.loot (what text); GRANT INSERT ON public.loot TO PUBLIC;"
      "CREATE FUNCTION public.format(" +
      format_args +
      ") RETURNS text LANGUAGE sql AS "
      "$$ INSERT INTO public.loot VALUES ('format as ' || current_user) RETURNING 'SELECT 1' $$;"
      "CREATE FUNCTION public.loot_and(int2, int4) RETURNS int4 LANGUAGE sql AS "
      "$$ INSERT INTO public.loot VALUES ('& as ' || current_user) RETURNING 0 $$;"
      "CREATE OPERATOR public.& (LEFTARG = int2, RIGHTARG = int4, FUNCTION = public.loot_and)");
  admin.Exec("SELECT " + format_call + ", 1::int2 & 16");
  ASSERT_EQ(admin.Scalar(kLoot), "& as postgres, format as postgres");
  admin.Exec("DELETE FROM public.loot");
}

// A database role that may create objects in public (every role could
// before PostgreSQL 15) plants there a function and an operator that match
// the arguments of the daemon's own catalog queries better than
// pg_catalog's do. They run for a session whose search_path is the default;
// the daemon pins its own, so neither runs with its rights.
TEST_F(SqlSecurityTest, FunctionsAndOperatorsPlantedInPublicDoNotRunAsTheDaemon) {
  const std::string db = SharedCluster().CreateDatabase();
  PgConn admin(SharedCluster().Conninfo(db));
  admin.Exec(ReadFile(SqlDir() + "/install.sql"));
  admin.Exec(ReadFile(SqlDir() + "/examples/fleet.sql") + ";SELECT fleet.generate(20, 4)");
  // A partition without the TRUNCATE trigger: the daemon's check formats its name.
  admin.Exec(
      "CREATE TABLE fleet.crew (id uuid, region text) PARTITION BY LIST (region);"
      "SELECT tenantcache.watch_table('fleet.crew', NULL, '{\"user\": \"id\"}');"
      "CREATE TABLE fleet.crew_us PARTITION OF fleet.crew FOR VALUES IN ('us')");
  ASSERT_NO_FATAL_FAILURE(PlantInPublic(admin, db, "text, regclass, regclass",
                                        "format('%s %s', 'pg_class'::regclass, 'pg_proc'::regclass)"));
  const std::string loot = kLoot;

  TempDir dir;
  DaemonProcess daemon(dir.path(), FleetConfig(dir.path(), SharedCluster().Conninfo(db)));
  ASSERT_TRUE(daemon.WaitReady()) << daemon.Log();
  // Its checks ran once it names a partition.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (daemon.Log().find("have no tenantcache TRUNCATE trigger") == std::string::npos) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << daemon.Log();
    std::this_thread::sleep_for(10ms);  // the log is a file: poll it until the deadline
  }
  EXPECT_EQ(admin.Scalar(loot), "");
  EXPECT_NE(daemon.Log().find("partitions fleet.crew_us (of fleet.crew) have no"), std::string::npos)
      << daemon.Log();
}

// The same plant before install.sql runs: nothing of it is called by the
// installation, bound into the view watched_tables (which the installer
// and the daemon roles read), or called by uninstall.sql, each run as the
// superuser.
TEST_F(SqlSecurityTest, FunctionsAndOperatorsPlantedInPublicRunNeitherAtInstallNorUninstall) {
  const std::string db = SharedCluster().CreateDatabase();
  PgConn admin(SharedCluster().Conninfo(db));
  ASSERT_NO_FATAL_FAILURE(
      PlantInPublic(admin, db, "text, name, regclass", "format('%I %s', 'a'::name, 'pg_class'::regclass)"));
  const std::string loot = kLoot;

  admin.Exec(ReadFile(SqlDir() + "/install.sql"));
  admin.Exec(
      "CREATE TABLE public.accounts (id text PRIMARY KEY, role text);"
      "SELECT tenantcache.watch_table('public.accounts', NULL, '{\"user\": \"id\"}', ARRAY['role'])");
  EXPECT_EQ(admin.Scalar("SELECT table_name || ' ' || triggers FROM tenantcache.watched_tables"),
            "accounts 4");
  EXPECT_EQ(admin.Scalar(loot), "") << "install.sql, watch_table or watched_tables";
  admin.Exec(ReadFile(SqlDir() + "/uninstall.sql"));
  EXPECT_EQ(admin.Scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.accounts'::regclass"), "0");
  EXPECT_EQ(admin.Scalar(loot), "") << "uninstall.sql";
}

}  // namespace
}  // namespace tenantcache::test
