// Runs the Rust crate's tests (client/rust: `cargo test`) against a real
// PostgreSQL and the real daemon started here, as python_test.cc does for the
// Python module, and builds the crate's threaded example linked statically
// through pkg-config.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "support/daemon_process.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"

namespace tenantcache::test {
namespace {

const std::string kCrate = TC_SOURCE_DIR "/client/rust";

// $TC_CARGO, else cargo on PATH, rustup's, Debian's. "" when there is none
// (or TC_CARGO names no executable): the tests then fail, they never skip
// (packaging/test.sh installs Debian's cargo when there is no toolchain).
std::string FindCargo() {
  if (const char* c = std::getenv("TC_CARGO"); c != nullptr && *c != '\0')
    return access(c, X_OK) == 0 ? c : "";
  const CommandResult on_path = RunCommand("command -v cargo");
  if (on_path.exit_code == 0 && !on_path.output.empty())
    return on_path.output.substr(0, on_path.output.find('\n'));
  const char* home = std::getenv("HOME");
  for (const std::string& c :
       {std::string(home != nullptr ? home : "") + "/.cargo/bin/cargo", std::string("/usr/bin/cargo")})
    if (access(c.c_str(), X_OK) == 0) return c;
  return "";
}

std::string Dir(const std::string& file) { return file.substr(0, file.rfind('/')); }

// The fleet example (200 users over 10 tenants) and a daemon on it.
struct Fleet {
  Fleet() : db(SharedCluster().CreateDatabase()) {
    PgConn admin(SharedCluster().Conninfo(db));
    admin.Exec(ReadFile(SqlDir() + "/install.sql"));
    admin.Exec(ReadFile(SqlDir() + "/examples/fleet.sql"));
    admin.Exec("SELECT fleet.generate(200, 10)");
  }
  std::string db;
  TempDir dir;
};

std::string Quote(const std::string& s) { return "'" + s + "'"; }

// fleet.user_id(n) and fleet.tenant_id(n).
std::string UserKey(int n) {
  char b[40];
  std::snprintf(b, sizeof b, "00000000-0001-4000-8000-%012x", n);
  return b;
}
std::string TenantKey(int n) {
  char b[40];
  std::snprintf(b, sizeof b, "00000000-0000-4000-8000-%012x", n);
  return b;
}

TEST(Rust, CrateTestsPassAgainstTheRealDaemon) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // A sanitizer-instrumented library cannot be loaded by an uninstrumented
  // Rust test binary; the regular build runs this test.
  GTEST_SKIP() << "not under sanitizers";
#endif
  const std::string cargo = FindCargo();
  ASSERT_FALSE(cargo.empty()) << "no cargo found (TC_CARGO, PATH, ~/.cargo/bin, /usr/bin): install a Rust "
                                 "toolchain (apt-get install cargo); this test does not skip";
  Fleet fleet;
  DaemonProcess daemon(fleet.dir.path(), FleetConfig(fleet.dir.path(), SharedCluster().Conninfo(fleet.db)));
  ASSERT_TRUE(daemon.WaitReady()) << daemon.Log();
  // Warnings are errors here as in the C++ build; the crate's own target
  // directory keeps the source tree clean; nothing may touch the network.
  const std::string lib_dir = Dir(TC_LIBRARY);
  const std::string cmd = "cd " + Quote(kCrate) + " && CARGO_NET_OFFLINE=true RUSTFLAGS=-Dwarnings " +
                          "RUSTDOCFLAGS=-Dwarnings CARGO_TARGET_DIR=" + Quote(TC_CARGO_TARGET_DIR) +
                          " TENANTCACHE_LIB_DIR=" + Quote(lib_dir) + " LD_LIBRARY_PATH=" + Quote(lib_dir) +
                          " TC_ABI_PROBE=" + Quote(TC_ABI_PROBE) +
                          " TC_CACHE_PATH=" + Quote(daemon.cache_path()) + " TC_PSQL=psql" +
                          " TC_CONNINFO=" + Quote(SharedCluster().Conninfo(fleet.db)) + " " + Quote(cargo) +
                          " test --offline --locked --no-fail-fast";
  const CommandResult r = RunCommand(cmd);
  EXPECT_EQ(r.exit_code, 0) << r.output << "\n--- daemon log ---\n" << daemon.Log();
  // Each behaviour ran and passed (a test renamed or filtered out fails here).
  for (const char* name :
       {"sys::tests::sys_module_matches_the_c_header", "tests::thread_safety_is_what_the_header_promises",
        "tests::timeouts_round_up_to_milliseconds_and_saturate",
        "tests::short_and_long_names_reach_c_intact_and_nul_is_refused",
        "tests::text_is_checked_as_utf8_whether_ascii_or_not", "fill_then_hit",
        "host_header_resolves_its_tenant", "role_update_is_seen_by_the_next_read",
        "tenant_invalidation_drops_every_entry_of_the_tenant", "negative_entry_then_insert",
        "invalidate_key_and_flush", "threads_share_one_cache", "invalid_keys_are_errors_that_say_why",
        "a_cache_file_that_is_not_one_is_refused", "daemon_stopped_is_unavailable_within_the_bound",
        "a_loop_of_gets_allocates_nothing", "entries_alive_together_keep_their_own_values"}) {
    EXPECT_NE(r.output.find("test " + std::string(name) + " ... ok"), std::string::npos) << name << "\n"
                                                                                         << r.output;
  }
  EXPECT_NE(r.output.find("Doc-tests tenantcache"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("FAILED"), std::string::npos) << r.output;
}

TEST(Rust, ExampleLinkedStaticallyThroughPkgConfigServesLookupsFromThreads) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "not under sanitizers";
#endif
  const std::string cargo = FindCargo();
  ASSERT_FALSE(cargo.empty()) << "no cargo found: install a Rust toolchain (apt-get install cargo)";
  Fleet fleet;
  DaemonProcess daemon(fleet.dir.path(), FleetConfig(fleet.dir.path(), SharedCluster().Conninfo(fleet.db)));
  ASSERT_TRUE(daemon.WaitReady()) << daemon.Log();

  // A tenantcache.pc as the package installs it, naming this build's
  // libtenantcache.a; no TENANTCACHE_LIB_DIR, so build.rs asks pkg-config.
  const std::string pc_dir = fleet.dir.File("pkgconfig");
  ASSERT_EQ(mkdir(pc_dir.c_str(), 0755), 0);
  std::ofstream(pc_dir + "/tenantcache.pc") << "libdir=" << Dir(TC_STATIC_LIBRARY)
                                            << "\nName: tenantcache\nDescription: test\nVersion: 0.1.0\n"
                                               "Libs: -L${libdir} -ltenantcache\n"
                                               "Libs.private: -lstdc++ -lpthread\n";
  const std::string target = std::string(TC_CARGO_TARGET_DIR) + "-static";
  const CommandResult build = RunCommand(
      "cd " + Quote(kCrate) + " && env -u TENANTCACHE_LIB_DIR CARGO_NET_OFFLINE=true RUSTFLAGS=-Dwarnings " +
      "PKG_CONFIG_PATH=" + Quote(pc_dir) + " TENANTCACHE_STATIC=1 CARGO_TARGET_DIR=" + Quote(target) + " " +
      Quote(cargo) + " build --offline --locked --example threads");
  ASSERT_EQ(build.exit_code, 0) << build.output;
  const std::string example = target + "/debug/examples/threads";
  const CommandResult needed = RunCommand("readelf -d " + Quote(example));
  ASSERT_EQ(needed.exit_code, 0) << needed.output;
  EXPECT_EQ(needed.output.find("libtenantcache"), std::string::npos) << "linked dynamically:\n"
                                                                     << needed.output;

  // Four threads answer 40 users, an unknown one and a malformed key.
  std::string keys;
  for (int n = 1; n <= 40; ++n) keys += UserKey(n) + "\n";
  const std::string unknown = UserKey(4000);
  keys += unknown + "\nnot-a-uuid\n";
  const std::string input = fleet.dir.File("keys");
  std::ofstream(input) << keys;
  const CommandResult run = RunCommand(Quote(example) + " --cache " + Quote(daemon.cache_path()) +
                                       " --threads 4 user < " + Quote(input));
  ASSERT_EQ(run.exit_code, 0) << run.output << daemon.Log();
  for (int n = 1; n <= 40; ++n) {
    EXPECT_NE(run.output.find(UserKey(n) + "\t" + TenantKey(1 + (n - 1) % 10) + "\ttenant_code="),
              std::string::npos)
        << n << "\n"
        << run.output;
  }
  EXPECT_NE(run.output.find(unknown + "\tnot found"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("not-a-uuid\tbad key: tenantcache: "), std::string::npos) << run.output;
}

}  // namespace
}  // namespace tenantcache::test
