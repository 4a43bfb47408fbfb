// The asyncio miss path's benchmark: starts a throwaway PostgreSQL cluster
// with the fleet example and the real tenantcached, then runs
// bench/python_async_bench.py against them (packaging/bench.sh puts its
// section into bench/RESULTS.md).
//
//   python_async_bench PYTHON PYTHONPATH [--quick]
//
// PYTHON is the interpreter the extension at PYTHONPATH was built for.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench_support.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"

namespace tenantcache::bench {
namespace {

int Run(const std::string& python, const std::string& pythonpath, bool quick) {
  const int rounds = quick ? 1 : 5;
  const int users = rounds * 3 * (100 + 200) + 1000;  // three designs, each key read once
  test::PgCluster& cluster = test::SharedCluster();
  const std::string conninfo = cluster.Conninfo(cluster.CreateDatabase());
  test::PgConn admin(conninfo);
  admin.Exec(test::ReadFile(test::SqlDir() + "/install.sql"));
  admin.Exec(test::ReadFile(test::SqlDir() + "/examples/fleet.sql"));
  admin.Exec("SELECT fleet.generate(" + std::to_string(users) + ", 100)");
  admin.Exec("ANALYZE");
  test::TempDir dir;
  BenchDaemon d = StartDaemon(dir.path(), conninfo, "warn", static_cast<uint64_t>(users) * 2);
  const std::string cmd = "PYTHONPATH='" + pythonpath + "' '" + python + "' '" + test::SqlDir() +
                          "/../bench/python_async_bench.py' --cache '" + d.process->cache_path() +
                          "' --socket '" + d.process->control_socket() + "' --users " +
                          std::to_string(users) + " --rounds " + std::to_string(rounds);
  std::fflush(stdout);
  const int status = std::system(cmd.c_str());
  tc_cache_close(d.cache);
  d.process->Signal(SIGTERM);
  d.process->Wait();
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace
}  // namespace tenantcache::bench

int main(int argc, char** argv) {
  if (argc < 3 || (argc == 4 && std::string(argv[3]) != "--quick") || argc > 4) {
    std::fprintf(stderr, "usage: python_async_bench PYTHON PYTHONPATH [--quick]\n");
    return 2;
  }
  return tenantcache::bench::Run(argv[1], argv[2], argc == 4);
}
