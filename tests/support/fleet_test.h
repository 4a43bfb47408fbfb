// The fixture of the tests that run the real daemon on the fleet example
// (sql/examples/fleet.sql): a fresh database of the shared cluster with the
// SQL installed and `Users()` users generated, a private directory for the
// daemon's files, and on failure the tails of the daemon's and the server's
// logs.
#ifndef TENANTCACHE_TESTS_SUPPORT_FLEET_TEST_H_
#define TENANTCACHE_TESTS_SUPPORT_FLEET_TEST_H_

#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "support/daemon_process.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::test {

class FleetTest : public ::testing::Test {
 protected:
  // fleet.generate(users, tenants) for the database of each test.
  explicit FleetTest(int users = 50, int tenants = 5) : users_(users), tenants_(tenants) {}

  void SetUp() override {
    log_start_ = SharedCluster().LogSize();
    db_ = SharedCluster().CreateDatabase();
    admin_ = std::make_unique<PgConn>(SharedCluster().Conninfo(db_));
    admin_->Exec(ReadFile(SqlDir() + "/install.sql"));
    admin_->Exec(ReadFile(SqlDir() + "/examples/fleet.sql"));
    admin_->Exec("SELECT fleet.generate(" + std::to_string(users_) + ", " + std::to_string(tenants_) + ")");
  }

  void TearDown() override {
    tc_cache_close(cache_);
    cache_ = nullptr;
    if (HasFailure()) {
      if (daemon_) std::fprintf(stderr, "--- daemon log ---\n%s\n", Tail(daemon_->Log()).c_str());
      std::fprintf(stderr, "--- server log ---\n%s\n", SharedCluster().LogTail(6000, log_start_).c_str());
    }
    daemon_.reset();
  }

  static std::string Tail(const std::string& s) { return s.size() > 12000 ? s.substr(s.size() - 12000) : s; }
  std::string Conninfo() const { return SharedCluster().Conninfo(db_); }

  // The daemon on `config` (with `env` added to its environment), ready,
  // and the cache opened, unless a test opened it already.
  void StartDaemonOn(const std::string& config, const std::map<std::string, std::string>& env = {}) {
    daemon_ = std::make_unique<DaemonProcess>(dir_.path(), config, env);
    ASSERT_TRUE(daemon_->WaitReady()) << Tail(daemon_->Log());
    if (cache_ == nullptr) {
      ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &cache_), 0);
    }
  }

  tc_ns Ns(const char* name) {
    tc_ns ns = 0;
    EXPECT_EQ(tc_namespace(cache_, name, &ns), 0) << name;
    return ns;
  }
  // tc_cache_get / tc_cache_lookup of namespace `ns`, the answer in v_.
  int Get(const char* ns, const std::string& key) {
    return tc_cache_get(cache_, Ns(ns), key.data(), key.size(), &v_);
  }
  int Lookup(const char* ns, const std::string& key, int timeout_ms = 5000) {
    return tc_cache_lookup(cache_, Ns(ns), key.data(), key.size(), timeout_ms, &v_);
  }
  // A field of the last answer (FieldOf).
  std::string Field(const char* name) const { return FieldOf(v_, name); }
  // A statistic of the running daemon, "<absent>" when it has none so named.
  std::string DaemonStat(const char* key) const {
    const auto stats = DaemonStats(*daemon_);
    return stats.count(key) != 0 ? stats.at(key) : "<absent>";
  }
  bool LogHas(const std::string& text) const { return daemon_->Log().find(text) != std::string::npos; }

  int users_, tenants_;
  size_t log_start_ = 0;
  std::string db_;
  std::unique_ptr<PgConn> admin_;
  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  tc_cache* cache_ = nullptr;
  tc_value v_;
};

}  // namespace tenantcache::test

#endif  // TENANTCACHE_TESTS_SUPPORT_FLEET_TEST_H_
