// The mistakes a new user makes on the client side, made against the real
// daemon and PostgreSQL: a fallback that never runs (Python, C++), statistics
// inflated by tenantcachectl, tools that disagree on the cache file, tenant
// ids that invalidate nothing, operands that look like options, and README
// examples that do not compile cleanly.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "config.h"
#include "stats_format.h"
#include "support/daemon_process.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.hpp"

namespace tenantcache::test {
namespace {

CommandResult RunCtl(const std::string& args) { return RunCommand(std::string(TC_CTL_BIN) + " " + args); }

uint64_t Stat(const DaemonProcess& d, const char* name) {
  const auto s = DaemonStats(d);
  const auto it = s.find(name);
  EXPECT_NE(it, s.end()) << name;
  return it == s.end() ? 0 : std::strtoull(it->second.c_str(), nullptr, 10);
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class MisconfigClient : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = SharedCluster().CreateDatabase();
    conninfo_ = SharedCluster().Conninfo(db_);
    PgConn admin(conninfo_);
    admin.Exec(ReadFile(SqlDir() + "/install.sql"));
    admin.Exec(ReadFile(SqlDir() + "/examples/fleet.sql"));
    admin.Exec("SELECT fleet.generate(200, 10)");
    daemon_ = std::make_unique<DaemonProcess>(dir_.path(), FleetConfig(dir_.path(), conninfo_, cache_extra_));
    ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
    cache_ = " --cache " + daemon_->cache_path() + " ";
  }
  void TearDown() override {
    if (HasFailure() && daemon_) std::fprintf(stderr, "--- daemon log ---\n%s\n", daemon_->Log().c_str());
  }

  std::string db_, conninfo_, cache_, cache_extra_;
  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

// Tenantcachectl times 1,001 warm reads after a lookup; they are no
// worker's reads and must not reach the host's hit rate.
TEST_F(MisconfigClient, CtlTimingReadsAreNotCountedAsHits) {
  const uint64_t hits = Stat(*daemon_, "hits");
  constexpr int kRuns = 3;
  for (int i = 1; i <= kRuns; ++i) {
    // A miss (the daemon fills it), then the timing loop over the found entry.
    const CommandResult r = RunCtl(cache_ + "lookup user " + UserId(i));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ASSERT_NE(r.output.find("warm shared-memory read"), std::string::npos) << r.output;
  }
  // Each run reports its miss with its first request and its final counts
  // (timing reads included, if they were counted) when it closes the handle.
  // Once the first reports are in and every run has left reporting_clients
  // (which needs its connection closed, see the next test), the final
  // reports have been read too.
  ASSERT_TRUE(WaitFor([&] { return Stat(*daemon_, "misses") >= kRuns; })) << "the runs' reports arrived";
  ASSERT_TRUE(WaitFor([&] { return Stat(*daemon_, "reporting_clients") == 0; }));
  EXPECT_LE(Stat(*daemon_, "hits") - hits, static_cast<uint64_t>(kRuns))
      << "hits may move by the runs' real reads at most, not by their timing reads";
}

// Reporting_clients counts processes alive now; a process that
// reported and exited stops counting once its connection is closed.
TEST_F(MisconfigClient, ReportingClientsFallsWhenClientsExit) {
  const uint64_t before = Stat(*daemon_, "reporting_clients");
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(go[1]);
    tc_cache* c = nullptr;
    tc_ns ns = 0;
    tc_value v;
    int ok = tc_cache_open(daemon_->cache_path().c_str(), &c) == 0 && tc_namespace(c, "user", &ns) == 0 &&
             tc_cache_lookup(c, ns, UserId(9).data(), UserId(9).size(), 5000, &v) == TC_FOUND;
    char b;
    ok = ok && read(go[0], &b, 1) == 1;
    tc_cache_close(c);
    _exit(ok ? 0 : 1);
  }
  close(go[0]);
  EXPECT_TRUE(WaitFor([&] { return Stat(*daemon_, "reporting_clients") == before + 1; }))
      << "a live client that reported counts";
  for (int i = 0; i < 3; ++i) ASSERT_EQ(RunCtl(cache_ + "lookup user " + UserId(20 + i)).exit_code, 0);
  EXPECT_TRUE(WaitFor([&] { return Stat(*daemon_, "reporting_clients") == before + 1; }))
      << "the exited tenantcachectl runs no longer count";
  ASSERT_EQ(write(go[1], "x", 1), 1);
  close(go[1]);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(WaitFor([&] { return Stat(*daemon_, "reporting_clients") == before; }))
      << "reporting_clients returns to its value once the client exits";
  EXPECT_GE(Stat(*daemon_, "misses"), 1u) << "an exited client's reads stay in the totals";
}

// The tenant column prints uuids canonically; an operator pastes a
// braced upper-case one (or bare hex digits) and expects the tenant gone.
TEST_F(MisconfigClient, InvalidateTenantNormalisesUuidsAndRefusesJunk) {
  const std::string tenant = TenantId(3);  // user 3's tenant
  std::string upper = tenant;
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  std::string bare = upper;
  bare.erase(std::remove(bare.begin(), bare.end(), '-'), bare.end());
  for (const std::string& spelling : {"'{" + upper + "}'", bare}) {
    ASSERT_EQ(RunCtl(cache_ + "lookup user " + UserId(3)).exit_code, 0);
    ASSERT_EQ(RunCtl(cache_ + "get user " + UserId(3)).exit_code, 0) << "cached";
    const CommandResult r = RunCtl(cache_ + "invalidate-tenant " + spelling);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output, "invalidated tenant " + tenant + "\n") << "ctl prints the canonical id it sent";
    const CommandResult get = RunCtl(cache_ + "get user " + UserId(3));
    EXPECT_EQ(get.exit_code, 1) << spelling << " left the entry in place: " << get.output;
  }
  const struct {
    const char* arg;
    const char* message;
  } kBad[] = {{"''", "tenant id is empty"},
              {"\"$(printf 'a\\tb')\"", "tenant id has a control character"},
              {"\"$(head -c 5000 /dev/zero | tr '\\0' x)\"", "longer than any cached tenant id"}};
  for (const auto& bad : kBad) {
    const CommandResult r = RunCtl(cache_ + "invalidate-tenant " + bad.arg);
    EXPECT_EQ(r.exit_code, 4) << bad.arg << ": " << r.output;
    EXPECT_NE(r.output.find(bad.message), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("ok"), std::string::npos) << r.output;
  }
  // The library refuses them too, whatever the caller.
  tc_cache* c = nullptr;
  ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &c), 0);
  EXPECT_EQ(tc_cache_invalidate_tenant(c, "", 0, 1000), TC_E_INVALID_KEY);
  EXPECT_EQ(tc_cache_invalidate_tenant(c, "a\nb", 3, 1000), TC_E_INVALID_KEY);
  tc_cache_close(c);
}

// An operand that begins with '-' (a slug may) goes after "--";
// a usage error says what is wrong in one line and where the help is.
TEST_F(MisconfigClient, DoubleDashEndsOptionsAndUsageErrorsAreOneLine) {
  PgConn admin(conninfo_);
  admin.Exec(
      "INSERT INTO fleet.fleet_registry (id, yacht_code, slug, host, tenant_url) VALUES "
      "(fleet.tenant_id(999), 'Y00999', '-acme', 'acme.fleet.example.com', "
      "'https://acme.fleet.example.com')");
  CommandResult r = RunCtl(cache_ + "lookup tenant_by_slug -- -acme");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("yacht_code\tY00999"), std::string::npos) << r.output;
  r = RunCtl(cache_ + "invalidate tenant_by_slug -- -ACME");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "invalidated tenant_by_slug -acme\n");

  const struct {
    const char* args;
    const char* problem;
  } kMistakes[] = {
      {"get user", "tenantcachectl: get takes NS KEY\n"},
      {"lookup tenant_by_slug -acme",
       "tenantcachectl: unknown option -acme (an operand that begins with '-' "
       "goes after --)\n"},
      {"--bogus status", "tenantcachectl: unknown option --bogus"},
      {"--timeout 10s status",
       "tenantcachectl: --timeout takes a positive number of milliseconds, not \"10s\"\n"},
      {"status --cache", "tenantcachectl: --cache needs a value\n"},
      {"frobnicate", "tenantcachectl: unknown command frobnicate\n"},
      {"", "tenantcachectl: no command\n"},
  };
  for (const auto& m : kMistakes) {
    r = RunCtl(cache_ + m.args);
    EXPECT_EQ(r.exit_code, 2) << m.args << ": " << r.output;
    EXPECT_EQ(r.output.find(m.problem), 0u) << m.args << ": " << r.output;
    EXPECT_NE(r.output.find("\nsee tenantcachectl --help\n"), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 2)
        << "not the whole help page: " << r.output;
  }
}

// A small cache file (capacity 1000: some 400 KiB) is not "0 MiB".
TEST_F(MisconfigClient, StatusShowsTheFileSizeInAFittingUnit) {
  TempDir small_dir;
  std::string config = FleetConfig(small_dir.path(), conninfo_);
  const size_t at = config.find("capacity = 10000\n");
  ASSERT_NE(at, std::string::npos);
  config.replace(at, 16, "capacity = 1000");
  DaemonProcess small(small_dir.path(), config);
  ASSERT_TRUE(small.WaitReady()) << small.Log();
  tc_cache* c = nullptr;
  ASSERT_EQ(tc_cache_open(small.cache_path().c_str(), &c), 0);
  tc_info info;
  ASSERT_EQ(tc_cache_info(c, &info), 0);
  tc_cache_close(c);
  ASSERT_LT(info.file_bytes, 1u << 20) << "a file under 1 MiB";
  const CommandResult r = RunCtl("--cache " + small.cache_path() + " status");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(FormatBytes(info.file_bytes) + ")"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find(" 0 MiB"), std::string::npos) << r.output;

  EXPECT_EQ(FormatBytes(812), "812 bytes");
  EXPECT_EQ(FormatBytes(484 * 1024 + 300), "484 KiB");
  EXPECT_EQ(FormatBytes(1536 * 1024), "1.5 MiB");
  EXPECT_EQ(FormatBytes(97ull << 20), "97 MiB");
  EXPECT_EQ(FormatBytes(3ull << 40), "3.0 TiB");
}

// Every tool's default is the packaged daemon's file.
TEST_F(MisconfigClient, EveryToolDefaultsToThePackagedCachePath) {
  EXPECT_STREQ(tc_default_cache_path(), TC_DEFAULT_CACHE_PATH);
  const auto key = std::find_if(kConfigKeys.begin(), kConfigKeys.end(), [](const ConfigKey& k) {
    return std::string(k.table) == "cache" && std::string(k.name) == "path";
  });
  ASSERT_NE(key, kConfigKeys.end());
  EXPECT_EQ(std::string(key->default_value), "\"" TC_DEFAULT_CACHE_PATH "\"") << "the daemon's [cache].path";
  if (access(TC_DEFAULT_CACHE_PATH, F_OK) == 0) GTEST_SKIP() << "a cache file exists at the default path";
  // A packaged install's plain "tenantcachectl status" opens the packaged
  // file; here there is none, and the message names the path it tried.
  const CommandResult r = RunCtl("status");
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_EQ(r.output.find(std::string("tenantcachectl: ") + TC_DEFAULT_CACHE_PATH + ": "), 0u) << r.output;
}

// The C++ header covers lookups, commands and statistics.
TEST_F(MisconfigClient, CppHeaderLooksUpInvalidatesAndReportsStats) {
  auto cache = Cache::Open(daemon_->cache_path());
  const tc_ns user = cache.Namespace("user");
  Result miss = cache.Get(user, UserId(4));
  EXPECT_TRUE(miss.miss());
  EXPECT_TRUE(miss.needs_database());
  Result r = cache.Lookup(user, UserId(4), 5000);
  ASSERT_TRUE(r.found()) << static_cast<int>(r.status());
  EXPECT_FALSE(r.needs_database());
  EXPECT_EQ(r->tenant(), TenantId(4));
  EXPECT_TRUE(cache.Get(user, UserId(4)).found());
  EXPECT_EQ(cache.Lookup(user, "00000000-0001-4000-8000-0000000fffff", 5000).status(), Status::kNotFound);
  const Result invalid = cache.Lookup(user, "not-a-uuid", 5000);
  EXPECT_TRUE(invalid.invalid_key());
  EXPECT_FALSE(invalid.needs_database());
  // A zero timeout does not wait for a fill. The table is locked so that the
  // fill cannot finish before the client looks for the answer.
  {
    PgConn locker(conninfo_);
    locker.Exec("BEGIN; LOCK TABLE fleet.user_accounts IN ACCESS EXCLUSIVE MODE");
    const Result timeout = cache.Lookup(user, UserId(5), 0);
    EXPECT_EQ(timeout.status(), Status::kTimeout);
    EXPECT_TRUE(timeout.needs_database());
    locker.Exec("ROLLBACK");
  }

  cache.Invalidate(user, UserId(4));
  EXPECT_TRUE(cache.Get(user, UserId(4)).miss());
  ASSERT_TRUE(cache.Lookup(user, UserId(4), 5000).found());
  std::string braced = "{" + TenantId(4) + "}";
  cache.InvalidateTenant(braced);
  EXPECT_TRUE(cache.Get(user, UserId(4)).miss());
  ASSERT_TRUE(cache.Lookup(user, UserId(4), 5000).found());
  cache.Flush();
  EXPECT_TRUE(cache.Get(user, UserId(4)).miss());
  try {
    cache.Invalidate(user, "not-a-uuid");
    ADD_FAILURE() << "an invalid key must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::kInvalidKey);
    EXPECT_NE(std::string(e.what()).find("tenantcache: invalidate"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cache.InvalidateTenant(""), Error);

  const tc_stats st = cache.Stats();
  EXPECT_GE(st.hits, 1u);
  EXPECT_GE(st.misses, 3u);
  const auto daemon = ParseFlatJson(cache.DaemonStats());
  EXPECT_EQ(daemon.count("reporting_clients"), 1u);
  EXPECT_EQ(daemon.at("synced"), "true");
}

// The header says it needs C++17, and an older standard is told so.
TEST(MisconfigClientCpp, HeaderRefusesPreCpp17WithAClearMessage) {
  TempDir dir;
  {
    std::ofstream f(dir.File("use.cc"));
    f << "#include <tenantcache/tenantcache.hpp>\nint main() { return 0; }\n";
  }
  const std::string cc = "c++ -fsyntax-only -Wall -Wextra -Werror -I" TC_SOURCE_DIR "/client/include ";
  CommandResult r = RunCommand(cc + "-std=c++14 " + dir.File("use.cc"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("tenantcache.hpp requires C++17 or later"), std::string::npos) << r.output;
  r = RunCommand(cc + "-std=c++17 " + dir.File("use.cc"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// The README's C example (tests/readme_example.c, shown verbatim in
// "## The client library") compiles without a warning and runs.
TEST_F(MisconfigClient, ReadmeCExampleCompilesCleanlyAndRuns) {
  const std::string bin = dir_.File("readme_example");
  const std::string lib = TC_LIBRARY;
  const std::string libdir = lib.substr(0, lib.rfind('/'));
#if defined(__SANITIZE_ADDRESS__)
  // The library is instrumented; so must the program be that loads it.
  const std::string sanitize = " -fsanitize=address,undefined";
#else
  const std::string sanitize;
#endif
  CommandResult r = RunCommand(
      "cc -std=c11 -Wall -Wextra -Werror" + sanitize +
      " -I" TC_SOURCE_DIR "/client/include " TC_SOURCE_DIR "/tests/readme_example.c " + lib + " -o " + bin);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string run = "LD_LIBRARY_PATH=" + libdir + " " + bin + " ";
  r = RunCommand(run + UserId(1) + " " + daemon_->cache_path());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "tenant " + TenantId(1) + " role captain\n");
  r = RunCommand(run + "not-a-uuid " + daemon_->cache_path());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "no such user\n");
  daemon_->Signal(SIGTERM);
  ASSERT_TRUE(daemon_->Wait().has_value());
  r = RunCommand(run + UserId(1) + " " + daemon_->cache_path());
  EXPECT_EQ(r.exit_code, 1) << "a stopped daemon's cache: ask the database. " << r.output;
}

// The README shows tests/readme_example.c as it is compiled above.
TEST(MisconfigClientReadme, ShowsTheCompiledCExample) {
  const std::string readme = Slurp(TC_SOURCE_DIR "/README.md");
  const size_t section = readme.find("\n## The client library\n");
  ASSERT_NE(section, std::string::npos);
  const size_t open = readme.find("```c\n", section);
  ASSERT_NE(open, std::string::npos);
  const size_t close = readme.find("```\n", open + 5);
  ASSERT_NE(close, std::string::npos);
  EXPECT_EQ(readme.substr(open + 5, close - open - 5), Slurp(TC_SOURCE_DIR "/tests/readme_example.c"));
}

// The Python module's "go to the database" predicate, against the
// real daemon (client/python/tests/test_needs_database.py).
TEST_F(MisconfigClient, PythonNeedsDatabaseCoversEveryStatus) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the Python extension is not built under ThreadSanitizer; the regular build runs this test";
#endif
  const CommandResult r =
      RunCommand("PYTHONPATH='" TC_PYTHON_LIB "' TC_CACHE_PATH='" + daemon_->cache_path() +
                 "' " TC_PYTHON " " TC_SOURCE_DIR "/client/python/tests/test_needs_database.py -v");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\nOK"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Ran 5 tests"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace tenantcache::test
