// Runs the Python module's tests (client/python/tests) against a real
// PostgreSQL and the real daemon started here.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "support/daemon_process.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"

namespace tenantcache::test {
namespace {

TEST(Python, ModuleTestsPassAgainstTheRealDaemon) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // A sanitizer-instrumented library cannot be loaded into an uninstrumented
  // interpreter; the regular build runs this test.
  GTEST_SKIP() << "not under sanitizers";
#endif
  const std::string db = SharedCluster().CreateDatabase();
  PgConn admin(SharedCluster().Conninfo(db));
  admin.Exec(ReadFile(SqlDir() + "/install.sql"));
  admin.Exec(ReadFile(SqlDir() + "/examples/fleet.sql"));
  admin.Exec("SELECT fleet.generate(200, 10)");
  TempDir dir;
  DaemonProcess daemon(dir.path(), FleetConfig(dir.path(), SharedCluster().Conninfo(db)));
  ASSERT_TRUE(daemon.WaitReady()) << daemon.Log();
  const std::string python = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
  const std::string cmd = "TENANTCACHE_LIBRARY='" + std::string(TC_LIBRARY) + "' TC_CACHE_PATH='" +
                          daemon.cache_path() + "' TC_PSQL=\"psql -X -q -v ON_ERROR_STOP=1 '" +
                          SharedCluster().Conninfo(db) + "'\" " + python +
                          " " TC_SOURCE_DIR "/client/python/tests/test_tenantcache.py -v";
  const CommandResult r = RunCommand(cmd);
  EXPECT_EQ(r.exit_code, 0) << r.output << "\n--- daemon log ---\n" << daemon.Log();
  EXPECT_NE(r.output.find("\nOK"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Ran 6 tests"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace tenantcache::test
