// Fill latency by loader topology, in one run, printed as Markdown
// (packaging/bench.sh appends it to bench/RESULTS.md):
//
//   pgbouncer_bench [--quick]
//
// It starts a throwaway PostgreSQL with the fleet example and a PgBouncer in
// transaction mode in front of it (tests/support), then the real tenantcached
// three times, one after the other, each with a fresh cache:
//
//   1. loaders direct, named prepared statements (what it detects directly);
//   2. loaders direct, forced to unnamed statements
//      (TENANTCACHED_LOADER_STATEMENTS=unnamed): what giving up the plan
//      cache costs by itself;
//   3. loaders through PgBouncer (detected: unnamed statements).
//
// Each fill (a cold tc_cache_lookup: the miss, the control socket, the
// loader's query, the answer) is timed beside the same query run by a client
// for the same kind of key, interleaved key by key so that both see the
// same machine: directly with PQexecPrepared for 1 and 2, through PgBouncer
// with PQexecParams (unnamed, as an application behind it must) for 3.
#include <libpq-fe.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "support/daemon_process.h"
#include "support/pg_cluster.h"
#include "support/pgbouncer.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kUserQuery =
    "SELECT r.id::text AS tenant_id, r.yacht_code AS tenant_code, r.tenant_url, u.role "
    "FROM fleet.user_accounts u JOIN fleet.fleet_registry r ON r.id = u.yacht_id "
    "WHERE u.id = $1::uuid AND u.active";

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

struct Pct {
  double p50 = 0, p99 = 0;
};
Pct Percentiles(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 99 / 100)]};
}

struct Row {
  std::string loaders, statements, reference;
  Pct fill, query;
};

// Runs the daemon on `conninfo` (listener direct on `listener`) and times
// `samples` cold fills of users first.. beside the reference query.
Row Measure(const std::string& loaders, const std::string& statements, const std::string& conninfo,
            const std::string& listener, const std::map<std::string, std::string>& env,
            bool reference_prepared, const std::string& reference_conninfo, int first, int samples) {
  test::TempDir dir;
  std::string config =
      test::FleetConfig(dir.path(), conninfo, "", "loaders = 2\nlistener_conninfo = \"" + listener + "\"\n");
  config.replace(config.find("log_level = \"debug\""), 19, "log_level = \"warn\"");
  test::DaemonProcess daemon(dir.path(), config, env);
  if (!daemon.WaitReady()) {
    std::fprintf(stderr, "tenantcached did not start:\n%s\n", daemon.Log().c_str());
    std::exit(1);
  }
  tc_cache* cache = nullptr;
  tc_ns user = 0;
  if (tc_cache_open(daemon.cache_path().c_str(), &cache) != 0 || tc_namespace(cache, "user", &user) != 0)
    std::exit(1);
  PGconn* c = PQconnectdb(reference_conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::fprintf(stderr, "%s", PQerrorMessage(c));
    std::exit(1);
  }
  if (reference_prepared) PQclear(PQprepare(c, "direct", kUserQuery, 1, nullptr));
  std::vector<double> fill, query;
  tc_value v;
  for (int i = 0; i < samples; ++i) {
    const std::string key = test::UserId(first + i);
    const std::string other = test::UserId(first + samples + i);  // as cold for the reference
    const char* params[] = {other.c_str()};
    const auto q0 = Clock::now();
    PGresult* r = reference_prepared ? PQexecPrepared(c, "direct", 1, params, nullptr, nullptr, 0)
                                     : PQexecParams(c, kUserQuery, 1, nullptr, params, nullptr, nullptr, 0);
    query.push_back(Us(Clock::now() - q0));
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      std::fprintf(stderr, "reference query: %s", PQresultErrorMessage(r));
      std::exit(1);
    }
    PQclear(r);
    const auto f0 = Clock::now();
    const int rc = tc_cache_lookup(cache, user, key.data(), key.size(), 5000, &v);
    fill.push_back(Us(Clock::now() - f0));
    if (rc != TC_FOUND) {
      std::fprintf(stderr, "fill of user %d: %s: %s\n%s\n", first + i, tc_strerror(rc),
                   tc_last_error_detail(), daemon.Log().c_str());
      std::exit(1);
    }
  }
  PQfinish(c);
  tc_cache_close(cache);
  return Row{loaders, statements, reference_prepared ? "prepared, direct" : "unnamed, through PgBouncer",
             Percentiles(fill), Percentiles(query)};
}

int Run(bool quick) {
  const int samples = quick ? 200 : 2000;
  test::PgCluster cluster;
  const std::string db = cluster.CreateDatabase();
  const std::string direct = cluster.Conninfo(db);
  {
    test::PgConn admin(direct);
    admin.Exec(test::ReadFile(test::SqlDir() + "/install.sql"));
    admin.Exec(test::ReadFile(test::SqlDir() + "/examples/fleet.sql"));
    admin.Exec("SELECT fleet.generate(" + std::to_string(6 * samples + 10) + ", 100); ANALYZE");
  }
  test::PgBouncer bouncer(cluster, 2);
  const std::string pooled = bouncer.Conninfo(db);
  std::vector<Row> rows;
  rows.push_back(Measure("direct", "named (detected)", direct, direct, {}, true, direct, 1, samples));
  rows.push_back(Measure("direct", "unnamed (forced)", direct, direct,
                         {{"TENANTCACHED_LOADER_STATEMENTS", "unnamed"}}, true, direct, 1 + 2 * samples,
                         samples));
  rows.push_back(Measure("PgBouncer 1.18, transaction mode", "unnamed (detected)", pooled, direct, {}, false,
                         pooled, 1 + 4 * samples, samples));
  std::printf("## 8. Fills by loader topology\n\n");
  std::printf(
      "A cold `tc_cache_lookup` of a user (the miss, the control socket, the loader's query, the answer) "
      "through a fresh daemon in each loader topology, %d keys each, one client thread, each fill "
      "interleaved "
      "with the same query run by a client on its own connection for another cold key. PgBouncer keeps two "
      "server connections for the daemon's two loaders.\n\n",
      samples);
  std::printf(
      "| loaders | statements | fill p50 | fill p99 | the query by a client | query p50 | query p99 | "
      "fill/query p50 | fill/query p99 |\n|---|---|---:|---:|---|---:|---:|---:|---:|\n");
  for (const auto& r : rows)
    std::printf("| %s | %s | %.0f µs | %.0f µs | %s | %.0f µs | %.0f µs | %.2f× | %.2f× |\n",
                r.loaders.c_str(), r.statements.c_str(), r.fill.p50, r.fill.p99, r.reference.c_str(),
                r.query.p50, r.query.p99, r.fill.p50 / r.query.p50, r.fill.p99 / r.query.p99);
  std::printf("\n");
  return 0;
}

}  // namespace
}  // namespace tenantcache::bench

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--quick") {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: pgbouncer_bench [--quick]\n");
      return 2;
    }
  }
  return tenantcache::bench::Run(quick);
}
