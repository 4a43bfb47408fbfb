// Fill latency by loader topology, in one run, printed as Markdown
// (packaging/bench.sh appends it to bench/RESULTS.md):
//
//   pgbouncer_bench [--quick]
//
// It starts a throwaway PostgreSQL with the fleet example and a PgBouncer in
// transaction mode in front of it (tests/support), then three real
// tenantcached at once, each with its own cache:
//
//   1. loaders direct, named prepared statements (what it detects directly);
//   2. loaders direct, forced to unnamed statements
//      (TENANTCACHED_LOADER_STATEMENTS=unnamed): what giving up the plan
//      cache costs by itself;
//   3. loaders through PgBouncer (detected: unnamed statements).
//
// and two client connections that run the namespace's query themselves:
// directly with PQexecPrepared, and through PgBouncer with PQexecParams
// (unnamed, as an application behind it must). Each round times one fill
// (a cold tc_cache_lookup: the miss, the control socket, the loader's query,
// the answer) of each daemon and one query of each client, each on a key
// nobody has read, in an order that rotates every round, so that all five
// see the same machine (a shared VM's load moves by the second).
#include <libpq-fe.h>

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
constexpr int kWays = 5;  // three daemons, two clients

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

struct Pct {
  double p50 = 0, p99 = 0;
};
Pct Percentiles(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 99 / 100)]};
}

// One way of answering a miss, and its samples (µs).
struct Way {
  std::string what;
  std::vector<double> us;
  // A daemon's fills.
  std::unique_ptr<test::TempDir> dir;
  std::unique_ptr<test::DaemonProcess> daemon;
  tc_cache* cache = nullptr;
  tc_ns user = 0;
  // A client's queries.
  PGconn* conn = nullptr;
  bool prepared = false;
};

void StartDaemon(Way* w, const std::string& conninfo, const std::string& listener,
                 const std::map<std::string, std::string>& env) {
  w->dir = std::make_unique<test::TempDir>();
  std::string config = test::FleetConfig(w->dir->path(), conninfo, "",
                                         "loaders = 2\nlistener_conninfo = \"" + listener + "\"\n");
  config.replace(config.find("log_level = \"debug\""), 19, "log_level = \"warn\"");
  w->daemon = std::make_unique<test::DaemonProcess>(w->dir->path(), config, env);
  if (!w->daemon->WaitReady() || tc_cache_open(w->daemon->cache_path().c_str(), &w->cache) != 0 ||
      tc_namespace(w->cache, "user", &w->user) != 0) {
    std::fprintf(stderr, "%s: tenantcached did not start:\n%s\n", w->what.c_str(), w->daemon->Log().c_str());
    std::exit(1);
  }
}

void StartClient(Way* w, const std::string& conninfo, bool prepared) {
  w->conn = PQconnectdb(conninfo.c_str());
  w->prepared = prepared;
  if (PQstatus(w->conn) != CONNECTION_OK) {
    std::fprintf(stderr, "%s: %s", w->what.c_str(), PQerrorMessage(w->conn));
    std::exit(1);
  }
  if (prepared) PQclear(PQprepare(w->conn, "direct", kUserQuery, 1, nullptr));
}

void Time(Way* w, const std::string& key) {
  const auto t0 = Clock::now();
  if (w->cache != nullptr) {
    tc_value v;
    const int rc = tc_cache_lookup(w->cache, w->user, key.data(), key.size(), 5000, &v);
    w->us.push_back(Us(Clock::now() - t0));
    if (rc == TC_FOUND) return;
    std::fprintf(stderr, "%s: fill of %s: %s: %s\n%s\n", w->what.c_str(), key.c_str(), tc_strerror(rc),
                 tc_last_error_detail(), w->daemon->Log().c_str());
    std::exit(1);
  }
  const char* params[] = {key.c_str()};
  PGresult* r = w->prepared ? PQexecPrepared(w->conn, "direct", 1, params, nullptr, nullptr, 0)
                            : PQexecParams(w->conn, kUserQuery, 1, nullptr, params, nullptr, nullptr, 0);
  w->us.push_back(Us(Clock::now() - t0));
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
    std::fprintf(stderr, "%s: %s", w->what.c_str(), PQresultErrorMessage(r));
    std::exit(1);
  }
  PQclear(r);
}

int Run(bool quick) {
  const int rounds = quick ? 200 : 2000;
  test::PgCluster cluster;
  const std::string db = cluster.CreateDatabase();
  const std::string direct = cluster.Conninfo(db);
  {
    test::PgConn admin(direct);
    admin.Exec(test::ReadFile(test::SqlDir() + "/install.sql"));
    admin.Exec(test::ReadFile(test::SqlDir() + "/examples/fleet.sql"));
    admin.Exec("SELECT fleet.generate(" + std::to_string(kWays * rounds + 10) + ", 100); ANALYZE");
  }
  test::PgBouncer bouncer(cluster, 4);  // two loaders and one client of its own
  const std::string pooled = bouncer.Conninfo(db);
  std::vector<Way> ways(kWays);
  ways[0].what = "fill, loaders direct, named statements (detected)";
  ways[1].what = "fill, loaders direct, unnamed statements (forced)";
  ways[2].what = "fill, loaders through PgBouncer, unnamed statements (detected)";
  ways[3].what = "the query by a client, direct, prepared";
  ways[4].what = "the query by a client through PgBouncer, unnamed";
  StartDaemon(&ways[0], direct, direct, {});
  StartDaemon(&ways[1], direct, direct, {{"TENANTCACHED_LOADER_STATEMENTS", "unnamed"}});
  StartDaemon(&ways[2], pooled, direct, {});
  StartClient(&ways[3], direct, true);
  StartClient(&ways[4], pooled, false);
  for (int i = 0; i < rounds; ++i)
    for (int k = 0; k < kWays; ++k) {
      const int w = (i + k) % kWays;
      Time(&ways[w], test::UserId(1 + i * kWays + w));
    }
  const Pct base = Percentiles(ways[3].us);
  std::printf("## 9. Fills by loader topology\n\n");
  std::printf(
      "A cold `tc_cache_lookup` of a user (the miss, the control socket, the loader's query, the answer) "
      "through three daemons at once, one per loader topology, beside the same query run by a client; "
      "%d rounds, each timing all five once, on keys nobody has read, in an order that rotates every "
      "round. One client thread; two loaders per daemon; PgBouncer keeps four server connections.\n\n",
      rounds);
  std::printf("| how a miss is answered | p50 | p99 | p50 / direct query | p99 / direct query |\n");
  std::printf("|---|---:|---:|---:|---:|\n");
  for (const auto& w : ways) {
    const Pct p = Percentiles(w.us);
    std::printf("| %s | %.0f µs | %.0f µs | %.2f× | %.2f× |\n", w.what.c_str(), p.p50, p.p99,
                p.p50 / base.p50, p.p99 / base.p99);
  }
  std::printf("\n");
  for (auto& w : ways) {
    if (w.cache != nullptr) tc_cache_close(w.cache);
    if (w.conn != nullptr) PQfinish(w.conn);
  }
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
