// The write path (trigger spec 8) against a real PostgreSQL: triggers of
// versions 1 and 4 and of spec 5 attached to three tables are replaced in
// place by install.sql and then send exactly the messages they sent before;
// an installer that may not replace them is stopped before anything
// changes; a write that changes nothing watched runs no tenantcache
// function; the row-level WHEN clauses see what BEFORE triggers, savepoints
// and cascaded statements do; a write is sent whichever table its statement
// names (a partition, an inheritance parent) and under
// session_replication_role = replica when the triggers fire ALWAYS, which
// watching a table again keeps; and pending state a session plants is
// ignored.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support/pg_cluster.h"
#include "support/sql_messages.h"
#include "support/test_cache.h"

namespace tenantcache::test {
namespace {

const std::string kT1 = "00000000-0000-4000-8000-000000000001";
const std::string kT2 = "00000000-0000-4000-8000-000000000002";
const std::string kU1 = "00000000-0001-4000-8000-000000000001";
const std::string kU2 = "00000000-0001-4000-8000-000000000002";

// A third watched table, beside the example's two: badges keyed by code,
// pointing at a user (a key change of the user cascades to its badges).
const char* kBadges =
    "CREATE TABLE fleet.badges (code text PRIMARY KEY, user_id uuid REFERENCES fleet.user_accounts (id) "
    "ON UPDATE CASCADE, label text);"
    "INSERT INTO fleet.badges SELECT 'B' || n, fleet.user_id(n), 'badge' FROM generate_series(1, 8) n;"
    "SELECT tenantcache.watch_table('fleet.badges', NULL, '{\"badge\": \"code\"}', ARRAY['user_id']);";

class SqlWritePathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log_start_ = SharedCluster().LogSize();
    db_ = SharedCluster().CreateDatabase();
    conn_ = std::make_unique<PgConn>(SharedCluster().Conninfo(db_));
  }
  void TearDown() override {
    if (HasFailure())
      std::fprintf(stderr, "--- server log ---\n%s\n", SharedCluster().LogTail(8000, log_start_).c_str());
  }
  // The example schema, the badges and 20 users of 4 tenants, watched by
  // the installation of `install` (a file of install.sql's version).
  void InstallWith(const std::string& install) {
    conn_->Exec(ReadFile(install));
    conn_->Exec(ReadFile(SqlDir() + "/examples/fleet.sql"));
    conn_->Exec("SELECT fleet.generate(20, 4)");
    conn_->Exec(kBadges);
    conn_->Exec("DELETE FROM tenantcache.invalidation_log");
  }
  void Listen() { listener_ = std::make_unique<PgListener>(SharedCluster().Conninfo(db_), "tenantcache"); }
  Messages After(const std::string& sql, size_t expected) {
    return SentBy(*conn_, *listener_, sql, expected);
  }
  // "statement-level row-level" trigger counts of a table's tenantcache triggers.
  std::string TriggerLevels(const std::string& table) {
    return conn_->Scalar(
        "SELECT count(*) FILTER (WHERE tgtype & 1 = 0) || ' ' || count(*) FILTER (WHERE tgtype & 1 = 1 AND "
        "pg_get_triggerdef(oid) LIKE '%WHEN (%tenantcache.pend(%') FROM pg_trigger WHERE tgrelid = '" +
        table + "'::regclass AND tgfoid = 'tenantcache.on_change()'::regprocedure");
  }

  size_t log_start_ = 0;
  std::string db_;
  std::unique_ptr<PgConn> conn_;
  std::unique_ptr<PgListener> listener_;
};

// Every guarantee of the triggers, on tables whose triggers an older
// version attached and install.sql replaced (no watch_table call).
void ExpectTheMessagesOfVersion5(SqlWritePathTest& t, PgConn& conn, PgListener& listener) {
  auto after = [&](const std::string& sql, size_t expected) { return SentBy(conn, listener, sql, expected); };
  const std::string fresh = "00000000-0001-4000-8000-0000000000aa";
  EXPECT_EQ(after("INSERT INTO fleet.user_accounts (id, yacht_id, email, role) VALUES ('" + fresh + "', '" +
                      kT1 + "', 'x@y', 'crew')",
                  1),
            Messages({"k user " + fresh}));
  EXPECT_EQ(after("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU1 + "'", 1),
            Messages({"k user " + kU1}));
  EXPECT_EQ(after("UPDATE fleet.user_accounts SET last_login_at = now(), email = 'e@x'", 0), Messages{});
  EXPECT_EQ(after("UPDATE fleet.user_accounts SET role = role", 0), Messages{});
  EXPECT_EQ(after("UPDATE fleet.badges SET label = 'renamed'", 0), Messages{});
  EXPECT_EQ(after("UPDATE fleet.badges SET code = 'B1x' WHERE code = 'B1'", 2),
            Messages({"k badge B1", "k badge B1x"}));
  EXPECT_EQ(after("UPDATE fleet.fleet_registry SET slug = 'renamed' WHERE id = '" + kT1 + "'", 5),
            Messages({"k tenant " + kT1, "k tenant_by_host yacht-1.fleet.example.com",
                      "k tenant_by_slug renamed", "k tenant_by_slug yacht-1", "t " + kT1}));
  EXPECT_EQ(after("UPDATE fleet.fleet_registry SET plan = 'premium' WHERE id = '" + kT2 + "'", 4),
            Messages({"k tenant " + kT2, "k tenant_by_host yacht-2.fleet.example.com",
                      "k tenant_by_slug yacht-2", "t " + kT2}));
  EXPECT_EQ(after("DELETE FROM fleet.user_accounts WHERE id = '" + fresh + "'", 1),
            Messages({"k user " + fresh}));
  EXPECT_EQ(
      after("BEGIN; UPDATE fleet.user_accounts SET role = 'owner' WHERE id = '" + kU2 + "'; ROLLBACK", 0),
      Messages{});
  // Bulk: every tenant's row changes without a key change: one message per
  // tenant; every user's role: one flush.
  conn.Exec("UPDATE tenantcache.settings SET bulk_threshold = 6");
  EXPECT_EQ(after("UPDATE fleet.fleet_registry SET plan = 'fleet'", 4),
            Messages({"t 00000000-0000-4000-8000-000000000001", "t 00000000-0000-4000-8000-000000000002",
                      "t 00000000-0000-4000-8000-000000000003", "t 00000000-0000-4000-8000-000000000004"}));
  EXPECT_EQ(
      after("UPDATE fleet.user_accounts SET role = CASE role WHEN 'crew' THEN 'guest' ELSE 'crew' END", 1),
      Messages({"f"}));
  conn.Exec("UPDATE tenantcache.settings SET bulk_threshold = 1000");
  EXPECT_EQ(after("TRUNCATE fleet.badges", 1), Messages({"f"}));
  // The log holds what was sent: the last flush is its last row.
  EXPECT_EQ(conn.Scalar("SELECT kind FROM tenantcache.invalidation_log ORDER BY seq DESC LIMIT 1"), "f");
  (void)t;
}

// An older install.sql, and the "statement-level row-level" trigger counts
// (TriggerLevels) it leaves on a watched table.
struct OlderInstall {
  const char* file;
  const char* levels;
};

class SqlWritePathUpgradeTest : public SqlWritePathTest,
                                public ::testing::WithParamInterface<OlderInstall> {};

TEST_P(SqlWritePathUpgradeTest, OlderTriggersOnThreeTablesAreReplacedInPlaceAndSendTheSameMessages) {
  InstallWith(std::string(TC_SOURCE_DIR "/tests/data/") + GetParam().file);
  for (const char* table : {"fleet.user_accounts", "fleet.fleet_registry", "fleet.badges"})
    ASSERT_EQ(TriggerLevels(table), GetParam().levels) << table << ": the fixture's triggers";
  // Each table's spec, as its triggers' first three arguments hold it.
  const std::string specs =
      "SELECT string_agg(DISTINCT tgrelid::regclass::text || ' ' || "
      "array_to_string((string_to_array(encode(tgargs, 'escape'), '\\000'))[1:3], '|'), '; ') FROM "
      "pg_trigger "
      "WHERE tgfoid = 'tenantcache.on_change()'::regprocedure";
  const std::string before = conn_->Scalar(specs);
  ASSERT_EQ(
      before,
      "fleet.badges |{\"badge\": \"code\"}|{code,user_id}; fleet.fleet_registry id|{\"tenant\": \"id\", "
      "\"tenant_by_host\": \"host\", \"tenant_by_slug\": \"slug\"}|; fleet.user_accounts |{\"user\": "
      "\"id\"}|{active,id,role,yacht_id}");

  conn_->Exec(ReadFile(SqlDir() + "/install.sql"));
  EXPECT_EQ(conn_->Scalar("SELECT tenantcache.schema_version()"), "6");
  for (const char* table : {"fleet.user_accounts", "fleet.fleet_registry", "fleet.badges"})
    EXPECT_EQ(TriggerLevels(table), "1 3") << table;
  EXPECT_EQ(conn_->Scalar(specs), before);
  // Spec 8: where the spec lists columns (and no BEFORE UPDATE trigger
  // could change them), the UPDATE trigger is a column trigger.
  EXPECT_EQ(
      conn_->Scalar("SELECT string_agg(tgrelid::regclass::text || ' ' || cardinality(tgattr::int2[]), ', ' "
                    "ORDER BY tgrelid::regclass::text) FROM pg_trigger WHERE tgfoid = "
                    "'tenantcache.on_change()'::regprocedure AND tgtype & 16 <> 0"),
      "fleet.badges 2, fleet.fleet_registry 0, fleet.user_accounts 4");
  EXPECT_EQ(conn_->Scalar("SELECT to_regprocedure('tenantcache._send_changes(jsonb[], boolean[], text, text, "
                          "jsonb)') IS NULL"),
            "t");
  Listen();
  ExpectTheMessagesOfVersion5(*this, *conn_, *listener_);

  // Installing again replaces nothing.
  const std::string triggers = conn_->Scalar(
      "SELECT string_agg(oid::text, ',' ORDER BY oid) FROM pg_trigger WHERE tgname LIKE 'tenantcache%'");
  conn_->Exec(ReadFile(SqlDir() + "/install.sql"));
  EXPECT_EQ(
      conn_->Scalar(
          "SELECT string_agg(oid::text, ',' ORDER BY oid) FROM pg_trigger WHERE tgname LIKE 'tenantcache%'"),
      triggers);
}

// install-v6.sql is schema version 6 with trigger spec 5 (statement-level
// triggers send), install-v6-spec7.sql with spec 7 (no column triggers).
INSTANTIATE_TEST_SUITE_P(FromVersion, SqlWritePathUpgradeTest,
                         ::testing::Values(OlderInstall{"install-v1.sql", "4 0"},
                                           OlderInstall{"install-v4.sql", "4 0"},
                                           OlderInstall{"install-v6.sql", "4 3"},
                                           OlderInstall{"install-v6-spec7.sql", "1 3"}));

// An installation of an older install.sql (`fixture`, in tests/data) by an
// installer role that may create schemas, and public.theirs, watched by
// another role the installer allowed to watch tables.
struct OtherOwnersTable {
  OtherOwnersTable(PgConn& admin, const std::string& db, const std::string& fixture)
      : installer("tc_installer_" + db),
        other("tc_other_" + db),
        roles(admin, "CREATE ROLE " + installer + " LOGIN; CREATE ROLE " + other +
                         " LOGIN; GRANT CREATE ON DATABASE " + db + " TO " + installer),
        inst(SharedCluster().Conninfo(db, installer)),
        owner(SharedCluster().Conninfo(db, other)) {
    inst.Exec(ReadFile(std::string(TC_SOURCE_DIR "/tests/data/") + fixture));
    inst.Exec("GRANT EXECUTE ON FUNCTION tenantcache.on_change() TO " + other);
    admin.Exec("CREATE TABLE public.theirs (id text); ALTER TABLE public.theirs OWNER TO " + other);
    owner.Exec("SELECT tenantcache.watch_table('public.theirs', NULL, '{\"label\": \"id\"}')");
  }
  // Runs `sql` on `admin` before the connections below are made.
  struct Setup {
    Setup(PgConn& admin, const std::string& sql) { admin.Exec(sql); }
  };
  std::string installer, other;
  Setup roles;
  PgConn inst, owner;
};

TEST_F(SqlWritePathTest, AnInstallerThatMayNotReplaceATablesTriggersIsStoppedBeforeAnythingChanges) {
  OtherOwnersTable t(*conn_, db_, "install-v4.sql");
  const std::string& installer = t.installer;
  const std::string& other = t.other;
  PgConn& inst = t.inst;
  PgConn& owner = t.owner;

  const std::string e = inst.ExecError(ReadFile(SqlDir() + "/install.sql"));
  EXPECT_TRUE(Contains(e, "the upgrade to version 5 replaces the triggers of the watched tables, and role " +
                              installer + " may not: public.theirs (owner " + other + ")"))
      << e;
  EXPECT_TRUE(Contains(e, "Run sql/install.sql as a superuser or as a role that is a member of those owners"))
      << e;
  EXPECT_EQ(conn_->Scalar("SELECT tenantcache.schema_version()"), "4");
  EXPECT_EQ(TriggerLevels("public.theirs"), "4 0");
  Listen();
  EXPECT_EQ(SentBy(owner, *listener_, "INSERT INTO public.theirs VALUES ('a')", 1), Messages({"k label a"}));
  // As a superuser it goes through, and the table is served the new way.
  conn_->Exec(ReadFile(SqlDir() + "/install.sql"));
  EXPECT_EQ(TriggerLevels("public.theirs"), "1 3");
  EXPECT_EQ(SentBy(owner, *listener_, "UPDATE public.theirs SET id = 'b'", 2),
            Messages({"k label a", "k label b"}));
}

// Spec 5's triggers (schema version 6) on a table the installer may not
// alter keep sending as they did: install.sql replaces the others and says
// which it left; a superuser's run replaces those too.
TEST_F(SqlWritePathTest, AnInstallerThatMayNotReplaceSpec5TriggersIsWarnedAndTheyKeepSending) {
  OtherOwnersTable t(*conn_, db_, "install-v6.sql");
  const std::string& installer = t.installer;
  const std::string& other = t.other;
  PgConn& inst = t.inst;
  PgConn& owner = t.owner;
  conn_->Exec("CREATE TABLE public.mine (id text); ALTER TABLE public.mine OWNER TO " + installer);
  inst.Exec("SELECT tenantcache.watch_table('public.mine', NULL, '{\"label\": \"id\"}')");

  {
    Notices n(inst);
    inst.Exec(ReadFile(SqlDir() + "/install.sql"));
    EXPECT_TRUE(Contains(n.all(),
                         "the upgrade to trigger spec 8 replaces the triggers of the watched tables, and "
                         "role " +
                             installer + " may not: public.theirs (owner " + other +
                             ") keep their older triggers"))
        << n.all();
    EXPECT_TRUE(Contains(n.all(), "Run sql/install.sql again as a superuser")) << n.all();
  }
  EXPECT_EQ(TriggerLevels("public.theirs"), "4 3");
  EXPECT_EQ(TriggerLevels("public.mine"), "1 3");
  Listen();
  EXPECT_EQ(SentBy(owner, *listener_, "INSERT INTO public.theirs VALUES ('a')", 1), Messages({"k label a"}));
  EXPECT_EQ(SentBy(inst, *listener_, "INSERT INTO public.mine VALUES ('m')", 1), Messages({"k label m"}));
  conn_->Exec(ReadFile(SqlDir() + "/install.sql"));
  EXPECT_EQ(TriggerLevels("public.theirs"), "1 3");
  EXPECT_EQ(SentBy(owner, *listener_, "UPDATE public.theirs SET id = 'b'", 2),
            Messages({"k label a", "k label b"}));
}

// A write that changes no watched column calls neither the function that
// records rows nor the one that sends: PostgreSQL stops at the WHEN clause.
TEST_F(SqlWritePathTest, AWriteThatChangesNothingWatchedRunsNoTenantcacheFunction) {
  InstallWith(SqlDir() + "/install.sql");
  const std::string calls =
      "SELECT coalesce(pg_stat_get_xact_function_calls('tenantcache.pend(text[])'::regprocedure), 0) || ' ' "
      "|| "
      "coalesce(pg_stat_get_xact_function_calls('tenantcache.on_change()'::regprocedure), 0)";
  conn_->Exec("SET track_functions = 'all'");
  conn_->Exec("BEGIN; UPDATE fleet.user_accounts SET last_login_at = now(), email = 'other@x'");
  EXPECT_EQ(conn_->Scalar(calls), "0 0") << "20 rows, no watched column named";
  conn_->Exec("UPDATE fleet.user_accounts SET role = role");
  EXPECT_EQ(conn_->Scalar(calls), "0 0") << "20 rows, watched column named but unchanged";
  conn_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU1 + "'");
  EXPECT_EQ(conn_->Scalar(calls), "1 1") << "one changed row: recorded, then sent";
  conn_->Exec("ROLLBACK");
}

// With watched columns, the UPDATE trigger is a column trigger, which
// PostgreSQL skips before its WHEN clause for an UPDATE that names none of
// them, on a table without BEFORE UPDATE triggers. A BEFORE trigger may
// change a watched column that the UPDATE did not name: on a table that has
// one, the trigger compares every UPDATE (watch_table says so), so the
// change is seen; one created after watch_table is named in watched_tables
// until watch_table runs again.
TEST_F(SqlWritePathTest, AWatchedColumnChangedByABeforeTriggerIsSeen) {
  InstallWith(SqlDir() + "/install.sql");
  const std::string update_trigger =
      "SELECT regexp_replace(pg_get_triggerdef(oid), ' ON .*', '') FROM pg_trigger WHERE tgrelid = "
      "'fleet.user_accounts'::regclass AND tgname = 'tenantcache_upd'";
  const std::string unseen =
      "SELECT unseen_before_update_triggers::text FROM tenantcache.watched_tables WHERE table_name = "
      "'fleet.user_accounts'::regclass";
  const std::string watch =
      "SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '{\"user\": \"id\"}', "
      "ARRAY['yacht_id', 'role', 'active'])";
  EXPECT_EQ(conn_->Scalar(update_trigger),
            "CREATE TRIGGER tenantcache_upd AFTER UPDATE OF active, id, role, yacht_id");
  EXPECT_EQ(conn_->Scalar(unseen), "{}");
  conn_->Exec(
      "CREATE FUNCTION fleet.demote() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.role := 'guest'; "
      "RETURN "
      "NEW; END $$;"
      "CREATE TRIGGER a_demote BEFORE UPDATE OF last_login_at ON fleet.user_accounts FOR EACH ROW EXECUTE "
      "FUNCTION fleet.demote()");
  EXPECT_EQ(conn_->Scalar(unseen), "{\"a_demote on fleet.user_accounts\"}");
  conn_->Exec("UPDATE fleet.user_accounts SET role = 'owner' WHERE id = '" + kU1 + "'");
  Listen();
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET last_login_at = now() WHERE id = '" + kU1 + "'", 0),
            Messages{})
      << "created after watch_table, not seen yet";
  conn_->Exec(watch);
  EXPECT_EQ(conn_->Scalar(unseen), "{}");
  EXPECT_EQ(conn_->Scalar(update_trigger), "CREATE TRIGGER tenantcache_upd AFTER UPDATE");
  conn_->Exec("UPDATE fleet.user_accounts SET role = 'owner' WHERE id = '" + kU1 + "'");
  Listen();
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET last_login_at = now() WHERE id = '" + kU1 + "'", 1),
            Messages({"k user " + kU1}));
  // Without it, watching again makes the column trigger again.
  conn_->Exec("DROP TRIGGER a_demote ON fleet.user_accounts;" + watch);
  EXPECT_EQ(conn_->Scalar(update_trigger),
            "CREATE TRIGGER tenantcache_upd AFTER UPDATE OF active, id, role, yacht_id");
}

// A watched partitioned table: a BEFORE trigger on one partition that
// changes a watched column is seen through the parent's triggers (each
// partition carries clones of them, which compare every UPDATE since that
// partition has one: see AWatchedColumnChangedByABeforeTriggerIsSeen); a
// statement that names a partition is
// sent too, and a TRUNCATE of one flushes; a partition created later is
// named in watched_tables until watch_table runs again; the upgrade path
// and uninstall.sql handle the parent's triggers and the partitions' own
// TRUNCATE triggers, and leave the clones to PostgreSQL.
TEST_F(SqlWritePathTest, APartitionedTableIsWatchedThroughItsPartitionsAndUninstalls) {
  InstallWith(SqlDir() + "/install.sql");
  conn_->Exec(
      "CREATE TABLE fleet.members (id int, region text, role text, note text) PARTITION BY LIST (region);"
      "CREATE TABLE fleet.members_eu PARTITION OF fleet.members FOR VALUES IN ('eu');"
      "CREATE TABLE fleet.members_us PARTITION OF fleet.members FOR VALUES IN ('us');"
      "INSERT INTO fleet.members VALUES (1, 'eu', 'crew', ''), (2, 'us', 'crew', '');"
      "CREATE FUNCTION fleet.promote() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.role := 'owner'; "
      "RETURN NEW; END $$;"
      "CREATE TRIGGER a_promote BEFORE UPDATE ON fleet.members_us FOR EACH ROW EXECUTE FUNCTION "
      "fleet.promote();"
      "SELECT tenantcache.watch_table('fleet.members', NULL, '{\"member\": \"id\"}', ARRAY['role'])");
  Listen();
  EXPECT_EQ(After("UPDATE fleet.members SET note = 'x'", 1), Messages({"k member 2"}));
  EXPECT_EQ(After("INSERT INTO fleet.members VALUES (3, 'eu', 'crew', '')", 1), Messages({"k member 3"}));
  // Statements that name a partition.
  EXPECT_EQ(After("UPDATE fleet.members_eu SET role = 'guest' WHERE id = 1", 1), Messages({"k member 1"}));
  EXPECT_EQ(After("INSERT INTO fleet.members_eu VALUES (4, 'eu', 'crew', '')", 1), Messages({"k member 4"}));
  EXPECT_EQ(After("DELETE FROM fleet.members_eu WHERE id = 4", 1), Messages({"k member 4"}));
  EXPECT_EQ(After("TRUNCATE fleet.members_us", 1), Messages({"f"}));
  const std::string watched =
      "SELECT string_agg(table_name::text || ' ' || partitions_without_truncate_trigger::text, '; ') FROM "
      "tenantcache.watched_tables WHERE table_name::text LIKE 'fleet.members%'";
  EXPECT_EQ(conn_->Scalar(watched), "fleet.members {}");
  // A partition created later: PostgreSQL clones the row triggers onto it,
  // not the statement-level TRUNCATE one.
  conn_->Exec("CREATE TABLE fleet.members_as PARTITION OF fleet.members FOR VALUES IN ('as')");
  EXPECT_EQ(conn_->Scalar(watched), "fleet.members {fleet.members_as}");
  EXPECT_EQ(After("INSERT INTO fleet.members_as VALUES (5, 'as', 'crew', '')", 1), Messages({"k member 5"}));
  conn_->Exec("SELECT tenantcache.watch_table('fleet.members', NULL, '{\"member\": \"id\"}', ARRAY['role'])");
  EXPECT_EQ(conn_->Scalar(watched), "fleet.members {}");
  EXPECT_EQ(After("TRUNCATE fleet.members_as", 1), Messages({"f"}));
  // unwatch_table takes the partitions' TRUNCATE triggers too.
  conn_->Exec("SELECT tenantcache.unwatch_table('fleet.members')");
  EXPECT_EQ(conn_->Scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tenantcache%'"), "12")
      << "the other three tables' 4 each";
  conn_->Exec("SELECT tenantcache.watch_table('fleet.members', NULL, '{\"member\": \"id\"}', ARRAY['role'])");
  conn_->Exec(ReadFile(SqlDir() + "/uninstall.sql"));
  EXPECT_EQ(conn_->Scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tenantcache%'"), "0");
  EXPECT_EQ(conn_->Scalar("SELECT count(*) FROM fleet.members"), "2");
}

// An inheritance child is watched by itself (row triggers are not
// inherited): a statement that names its parent reaches the child's rows,
// and their messages are sent.
TEST_F(SqlWritePathTest, AWatchedInheritanceChildIsSentThroughItsParent) {
  InstallWith(SqlDir() + "/install.sql");
  conn_->Exec(
      "CREATE TABLE fleet.people (id int, role text);"
      "CREATE TABLE fleet.crew (ship text) INHERITS (fleet.people);"
      "INSERT INTO fleet.crew VALUES (1, 'crew', 'a'), (2, 'crew', 'b');"
      "SELECT tenantcache.watch_table('fleet.crew', NULL, '{\"member\": \"id\"}', ARRAY['role'])");
  Listen();
  EXPECT_EQ(After("UPDATE fleet.people SET role = 'guest' WHERE id = 1", 1), Messages({"k member 1"}));
  EXPECT_EQ(After("DELETE FROM fleet.people WHERE id = 2", 1), Messages({"k member 2"}));
  EXPECT_EQ(After("UPDATE fleet.crew SET role = 'owner'", 1), Messages({"k member 1"}));
}

// Triggers set to fire ALWAYS (as on a logical replica, whose apply worker
// runs with session_replication_role = replica and fires row triggers only)
// send under replica mode, and watching the table again keeps that.
TEST_F(SqlWritePathTest, TriggersThatFireAlwaysSendInReplicaModeAndStaySoWhenWatchedAgain) {
  InstallWith(SqlDir() + "/install.sql");
  conn_->Exec(
      "ALTER TABLE fleet.user_accounts ENABLE ALWAYS TRIGGER tenantcache_upd;"
      "ALTER TABLE fleet.user_accounts DISABLE TRIGGER tenantcache_ins;"
      "SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '{\"user\": \"id\"}', ARRAY['role'])");
  EXPECT_EQ(conn_->Scalar(
                "SELECT string_agg(tgname || ' ' || tgenabled::text, ', ' ORDER BY tgname) FROM pg_trigger "
                "WHERE tgrelid = 'fleet.user_accounts'::regclass AND tgname LIKE 'tenantcache%'"),
            "tenantcache_del O, tenantcache_ins D, tenantcache_trunc O, tenantcache_upd A");
  Listen();
  EXPECT_EQ(
      After("SET session_replication_role = replica; UPDATE fleet.user_accounts SET role = 'guest' WHERE id "
            "= '" +
                kU1 + "'; RESET session_replication_role",
            1),
      Messages({"k user " + kU1}));
}

// Recorded rows are transaction-local settings: a savepoint rolled back
// takes its rows with it; the rest of the transaction is sent at commit.
TEST_F(SqlWritePathTest, ARolledBackSavepointSendsNothingOfItsRows) {
  InstallWith(SqlDir() + "/install.sql");
  Listen();
  EXPECT_EQ(After("BEGIN; UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU1 +
                      "'; SAVEPOINT s; UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU2 +
                      "'; ROLLBACK TO s; COMMIT",
                  1),
            Messages({"k user " + kU1}));
  // An error inside a PL/pgSQL exception block (a subtransaction) too.
  EXPECT_EQ(After("DO $$ BEGIN UPDATE fleet.user_accounts SET role = 'owner' WHERE id = '" + kU2 +
                      "'; RAISE EXCEPTION 'undo'; EXCEPTION WHEN raise_exception THEN NULL; END $$",
                  0),
            Messages{});
}

// A key change of a user cascades (ON UPDATE CASCADE) to its badges: the
// cascaded statement runs while the user's statement sends, and every row
// of both is sent.
TEST_F(SqlWritePathTest, ACascadedStatementSendsTheRowsOfBothTables) {
  InstallWith(SqlDir() + "/install.sql");
  const std::string new_id = "00000000-0001-4000-8000-0000000000ff";
  Listen();
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET id = '" + new_id + "' WHERE id = '" + kU1 + "'", 3),
            Messages({"k badge B1", "k user " + kU1, "k user " + new_id}));
  EXPECT_EQ(conn_->Scalar("SELECT user_id FROM fleet.badges WHERE code = 'B1'"), new_id);
}

// The recorded rows are the writing session's own settings. Values planted
// for the session (as SET, ALTER ROLE ... SET or ALTER DATABASE ... SET
// would) are not the writing transaction's: a write sends exactly its own
// messages, whether its rows take pend()'s path for one message or for
// several, and nothing is sent without a watched write.
TEST_F(SqlWritePathTest, PendingStatePlantedForASessionIsIgnored) {
  InstallWith(SqlDir() + "/install.sql");
  Listen();
  conn_->Exec(
      "SELECT set_config('tenantcache.pending', 'y', false), set_config('tenantcache.msgs', '\"k Bad x\"', "
      "false), set_config('tenantcache.count', '1', false), set_config('tenantcache.mode', 'T', false)");
  EXPECT_EQ(listener_->Drain(kQuiet), Messages{});
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU1 + "'", 1),
            Messages({"k user " + kU1}));
  EXPECT_EQ(After("UPDATE fleet.fleet_registry SET plan = 'premium' WHERE id = '" + kT2 + "'", 4),
            Messages({"k tenant " + kT2, "k tenant_by_host yacht-2.fleet.example.com",
                      "k tenant_by_slug yacht-2", "t " + kT2}));
  conn_->Exec("SELECT set_config('tenantcache.pending', pg_current_xact_id()::text, false)");
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET role = 'owner' WHERE id = '" + kU2 + "'", 1),
            Messages({"k user " + kU2}))
      << "a transaction id planted for the session is an earlier transaction's";
}

}  // namespace
}  // namespace tenantcache::test
