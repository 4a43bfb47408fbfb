// tenantcachectl against the real daemon and database: what each command
// prints and the exit codes scripts rely on.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include "support/daemon_process.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"

namespace tenantcache::test {
namespace {

CommandResult RunCtl(const std::string& args) { return RunCommand(std::string(TC_CTL_BIN) + " " + args); }

const char* kUser1 = "00000000-0001-4000-8000-000000000001";

class CtlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = SharedCluster().CreateDatabase();
    conninfo_ = SharedCluster().Conninfo(db_);
    // The SQL goes in through tenantcachectl itself.
    const CommandResult install = RunCtl("install-sql --conninfo '" + conninfo_ + "' --sql-dir " + SqlDir());
    ASSERT_EQ(install.exit_code, 0) << install.output;
    PgConn admin(conninfo_);
    admin.Exec(ReadFile(SqlDir() + "/examples/fleet.sql"));
    admin.Exec("SELECT fleet.generate(20, 4)");
    daemon_ = std::make_unique<DaemonProcess>(dir_.path(), FleetConfig(dir_.path(), conninfo_));
    ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
    cache_ = " --cache " + daemon_->cache_path() + " ";
  }
  void TearDown() override {
    if (HasFailure() && daemon_) std::fprintf(stderr, "--- daemon log ---\n%s\n", daemon_->Log().c_str());
  }

  std::string db_, conninfo_, cache_;
  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(CtlTest, ReadsAndCommandsWithScriptableExitCodes) {
  CommandResult r = RunCtl(cache_ + "status");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("synced          yes"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("namespaces      user tenant tenant_by_slug tenant_by_host"), std::string::npos)
      << r.output;

  r = RunCtl(cache_ + "get user " + kUser1);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("not in the cache"), std::string::npos);
  r = RunCtl(cache_ + "lookup user " + kUser1);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("role\tcaptain"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tenant\t00000000-0000-4000-8000-000000000001"), std::string::npos) << r.output;
  r = RunCtl(cache_ + "get user " + kUser1);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("warm shared-memory read"), std::string::npos) << r.output;

  r = RunCtl(cache_ + "invalidate user " + kUser1);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(RunCtl(cache_ + "get user " + kUser1).exit_code, 1);
  EXPECT_EQ(RunCtl(cache_ + "lookup user 00000000-0001-4000-8000-0000000000ff").exit_code, 1) << "not found";
  EXPECT_EQ(RunCtl(cache_ + "invalidate-tenant 00000000-0000-4000-8000-000000000001").exit_code, 0);
  EXPECT_EQ(RunCtl(cache_ + "flush").exit_code, 0);

  r = RunCtl(cache_ + "get user not-a-uuid");
  EXPECT_EQ(r.exit_code, 4) << r.output;
  r = RunCtl(cache_ + "get nosuchns x");
  EXPECT_EQ(r.exit_code, 4) << r.output;
  EXPECT_NE(r.output.find("this cache has: user tenant"), std::string::npos) << r.output;
}

TEST_F(CtlTest, StatsInEveryFormat) {
  ASSERT_EQ(RunCtl(cache_ + "lookup user " + std::string(kUser1)).exit_code, 0);
  CommandResult r = RunCtl(cache_ + "stats --format json");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output.rfind("{\"synced\":true,", 0), 0u) << r.output;
  r = RunCtl(cache_ + "stats --format prometheus");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("# TYPE tenantcache_fills counter\ntenantcache_fills 1\n"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("tenantcache_synced 1\n"), std::string::npos) << r.output;
  r = RunCtl(cache_ + "stats");
  EXPECT_NE(r.output.find("fills"), std::string::npos) << r.output;
  EXPECT_EQ(RunCtl(cache_ + "stats --format yaml").exit_code, 2);
}

TEST_F(CtlTest, UsageErrorsHelpAndAnUnavailableCache) {
  for (const char* cmd : {"status", "get", "lookup", "invalidate", "invalidate-tenant", "flush", "stats",
                          "install-sql", "uninstall-sql", "watch"}) {
    const CommandResult r = RunCtl(std::string(cmd) + " --help");
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.output.find(std::string("usage: tenantcachectl ") + cmd), std::string::npos) << r.output;
  }
  EXPECT_EQ(RunCtl("--help").exit_code, 0);
  EXPECT_EQ(RunCtl("").exit_code, 2);
  EXPECT_EQ(RunCtl("frobnicate").exit_code, 2);
  EXPECT_EQ(RunCtl(cache_ + "get user").exit_code, 2);
  EXPECT_EQ(RunCtl("--bogus status").exit_code, 2);
  EXPECT_EQ(RunCtl("--cache " + dir_.path() + "/absent status").exit_code, 3);
  daemon_->Signal(SIGTERM);
  ASSERT_TRUE(daemon_->Wait().has_value());
  EXPECT_EQ(RunCtl(cache_ + "get user " + std::string(kUser1)).exit_code, 3) << "a stopped daemon's cache";
  EXPECT_EQ(RunCtl(cache_ + "status").exit_code, 3);
}

TEST_F(CtlTest, WatchAndUninstallSql) {
  PgConn admin(conninfo_);
  admin.Exec("CREATE TABLE public.labels (name text PRIMARY KEY, note text)");
  CommandResult r = RunCtl("watch public.labels --keys '{\"label\": \"name\"}' --columns name --conninfo '" +
                           conninfo_ + "'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(
      admin.Scalar("SELECT count(*) FROM tenantcache.watched_tables WHERE table_name = 'labels'::regclass"),
      "1");
  r = RunCtl("watch public.labels --keys '{\"label\": \"nope\"}' --conninfo '" + conninfo_ + "'");
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_NE(r.output.find("has no column nope"), std::string::npos) << r.output;
  daemon_.reset();
  r = RunCtl("uninstall-sql --conninfo '" + conninfo_ + "' --sql-dir " + SqlDir());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(admin.Scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'tenantcache'"), "0");
  r = RunCtl("install-sql --conninfo 'host=/nonexistent dbname=x' --sql-dir " + SqlDir());
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_NE(r.output.find("cannot connect"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace tenantcache::test
