// The fixture of the tests that run the real daemon on the fleet example
// (sql/examples/fleet.sql): a fresh database of the shared cluster with the
// SQL installed and `Users()` users generated, a private directory for the
// daemon's files, and on failure the tails of the daemon's and the server's
// logs.
#ifndef TENANTCACHE_TESTS_SUPPORT_FLEET_TEST_H_
#define TENANTCACHE_TESTS_SUPPORT_FLEET_TEST_H_

#include <gtest/gtest.h>

#include <cstdio>
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

  int users_, tenants_;
  size_t log_start_ = 0;
  std::string db_;
  std::unique_ptr<PgConn> admin_;
  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  tc_cache* cache_ = nullptr;
};

}  // namespace tenantcache::test

#endif  // TENANTCACHE_TESTS_SUPPORT_FLEET_TEST_H_
