// Runs the Python module's tests (client/python/tests) against a real
// PostgreSQL and the real daemon started here.
//
// Which module: by default the extension this build tree built
// (TC_PYTHON_LIB, for the interpreter TC_PYTHON). With TC_TEST_PYTHON set in
// the environment, that interpreter's installed tenantcache instead, e.g. a
// virtualenv with the wheel installed (packaging/test.sh); the test then
// checks that the module comes from neither the source nor the build tree.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "support/daemon_process.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"

namespace tenantcache::test {
namespace {

// The interpreter with the environment that selects the module under test.
std::string Interpreter() {
  const char* installed = std::getenv("TC_TEST_PYTHON");
  if (installed != nullptr && *installed != '\0') return "'" + std::string(installed) + "'";
  return "PYTHONPATH='" TC_PYTHON_LIB "' " TC_PYTHON;
}

// The extension is built by setup.py, instrumented in an ASan+UBSan tree
// (tests/CMakeLists.txt) and not at all in a TSan tree, whose interpreter
// would report CPython's own synchronisation.
#if defined(__SANITIZE_THREAD__)
#define TC_SKIP_UNDER_SANITIZERS() GTEST_SKIP() << "not under ThreadSanitizer"
#else
#define TC_SKIP_UNDER_SANITIZERS() (void)0
#endif

TEST(PythonModule, TheModuleUnderTestIsTheOneAsked) {
  TC_SKIP_UNDER_SANITIZERS();
  const CommandResult r =
      RunCommand(Interpreter() + " -c 'import tenantcache._native as n; print(n.__file__)' 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const char* installed = std::getenv("TC_TEST_PYTHON");
  if (installed != nullptr && *installed != '\0') {
    EXPECT_EQ(r.output.find(TC_SOURCE_DIR), std::string::npos) << "not the installed module: " << r.output;
    EXPECT_EQ(r.output.find(TC_PYTHON_LIB), std::string::npos) << "not the installed module: " << r.output;
  } else {
    EXPECT_EQ(r.output.rfind(TC_PYTHON_LIB, 0), 0U) << r.output;
  }
}

class Python : public ::testing::Test {
 protected:
  void SetUp() override {
    TC_SKIP_UNDER_SANITIZERS();
    db_ = SharedCluster().CreateDatabase();
    PgConn admin(SharedCluster().Conninfo(db_));
    admin.Exec(ReadFile(SqlDir() + "/install.sql"));
    admin.Exec(ReadFile(SqlDir() + "/examples/fleet.sql"));
    admin.Exec("SELECT fleet.generate(200, 10)");
    daemon_ =
        std::make_unique<DaemonProcess>(dir_.path(), FleetConfig(dir_.path(), SharedCluster().Conninfo(db_)));
    ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  }

  // Runs one test file of client/python/tests; expects `tests` tests, all passed.
  void RunFile(const std::string& file, int tests) {
    const std::string cmd = "TC_CACHE_PATH='" + daemon_->cache_path() +
                            "' TC_PSQL=\"psql -X -q -v ON_ERROR_STOP=1 '" + SharedCluster().Conninfo(db_) +
                            "'\" " + Interpreter() + " " TC_SOURCE_DIR "/client/python/tests/" + file + " -v";
    const CommandResult r = RunCommand(cmd);
    EXPECT_EQ(r.exit_code, 0) << r.output << "\n--- daemon log ---\n" << daemon_->Log();
    EXPECT_NE(r.output.find("\nOK"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("Ran " + std::to_string(tests) + " tests"), std::string::npos) << r.output;
  }

  std::string db_;
  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(Python, ModuleTestsPassAgainstTheRealDaemon) { RunFile("test_tenantcache.py", 6); }

TEST_F(Python, NeedsDatabaseCoversEveryStatus) { RunFile("test_needs_database.py", 5); }

TEST_F(Python, ExtensionSurvivesBadInputForkThreadsAsyncioAndLeaks) { RunFile("test_native.py", 13); }

}  // namespace
}  // namespace tenantcache::test
