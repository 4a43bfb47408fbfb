// The SQL side against a real PostgreSQL: the exact NOTIFY messages the
// triggers and manual functions send, when they are sent, the invalidation
// log, bulk statements, installation and removal, and hostile values.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "support/pg_cluster.h"
#include "support/sql_messages.h"

namespace tenantcache::test {
namespace {

using namespace std::chrono_literals;

const std::string kT1 = "00000000-0000-4000-8000-000000000001";
const std::string kT2 = "00000000-0000-4000-8000-000000000002";
const std::string kU1 = "00000000-0001-4000-8000-000000000001";
const std::string kU2 = "00000000-0001-4000-8000-000000000002";

class SqlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log_start_ = SharedCluster().LogSize();
    db_ = SharedCluster().CreateDatabase();
    conn_ = std::make_unique<PgConn>(SharedCluster().Conninfo(db_));
    conn_->Exec(ReadFile(SqlDir() + "/install.sql"));
    conn_->Exec(ReadFile(SqlDir() + "/examples/fleet.sql"));
    conn_->Exec("SELECT fleet.generate(20, 4); DELETE FROM tenantcache.invalidation_log");
    listener_ = std::make_unique<PgListener>(SharedCluster().Conninfo(db_), "tenantcache");
  }
  void TearDown() override {
    if (HasFailure())
      std::fprintf(stderr, "--- server log ---\n%s\n", SharedCluster().LogTail(8000, log_start_).c_str());
  }

  // Runs `sql` and returns what the listener got for it.
  Messages After(const std::string& sql, size_t expected) {
    return SentBy(*conn_, *listener_, sql, expected);
  }

  size_t log_start_ = 0;
  std::string db_;
  std::unique_ptr<PgConn> conn_;
  std::unique_ptr<PgListener> listener_;
};

TEST_F(SqlTest, InsertUpdateDeleteSendTheKeysOfTheRow) {
  const std::string fresh = "00000000-0001-4000-8000-0000000000aa";
  EXPECT_EQ(After("INSERT INTO fleet.user_accounts (id, yacht_id, email, role) VALUES ('" + fresh + "', '" +
                      kT1 + "', 'x@y', 'crew')",
                  1),
            Messages({"k user " + fresh}));
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU1 + "'", 1),
            Messages({"k user " + kU1}));
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET active = false WHERE id = '" + kU1 + "'", 1),
            Messages({"k user " + kU1}));
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET yacht_id = '" + kT2 + "' WHERE id = '" + kU1 + "'", 1),
            Messages({"k user " + kU1}));
  EXPECT_EQ(After("DELETE FROM fleet.user_accounts WHERE id = '" + kU2 + "'", 1),
            Messages({"k user " + kU2}));
}

TEST_F(SqlTest, UpdatesOfUnwatchedColumnsOrToTheSameValuesSendNothing) {
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET last_login_at = now() WHERE id = '" + kU1 + "'", 0),
            Messages{});
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET email = 'other@x' WHERE id = '" + kU1 + "'", 0),
            Messages{});
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET role = role", 0), Messages{});
  EXPECT_EQ(After("UPDATE fleet.fleet_registry SET plan = plan", 0), Messages{});
}

TEST_F(SqlTest, AKeyChangeInvalidatesTheOldAndTheNewKey) {
  const std::string new_id = "00000000-0001-4000-8000-0000000000ff";
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET id = '" + new_id + "' WHERE id = '" + kU1 + "'", 2),
            Messages({"k user " + kU1, "k user " + new_id}));
  EXPECT_EQ(After("UPDATE fleet.fleet_registry SET slug = 'renamed' WHERE id = '" + kT1 + "'", 5),
            Messages({"k tenant " + kT1, "k tenant_by_host yacht-1.fleet.example.com",
                      "k tenant_by_slug renamed", "k tenant_by_slug yacht-1", "t " + kT1}));
}

TEST_F(SqlTest, RegistryChangesReachTheWholeTenant) {
  EXPECT_EQ(After("UPDATE fleet.fleet_registry SET plan = 'premium' WHERE id = '" + kT2 + "'", 4),
            Messages({"k tenant " + kT2, "k tenant_by_host yacht-2.fleet.example.com",
                      "k tenant_by_slug yacht-2", "t " + kT2}));
  const std::string t9 = "00000000-0000-4000-8000-000000000009";
  EXPECT_EQ(
      After("INSERT INTO fleet.fleet_registry (id, yacht_code, slug, host, tenant_url) VALUES ('" + t9 +
                "', 'Y9', 'nine', 'Nine.Example.com', 'https://nine')",
            4),
      Messages({"k tenant " + t9, "k tenant_by_host Nine.Example.com", "k tenant_by_slug nine", "t " + t9}));
}

TEST_F(SqlTest, RolledBackTransactionsSendNothingAndCommittedOnesSendAtCommit) {
  EXPECT_EQ(
      After("BEGIN; UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU1 + "'; ROLLBACK", 0),
      Messages{});
  conn_->Exec("BEGIN; UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU1 + "'");
  EXPECT_EQ(listener_->Drain(kQuiet), Messages{}) << "delivered before commit";
  EXPECT_EQ(After("COMMIT", 1), Messages({"k user " + kU1}));
  EXPECT_EQ(conn_->Scalar("SELECT count(*) FROM tenantcache.invalidation_log"), "1")
      << "the rolled-back message must not be logged either";
}

TEST_F(SqlTest, ManualFunctionsTakeEffectAtCommit) {
  conn_->Exec("BEGIN; SELECT tenantcache.invalidate('user', '" + kU1 +
              "'); SELECT tenantcache.invalidate_tenant('" + kT1 + "'); SELECT tenantcache.flush()");
  EXPECT_EQ(listener_->Drain(kQuiet), Messages{});
  EXPECT_EQ(After("COMMIT", 3), Messages({"f", "k user " + kU1, "t " + kT1}));
  EXPECT_EQ(After("BEGIN; SELECT tenantcache.flush(); ROLLBACK", 0), Messages{});
  EXPECT_NE(conn_->ExecError("SELECT tenantcache.invalidate('Bad NS', 'x')").find("invalid namespace"),
            std::string::npos);
}

TEST_F(SqlTest, TruncateSendsAFlush) {
  conn_->Exec(
      "CREATE TABLE t (id text PRIMARY KEY); SELECT tenantcache.watch_table('t', NULL, '{\"label\": "
      "\"id\"}')");
  EXPECT_EQ(After("INSERT INTO t VALUES ('a'), ('b')", 2), Messages({"k label a", "k label b"}));
  EXPECT_EQ(After("TRUNCATE t", 1), Messages({"f"}));
}

TEST_F(SqlTest, BulkStatementsSendABoundedNumberOfMessages) {
  conn_->Exec("TRUNCATE fleet.user_accounts");
  listener_->Drain(kQuiet);
  conn_->Exec("DELETE FROM fleet.fleet_registry; SELECT fleet.generate(100000, 1000)");
  listener_->Drain(2s);
  // 100k users change role: one flush, not 100k messages.
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET role = 'guest'", 1), Messages({"f"}));
  // Every tenant changes without a key change: one message per tenant.
  Messages per_tenant = After("UPDATE fleet.fleet_registry SET plan = 'fleet'", 1000);
  ASSERT_EQ(per_tenant.size(), 1000u);
  for (const auto& m : per_tenant) ASSERT_EQ(m.rfind("t ", 0), 0u) << m;
  // A bulk key change (new keys may have negative entries): a flush.
  EXPECT_EQ(After("UPDATE fleet.fleet_registry SET slug = slug || '-x'", 1), Messages({"f"}));
  // Bulk inserts: a flush.
  EXPECT_EQ(After("INSERT INTO fleet.user_accounts (id, yacht_id, email, role) SELECT gen_random_uuid(), "
                  "fleet.tenant_id(1), 'bulk', 'crew' FROM generate_series(1, 5000)",
                  1),
            Messages({"f"}));
  // Below the threshold, messages are per key.
  conn_->Exec("UPDATE tenantcache.settings SET bulk_threshold = 10");
  EXPECT_EQ(
      After("UPDATE fleet.user_accounts SET role = 'crew' WHERE id IN (fleet.user_id(1), fleet.user_id(2))",
            2)
          .size(),
      2u);
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET role = 'owner' WHERE email <> 'bulk' AND yacht_id = "
                  "fleet.tenant_id(3)",
                  1),
            Messages({"f"}));
}

TEST_F(SqlTest, PayloadsStayUnder8000BytesAndHostileValuesArriveIntact) {
  conn_->Exec(
      "CREATE TABLE h (k text, tenant text); SELECT tenantcache.watch_table('h', 'tenant', '{\"label\": "
      "\"k\"}')");
  const std::vector<std::string> hostile = {"it's",      "back\\slash",          "new\nline",
                                            "tab\there", "  spaces  ",           "1 k 5 user evil",
                                            "ünïcødé",   "$1; DROP TABLE h; --", std::string(255, 'x')};
  for (const auto& v : hostile) {
    std::string lit = "'";
    for (char c : v) lit += c == '\'' ? std::string("''") : std::string(1, c);
    lit += "'";
    conn_->Exec("INSERT INTO h VALUES (" + lit + ", 'T')");
    Messages raw = listener_->WaitFor(2, 10s);
    ASSERT_EQ(raw.size(), 2u) << v;
    std::sort(raw.begin(), raw.end());
    const Parsed key = Parse(raw[0]);
    EXPECT_EQ(key.kind, "k");
    EXPECT_EQ(key.rest, "label " + v) << "value changed on the way";
    EXPECT_LT(raw[0].size(), 8000u);
  }
  // NULL keys have nothing to invalidate; the tenant message still goes.
  EXPECT_EQ(After("INSERT INTO h VALUES (NULL, 'T2')", 1), Messages({"t T2"}));
  // A key longer than any key kind allows can never be cached: no message.
  EXPECT_EQ(After("INSERT INTO h VALUES (repeat('y', 300), NULL)", 0), Messages{});
  // A tenant id too long for a payload becomes a flush, never an error.
  EXPECT_EQ(After("INSERT INTO h VALUES (NULL, repeat('z', 9000))", 1), Messages({"f"}));
}

TEST_F(SqlTest, TheLogNumbersEveryMessageAndPrunes) {
  conn_->Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU1 + "'");
  conn_->Exec("SELECT tenantcache.invalidate_tenant('" + kT1 + "')");
  conn_->Exec("SELECT tenantcache.flush()");
  const Messages raw = listener_->WaitFor(3, 10s);
  ASSERT_EQ(raw.size(), 3u);
  long last = 0;
  for (const auto& m : raw) {
    const long seq = std::stol(Parse(m).seq);
    EXPECT_GT(seq, last) << "sequence numbers increase in commit order here";
    last = seq;
  }
  const auto log = conn_->Exec(
      "SELECT seq, kind, coalesce(namespace, ''), coalesce(key, '') FROM "
      "tenantcache.invalidation_log ORDER BY seq");
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[0][0], Parse(raw[0]).seq);
  EXPECT_EQ(log[0][1] + " " + log[0][2] + " " + log[0][3], "k user " + kU1);
  EXPECT_EQ(log[2][0], Parse(raw[2]).seq);
  EXPECT_EQ(conn_->Scalar("SELECT tenantcache.prune_log('1 hour')"), "0");
  EXPECT_EQ(conn_->Scalar("SELECT tenantcache.prune_log('0')"), "3");
  EXPECT_EQ(conn_->Scalar("SELECT pruned_through_seq FROM tenantcache.log_horizon"), Parse(raw[2]).seq);
  EXPECT_EQ(conn_->Scalar("SELECT count(*) FROM tenantcache.invalidation_log"), "0");
  // With the log off, messages carry "-" and nothing is logged.
  conn_->Exec("UPDATE tenantcache.settings SET log_enabled = false");
  conn_->Exec("SELECT tenantcache.flush()");
  const Messages off = listener_->WaitFor(1, 10s);
  ASSERT_EQ(off.size(), 1u);
  EXPECT_EQ(off[0], "1 f -");
  EXPECT_EQ(conn_->Scalar("SELECT count(*) FROM tenantcache.invalidation_log"), "0");
}

TEST_F(SqlTest, WatchingAgainReplacesTheSpecAndUnwatchStopsMessages) {
  conn_->Exec(
      "SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '{\"user_by_email\": \"email\"}')");
  EXPECT_EQ(
      conn_->Scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'fleet.user_accounts'::regclass AND "
                    "tgname LIKE 'tenantcache%'"),
      "4");
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET email = 'new@x' WHERE id = '" + kU1 + "'", 2),
            Messages({"k user_by_email new@x", "k user_by_email user1@fleet.example.com"}));
  EXPECT_EQ(conn_->Scalar("SELECT tenantcache.unwatch_table('fleet.user_accounts')"), "t");
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET email = 'again@x'", 0), Messages{});
  EXPECT_EQ(conn_->Scalar("SELECT tenantcache.unwatch_table('fleet.user_accounts')"), "f");
}

TEST_F(SqlTest, WatchTableRefusesBadSpecsClearly) {
  EXPECT_NE(
      conn_->ExecError("SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '{\"user\": \"nope\"}')")
          .find("has no column nope"),
      std::string::npos);
  EXPECT_NE(conn_->ExecError("SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '[1]')")
                .find("must be a JSON object"),
            std::string::npos);
  EXPECT_NE(
      conn_->ExecError("SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '{\"Bad\": \"id\"}')")
          .find("invalid namespace"),
      std::string::npos);
  EXPECT_NE(conn_->ExecError("SELECT tenantcache.watch_table('no_such_table', NULL, '{\"user\": \"id\"}')")
                .find("does not exist"),
            std::string::npos);
}

// The state of everything install.sql creates, to compare across runs.
std::vector<std::vector<std::string>> SchemaState(PgConn& c) {
  return c.Exec(
      "SELECT 'fn', p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid)) FROM pg_proc p "
      " WHERE p.pronamespace = 'tenantcache'::regnamespace "
      "UNION ALL SELECT 'rel', c.oid::regclass::text, c.relkind::text || c.oid::text FROM pg_class c "
      " WHERE c.relnamespace = 'tenantcache'::regnamespace "
      "UNION ALL SELECT 'ver', version::text, installed_at::text FROM tenantcache.version "
      "UNION ALL SELECT 'set', channel, log_enabled::text || bulk_threshold FROM tenantcache.settings "
      "UNION ALL SELECT 'trg', tgname || tgrelid::regclass::text, tgfoid::text FROM pg_trigger "
      " WHERE tgname LIKE 'tenantcache%' ORDER BY 1, 2, 3");
}

TEST_F(SqlTest, InstallingTwiceChangesNothing) {
  const auto before = SchemaState(*conn_);
  EXPECT_GT(before.size(), 15u);
  conn_->Exec(ReadFile(SqlDir() + "/install.sql"));
  EXPECT_EQ(SchemaState(*conn_), before);
  EXPECT_EQ(conn_->Scalar("SELECT tenantcache.schema_version()"), "6");
  // And the triggers still work.
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET role = 'owner' WHERE id = '" + kU1 + "'", 1),
            Messages({"k user " + kU1}));
}

TEST_F(SqlTest, UninstallLeavesNoObjectBehind) {
  conn_->Exec(ReadFile(SqlDir() + "/uninstall.sql"));
  EXPECT_EQ(conn_->Scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenantcache'"), "0");
  EXPECT_EQ(conn_->Scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tenantcache%'"), "0");
  EXPECT_EQ(
      conn_->Scalar("SELECT count(*) FROM pg_proc WHERE proname IN ('on_change', 'watch_table', '_emit')"),
      "0");
  EXPECT_EQ(conn_->Scalar("SELECT count(*) FROM pg_class WHERE relname LIKE 'invalidation_log%'"), "0");
  // The application's tables and data are untouched and writable.
  EXPECT_EQ(conn_->Scalar("SELECT count(*) FROM fleet.user_accounts"), "20");
  EXPECT_EQ(After("UPDATE fleet.user_accounts SET role = 'owner'", 0), Messages{});
  // Uninstalling again is harmless; installing again works.
  conn_->Exec(ReadFile(SqlDir() + "/uninstall.sql"));
  conn_->Exec(ReadFile(SqlDir() + "/install.sql"));
}

TEST_F(SqlTest, ATableOwnerWithoutSuperuserInstallsAndUsesEverything) {
  conn_->Exec(ReadFile(SqlDir() + "/uninstall.sql"));
  conn_->Exec(
      "DROP ROLE IF EXISTS app_owner; DROP ROLE IF EXISTS app_writer;"
      "CREATE ROLE app_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;"
      "CREATE ROLE app_writer LOGIN NOSUPERUSER;"
      "GRANT CREATE ON DATABASE " +
      db_ +
      " TO app_owner;"
      "ALTER SCHEMA fleet OWNER TO app_owner;"
      "ALTER TABLE fleet.user_accounts OWNER TO app_owner;"
      "ALTER TABLE fleet.fleet_registry OWNER TO app_owner;"
      "ALTER TABLE fleet.roles OWNER TO app_owner;");
  PgConn owner(SharedCluster().Conninfo(db_, "app_owner"));
  EXPECT_EQ(owner.Scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"), "f");
  owner.Exec(ReadFile(SqlDir() + "/install.sql"));
  owner.Exec(
      "SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '{\"user\": \"id\"}', "
      "ARRAY['yacht_id', 'role', 'active'])");
  owner.Exec(
      "GRANT USAGE ON SCHEMA fleet TO app_writer; GRANT SELECT, UPDATE ON fleet.user_accounts TO app_writer");
  // The application's own role writes; it has no rights on schema tenantcache.
  PgConn writer(SharedCluster().Conninfo(db_, "app_writer"));
  writer.Exec("UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '" + kU1 + "'");
  EXPECT_EQ(Normalised(listener_->WaitFor(1, 10s)), Messages({"k user " + kU1}));
  EXPECT_NE(writer.ExecError("SELECT * FROM tenantcache.invalidation_log").find("permission denied"),
            std::string::npos);
  EXPECT_NE(writer.ExecError("SELECT tenantcache.flush()").find("permission denied"), std::string::npos);
  owner.Exec("GRANT EXECUTE ON FUNCTION tenantcache.flush() TO app_writer");
  writer.Exec("SELECT tenantcache.flush()");
  EXPECT_EQ(Normalised(listener_->WaitFor(1, 10s)), Messages({"f"}));
  // Another role cannot attach triggers to a table it does not own.
  EXPECT_NE(
      writer.ExecError("SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '{\"user\": \"id\"}')")
          .find("must be owner"),
      std::string::npos);
  owner.Exec(ReadFile(SqlDir() + "/uninstall.sql"));
  EXPECT_EQ(conn_->Scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenantcache'"), "0");
}

}  // namespace
}  // namespace tenantcache::test
