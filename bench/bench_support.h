// What more than one benchmark measures the same way: percentiles, a
// process's CPU time, a watched column's update, and commit -> invalid for one
// cached user (bench/compare_bench section 3, bench/fleet_bench).
#ifndef TENANTCACHE_BENCH_BENCH_SUPPORT_H_
#define TENANTCACHE_BENCH_BENCH_SUPPORT_H_

#include <libpq-fe.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/daemon_process.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::bench {

using Clock = std::chrono::steady_clock;

inline double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

struct Pct {
  double p50 = 0, p99 = 0;
};
// The median and the 99th percentile of `v` (zeros when it is empty).
Pct Percentiles(std::vector<double> v);

// Runs `sql` on `c`; prints the server's message and exits on an error (a
// benchmark that cannot set up has nothing to report).
void Exec(PGconn* c, const std::string& sql);

// Flips one user's role (a watched column): `id` is an SQL expression.
std::string ToggleRole(const std::string& id);

// utime + stime of process `pid` in clock ticks (0 when it is gone).
int64_t ProcCpuTicks(pid_t pid);

// The real daemon on the fleet example (test::FleetConfig in `dir`) with the
// shipped defaults of the keys that pace heartbeats (stale_after 5 s,
// heartbeat_interval 1 s), `log_level` and `capacity`, and `source` added to
// its [[source]] table (a Redis relay's keys, say): ready, its cache open and
// its "user" namespace looked up. Exits with the daemon's log when it does
// not start.
struct BenchDaemon {
  std::unique_ptr<test::DaemonProcess> process;
  tc_cache* cache = nullptr;
  tc_ns user = 0;
};
BenchDaemon StartDaemon(const std::string& dir, const std::string& conninfo, const std::string& log_level,
                        uint64_t capacity, const std::string& source = "");

// Commit -> invalid for one cached user: the time from sending a one-row
// UPDATE of a watched column (autocommit) to the entry reading as invalid in
// shared memory, and to a plain libpq LISTEN client (the floor any
// NOTIFY-based design has) receiving the same key's notification.
class CommitToInvalid {
 public:
  struct Sample {
    double invalid_us = 0;   // the entry reads as invalid in shared memory
    double listener_us = 0;  // the raw LISTEN client has the notification
  };

  // Opens the writer's and the raw listener's connections (exits when it
  // cannot: see Exec).
  CommitToInvalid(const std::string& conninfo, tc_cache* cache, tc_ns user);
  ~CommitToInvalid();
  CommitToInvalid(const CommitToInvalid&) = delete;
  CommitToInvalid& operator=(const CommitToInvalid&) = delete;

  // Fills user `key` through the daemon, then updates it and times both end
  // points. Nullopt when the daemon could not fill the key (it is not synced,
  // for one): nothing was updated.
  std::optional<Sample> Round(const std::string& key);

 private:
  tc_cache* cache_;
  tc_ns user_;
  PGconn* writer_;
  PGconn* raw_;
};

}  // namespace tenantcache::bench

#endif  // TENANTCACHE_BENCH_BENCH_SUPPORT_H_
