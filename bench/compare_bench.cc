// The comparative benchmark: tenantcache beside what teams use instead, in
// one run on one machine, printed as Markdown (packaging/bench.sh runs it,
// with Redis and memcached on loopback, and writes bench/RESULTS.md).
//
//   compare_bench [--redis-port N] [--memcached-port N] [--quick]
//
// It starts a throwaway PostgreSQL 15 cluster with the fleet example (100k
// users, 1000 tenants) and the real tenantcached, fills the cache through the
// daemon, and measures:
//
//   1. a lookup that hits (user id -> tenant + role, random keys over 100k):
//      tenantcache (tc_cache_get + field), std::unordered_map (unlocked and
//      under a std::shared_mutex), Redis GET (hiredis), memcached GET
//      (libmemcached), PostgreSQL directly (the namespace's join; the
//      three-query pattern). Per-lookup latency (timer overhead subtracted)
//      and single-thread throughput;
//   2. memory per cached entry for each store that keeps entries;
//   3. commit -> entry invalid in shared memory beside a raw libpq LISTEN
//      client's receive latency, at idle and under a steady update load;
//   4. a tenant change reaching all of its entries; tenant invalidation cost
//      over 1M entries (and 1k);
//   5. a stampede: 100 concurrent misses of one key from 8 processes,
//      queries that reach PostgreSQL (tenantcache vs one coalescing cache per
//      process);
//   6. a 100k-row UPDATE: commit -> all 100k entries invalid;
//   7. the daemon's CPU at idle and under load.
//
// A miss through the daemon beside the direct query is bench/miss_bench's.
#include <hiredis/hiredis.h>
#include <libmemcached/memcached.h>
#include <libpq-fe.h>
#include <malloc.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "bench_support.h"
#include "cache_writer.h"
#include "protocol.h"
#include "stats_format.h"
#include "string_map.h"
#include "support/daemon_process.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::bench {
namespace {

using namespace std::chrono_literals;
using test::PgConn;

constexpr int kUsers = 100000;
constexpr int kTenants = 1000;
constexpr const char* kUserQuery =
    "SELECT r.id::text AS tenant_id, r.yacht_code AS tenant_code, r.tenant_url, u.role "
    "FROM fleet.user_accounts u JOIN fleet.fleet_registry r ON r.id = u.yacht_id "
    "WHERE u.id = $1::uuid AND u.active";

double Ns(Clock::duration d) { return std::chrono::duration<double, std::nano>(d).count(); }
double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string UserId(int n) {
  char b[64];
  std::snprintf(b, sizeof b, "00000000-0001-4000-8000-%012x", n);
  return b;
}

// Another connection flipping roles at `per_second`, of users user(0),
// user(1), ..., until destroyed.
class UpdateLoad {
 public:
  UpdateLoad(const std::string& conninfo, int per_second, std::function<int(int)> user)
      : thread_([this, conninfo, per_second, user] {
          PGconn* c = PQconnectdb(conninfo.c_str());
          const auto period = std::chrono::microseconds(1'000'000 / per_second);
          auto next = Clock::now();
          for (int i = 0; !stop_; ++i) {
            next += period;
            std::this_thread::sleep_until(next);  // pacing
            Exec(c, ToggleRole("fleet.user_id(" + std::to_string(user(i)) + ")"));
            ++updates_;
          }
          PQfinish(c);
        }) {}
  ~UpdateLoad() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int updates() const { return updates_; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> updates_{0};
  std::thread thread_;
};

// A value as the maps, Redis and memcached hold it.
struct Row {
  std::string tenant, code, url, role;
};
std::string Serialize(const Row& r) { return r.tenant + '\x1f' + r.code + '\x1f' + r.url + '\x1f' + r.role; }

// Per-lookup latency over `keys` (timer overhead subtracted) and throughput
// of the same lookups untimed. `op` gets a key's number and its id, and
// returns something derived from the value so that nothing is optimised
// away. The ids are laid out one after another in lookup order first: a
// request's key is in hand when it is looked up (parsed from the request,
// in the CPU's cache), not fetched from a table of ids, which would cost
// every store two dependent misses that are not its own.
struct Figure {
  std::string name;
  Pct lat;         // ns
  double ops = 0;  // per second, one thread
  bool ran = false;
  std::string note;
};

double TimerOverheadNs() {
  std::vector<double> v(100000);
  for (auto& x : v) {
    const auto a = Clock::now();
    const auto b = Clock::now();
    x = Ns(b - a);
  }
  return Percentiles(v).p50;
}

Figure Measure(const std::string& name, const std::vector<int>& keys, const std::vector<std::string>& ids,
               double overhead, const std::function<size_t(int, std::string_view)>& op) {
  Figure f{name, {}, 0, true, ""};
  std::string stream;
  std::vector<size_t> at;
  for (int k : keys) {
    at.push_back(stream.size());
    stream += ids[static_cast<size_t>(k)];
  }
  at.push_back(stream.size());
  const auto key = [&](size_t i) { return std::string_view(stream).substr(at[i], at[i + 1] - at[i]); };
  size_t sink = 0;
  for (size_t i = 0; i < std::min<size_t>(keys.size(), 2000); ++i) sink += op(keys[i], key(i));  // warm up
  std::vector<double> lat;
  lat.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    const auto a = Clock::now();
    sink += op(keys[i], key(i));
    const auto b = Clock::now();
    lat.push_back(std::max(0.0, Ns(b - a) - overhead));
  }
  f.lat = Percentiles(std::move(lat));
  const auto t0 = Clock::now();
  for (size_t i = 0; i < keys.size(); ++i) sink += op(keys[i], key(i));
  f.ops = static_cast<double>(keys.size()) / std::chrono::duration<double>(Clock::now() - t0).count();
  if (sink == 42) std::printf("<!-- %zu -->\n", sink);
  return f;
}

std::string Fmt(double ns) {
  char b[32];
  if (ns < 10'000)
    std::snprintf(b, sizeof b, "%.0f ns", ns);
  else if (ns < 10'000'000)
    std::snprintf(b, sizeof b, "%.1f µs", ns / 1000);
  else
    std::snprintf(b, sizeof b, "%.1f ms", ns / 1e6);
  return b;
}

std::string Ops(double ops) {
  char b[32];
  if (ops >= 1e6)
    std::snprintf(b, sizeof b, "%.2f M/s", ops / 1e6);
  else
    std::snprintf(b, sizeof b, "%.1f k/s", ops / 1e3);
  return b;
}

struct Args {
  int redis_port = 0, memcached_port = 0;
  bool quick = false;
};

class Bench {
 public:
  explicit Bench(const Args& a) : args_(a) {}
  int Run();

 private:
  void Setup();
  void HitLatency();
  void Memory();
  void CommitToInvalid();
  void TenantFanOut();
  void Stampede();
  void BulkUpdate();
  void DaemonCpu();
  void Fill(int from, int to);
  // Spins until none of `keys` reads as found (a benchmark's end point).
  void WaitAllInvalid(const std::vector<std::string>& keys) const;
  int Samples(int fast) const { return args_.quick ? fast / 10 : fast; }

  Args args_;
  std::string conninfo_;
  test::TempDir dir_;
  std::unique_ptr<test::DaemonProcess> daemon_;
  tc_cache* cache_ = nullptr;
  tc_ns user_ = 0;
  std::vector<Row> rows_;  // index n-1 for user n
  double tc_hit_p50_ = 0;
};

void Bench::Setup() {
  test::PgCluster& cluster = test::SharedCluster();
  const std::string db = cluster.CreateDatabase();
  conninfo_ = cluster.Conninfo(db);
  PgConn admin(conninfo_);
  admin.Exec(test::ReadFile(test::SqlDir() + "/install.sql"));
  admin.Exec(test::ReadFile(test::SqlDir() + "/examples/fleet.sql"));
  admin.Exec("SELECT fleet.generate(" + std::to_string(kUsers) + ", " + std::to_string(kTenants) + ")");
  admin.Exec("CREATE EXTENSION IF NOT EXISTS pg_stat_statements; ANALYZE");
  // The values every store holds, read once from the database.
  rows_.resize(kUsers);
  PGresult* r =
      PQexec(admin.get(),
             "SELECT fleet_n, r.id::text, r.yacht_code, r.tenant_url, u.role FROM "
             "(SELECT u.*, row_number() OVER (ORDER BY u.id) AS fleet_n FROM fleet.user_accounts u) u "
             "JOIN fleet.fleet_registry r ON r.id = u.yacht_id");
  for (int i = 0; i < PQntuples(r); ++i) {
    const int n = std::atoi(PQgetvalue(r, i, 0));
    rows_[n - 1] = Row{PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4)};
  }
  PQclear(r);
  if (test::PgConn(conninfo_).Scalar("SELECT fleet.user_id(1)::text") != UserId(1)) {
    std::fprintf(stderr, "fleet.user_id(1) is not %s\n", UserId(1).c_str());
    std::exit(1);
  }
  BenchDaemon d = StartDaemon(dir_.path(), conninfo_, "warn", 250000);
  daemon_ = std::move(d.process);
  cache_ = d.cache;
  user_ = d.user;
}

// Fills users [from, to] through the daemon, four threads.
void Bench::Fill(int from, int to) {
  std::vector<std::thread> t;
  std::atomic<int> next{from}, failed{0};
  for (int i = 0; i < 4; ++i)
    t.emplace_back([&] {
      tc_value v;
      for (int n; (n = next++) <= to;) {
        const std::string k = UserId(n);
        if (tc_cache_lookup(cache_, user_, k.data(), k.size(), 10000, &v) != TC_FOUND) ++failed;
      }
    });
  for (auto& x : t) x.join();
  if (failed > 0) {
    std::fprintf(stderr, "%d fills failed\n", failed.load());
    std::exit(1);
  }
}

void Bench::WaitAllInvalid(const std::vector<std::string>& keys) const {
  tc_value v;
  for (size_t i = 0; i < keys.size();)
    if (tc_cache_get(cache_, user_, keys[i].data(), keys[i].size(), &v) != TC_FOUND) ++i;
}

void Bench::HitLatency() {
  const auto f0 = Clock::now();
  Fill(1, kUsers);
  const double fill_s = std::chrono::duration<double>(Clock::now() - f0).count();
  size_t cached = 0;
  tc_value v;
  for (int n = 1; n <= kUsers; ++n) {
    const std::string k = UserId(n);
    cached += tc_cache_get(cache_, user_, k.data(), k.size(), &v) == TC_FOUND;
  }

  // Keys: the cached ones, in a random order.
  std::vector<int> resident;
  for (int n = 1; n <= kUsers; ++n) {
    const std::string k = UserId(n);
    if (tc_cache_get(cache_, user_, k.data(), k.size(), &v) == TC_FOUND) resident.push_back(n);
  }
  std::mt19937_64 rng(42);
  auto keys = [&](int count) {
    std::vector<int> out(static_cast<size_t>(count));
    std::uniform_int_distribution<size_t> pick(0, resident.size() - 1);
    for (auto& k : out) k = resident[pick(rng)];
    return out;
  };
  std::vector<std::string> ids(kUsers + 1);
  for (int n = 1; n <= kUsers; ++n) ids[n] = UserId(n);
  const double overhead = TimerOverheadNs();
  std::vector<Figure> figs;

  figs.push_back(Measure("tenantcache C API (`tc_cache_get` + field)", keys(Samples(1000000)), ids, overhead,
                         [&](int, std::string_view k) -> size_t {
                           tc_value val;
                           if (tc_cache_get(cache_, user_, k.data(), k.size(), &val) != TC_FOUND) return 0;
                           const char* role = nullptr;
                           size_t len = 0;
                           tc_value_get(&val, "role", &role, &len);
                           return len;
                         }));
  tc_hit_p50_ = figs.back().lat.p50;

  {
    // The maps are built in a shuffled order so that their nodes do not sit
    // in the order of the lookup keys' creation.
    std::vector<int> order(resident);
    std::shuffle(order.begin(), order.end(), rng);
    StringMap<Row> map;
    for (int n : order) map.emplace(ids[n], rows_[n - 1]);
    figs.push_back(Measure("`std::unordered_map`, unlocked (per process)", keys(Samples(1000000)), ids,
                           overhead, [&](int, std::string_view k) -> size_t {
                             const auto it = map.find(k);
                             return it == map.end() ? 0 : it->second.role.size();
                           }));
    std::shared_mutex mu;
    figs.push_back(Measure("`std::unordered_map` + `std::shared_mutex`", keys(Samples(1000000)), ids,
                           overhead, [&](int, std::string_view k) -> size_t {
                             std::shared_lock lock(mu);
                             const auto it = map.find(k);
                             return it == map.end() ? 0 : it->second.role.size();
                           }));
  }

  if (args_.redis_port > 0) {
    redisContext* r = redisConnect("127.0.0.1", args_.redis_port);
    if (r == nullptr || r->err) {
      std::fprintf(stderr, "redis: cannot connect\n");
      std::exit(1);
    }
    for (int n : resident)
      redisAppendCommand(r, "SET %s %s", ids[n].c_str(), Serialize(rows_[n - 1]).c_str());
    for (size_t i = 0; i < resident.size(); ++i) {
      void* reply = nullptr;
      redisGetReply(r, &reply);
      freeReplyObject(reply);
    }
    figs.push_back(Measure("Redis GET (hiredis, TCP loopback)", keys(Samples(50000)), ids, overhead,
                           [&](int, std::string_view k) -> size_t {
                             auto* reply =
                                 static_cast<redisReply*>(redisCommand(r, "GET %b", k.data(), k.size()));
                             const size_t len =
                                 reply != nullptr && reply->type == REDIS_REPLY_STRING ? reply->len : 0;
                             freeReplyObject(reply);
                             return len;
                           }));
    redisFree(r);
  } else {
    figs.push_back({"Redis GET (hiredis, TCP loopback)", {}, 0, false, "not run (no --redis-port)"});
  }

  if (args_.memcached_port > 0) {
    memcached_st* m = memcached_create(nullptr);
    memcached_server_add(m, "127.0.0.1", static_cast<in_port_t>(args_.memcached_port));
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    for (int n : resident) {
      const std::string v2 = Serialize(rows_[n - 1]);
      memcached_set(m, ids[n].data(), ids[n].size(), v2.data(), v2.size(), 0, 0);
    }
    figs.push_back(Measure("memcached GET (libmemcached, TCP loopback)", keys(Samples(50000)), ids, overhead,
                           [&](int, std::string_view k) -> size_t {
                             size_t len = 0;
                             uint32_t flags = 0;
                             memcached_return_t rc;
                             char* val = memcached_get(m, k.data(), k.size(), &len, &flags, &rc);
                             std::free(val);
                             return rc == MEMCACHED_SUCCESS ? len : 0;
                           }));
    memcached_free(m);
  } else {
    figs.push_back(
        {"memcached GET (libmemcached, TCP loopback)", {}, 0, false, "not run (no --memcached-port)"});
  }

  {
    PGconn* c = PQconnectdb(conninfo_.c_str());
    PQclear(PQprepare(c, "join", kUserQuery, 1, nullptr));
    PQclear(PQprepare(c, "q_user",
                      "SELECT yacht_id, role, active FROM fleet.user_accounts WHERE id = $1::uuid", 1,
                      nullptr));
    PQclear(PQprepare(c, "q_tenant",
                      "SELECT yacht_code, tenant_url FROM fleet.fleet_registry WHERE id = $1::uuid", 1,
                      nullptr));
    PQclear(PQprepare(c, "q_host", "SELECT id FROM fleet.fleet_registry WHERE lower(host) = $1", 1, nullptr));
    auto run = [&](const char* stmt, const std::string& param) -> size_t {
      const char* params[] = {param.c_str()};
      PGresult* res = PQexecPrepared(c, stmt, 1, params, nullptr, nullptr, 0);
      const size_t n = PQntuples(res) == 1 ? std::strlen(PQgetvalue(res, 0, 0)) : 0;
      PQclear(res);
      return n;
    };
    std::vector<std::string> hosts(kTenants + 1);
    {
      PGresult* res = PQexec(c, "SELECT host FROM fleet.fleet_registry ORDER BY id");
      for (int i = 0; i < PQntuples(res) && i < kTenants; ++i) hosts[i] = PQgetvalue(res, i, 0);
      PQclear(res);
    }
    figs.push_back(Measure("PostgreSQL, the namespace's join (prepared, unix socket)", keys(Samples(20000)),
                           ids, overhead,
                           [&](int, std::string_view k) { return run("join", std::string(k)); }));
    figs.push_back(Measure("PostgreSQL, three queries (host → tenant, user, tenant row)",
                           keys(Samples(10000)), ids, overhead, [&](int n, std::string_view k) {
                             return run("q_host", hosts[static_cast<size_t>(n % kTenants)]) +
                                    run("q_user", std::string(k)) + run("q_tenant", rows_[n - 1].tenant);
                           }));
    PQfinish(c);
  }

  std::printf("## 1. A lookup that hits\n\n");
  std::printf(
      "User id → tenant id and role, random keys over the %zu users resident in every store (the cache was "
      "filled through the daemon: %zu of %d users in %.1f s, 4 threads). One thread; per-lookup latency with "
      "the timer's own cost (%.0f ns) subtracted; throughput from the same lookups untimed. Each key is in "
      "hand when it is looked up, as a request's is: the ids are laid out one after another in lookup order, "
      "so no store pays for fetching its key from a table.\n\n",
      resident.size(), cached, kUsers, fill_s, overhead);
  std::printf(
      "| store | p50 | p99 | throughput (1 thread) | p50 ratio to tenantcache "
      "|\n|---|---:|---:|---:|---:|\n");
  for (const auto& f : figs) {
    if (!f.ran) {
      std::printf("| %s | – | – | – | %s |\n", f.name.c_str(), f.note.c_str());
      continue;
    }
    std::printf("| %s | %s | %s | %s | %.2f× |\n", f.name.c_str(), Fmt(f.lat.p50).c_str(),
                Fmt(f.lat.p99).c_str(), Ops(f.ops).c_str(), f.lat.p50 / tc_hit_p50_);
  }
  std::printf("\n<!-- tc_c_p50_ns=%.1f -->\n", tc_hit_p50_);
  std::printf(
      "\nThe same lookups timed three ways in one run (a tight loop, where the processor overlaps a map's "
      "independent lookups and not tenantcache's; a chain of dependent lookups; each timed on its own as "
      "here), "
      "beside one dependent load: section 11.\n");
  std::printf("\nA miss (a fill through the daemon) beside the same query run directly: section 8.\n\n");
  std::fflush(stdout);
}

void Bench::Memory() {
  tc_info info;
  tc_cache_info(cache_, &info);
  // std::unordered_map: bytes the allocator hands out while it is built.
  const size_t before = mallinfo2().uordblks;
  size_t map_bytes = 0, map_entries = 0;
  {
    std::unordered_map<std::string, Row> map;
    for (int n = 1; n <= kUsers; ++n) map.emplace(UserId(n), rows_[n - 1]);
    map_bytes = mallinfo2().uordblks - before;
    map_entries = map.size();
  }
  std::printf(
      "## 2. Memory per cached entry\n\n| store | bytes per entry | how measured |\n|---|---:|---|\n");
  std::printf(
      "| tenantcache | %.0f | cache file (%.0f MiB for capacity %llu, slots of %u bytes) ÷ capacity; "
      "shared by every process on the host |\n",
      static_cast<double>(info.file_bytes) / static_cast<double>(info.capacity),
      static_cast<double>(info.file_bytes) / (1 << 20), static_cast<unsigned long long>(info.capacity),
      info.slot_bytes);
  std::printf(
      "| `std::unordered_map<std::string, Row>` | %.0f | heap bytes allocated for %zu entries "
      "(mallinfo2); one copy per process |\n",
      static_cast<double>(map_bytes) / static_cast<double>(map_entries), map_entries);
  if (args_.redis_port > 0) {
    redisContext* r = redisConnect("127.0.0.1", args_.redis_port);
    auto* reply = static_cast<redisReply*>(redisCommand(r, "INFO memory"));
    const char* at =
        reply != nullptr && reply->str != nullptr ? std::strstr(reply->str, "used_memory:") : nullptr;
    const double used = at ? std::atof(at + 12) : 0;
    freeReplyObject(reply);
    reply = static_cast<redisReply*>(redisCommand(r, "DBSIZE"));
    const long long keys = reply != nullptr ? reply->integer : 0;
    freeReplyObject(reply);
    redisFree(r);
    std::printf("| Redis | %.0f | `used_memory` ÷ %lld keys (includes Redis's own ~1 MiB baseline) |\n",
                keys > 0 ? used / static_cast<double>(keys) : 0.0, keys);
  }
  if (args_.memcached_port > 0) {
    memcached_st* m = memcached_create(nullptr);
    memcached_server_add(m, "127.0.0.1", static_cast<in_port_t>(args_.memcached_port));
    memcached_return_t rc;
    memcached_stat_st* st = memcached_stat(m, nullptr, &rc);
    if (st != nullptr && rc == MEMCACHED_SUCCESS && st->curr_items > 0)
      std::printf(
          "| memcached | %.0f | `bytes` ÷ %llu `curr_items` (item memory; slab slack not counted) |\n",
          static_cast<double>(st->bytes) / static_cast<double>(st->curr_items),
          static_cast<unsigned long long>(st->curr_items));
    memcached_stat_free(m, st);
    memcached_free(m);
  }
  std::printf(
      "\ntenantcache also holds `%u` bytes of recency per slot in a shared-memory segment. The daemon's "
      "resident memory with the cache mapped: %zu MiB.\n\n",
      4u, test::ResidentKb(daemon_->pid()) / 1024);
  std::fflush(stdout);
}

// Commit -> invalid in shared memory, beside a raw LISTEN client, for one
// update of one cached user. Both timed from the moment the UPDATE is sent.
void Bench::CommitToInvalid() {
  bench::CommitToInvalid probe(conninfo_, cache_, user_);
  const int rounds = Samples(300);
  auto measure = [&](int first, Pct* o, Pct* t) {
    std::vector<double> ours, theirs;
    for (int i = 0; i < rounds; ++i) {
      const auto sample = probe.Round(UserId(first + i));
      if (!sample) {
        std::fprintf(stderr, "cannot fill user %d through the daemon\n", first + i);
        std::exit(1);
      }
      ours.push_back(sample->invalid_us);
      theirs.push_back(sample->listener_us);
    }
    *o = Percentiles(ours);
    *t = Percentiles(theirs);
  };
  Pct idle_o, idle_t, load_o, load_t;
  measure(1, &idle_o, &idle_t);
  // A steady load: another connection updates other users 500 times a second.
  UpdateLoad load(conninfo_, 500, [](int i) { return 50001 + i % 40000; });
  const auto l0 = Clock::now();
  measure(1001, &load_o, &load_t);
  load.Stop();
  const double rate = load.updates() / std::chrono::duration<double>(Clock::now() - l0).count();
  std::printf("## 3. Commit → invalid\n\n");
  std::printf(
      "From sending a one-row UPDATE (autocommit) to: the entry reading as invalid in shared memory "
      "(tenantcache), and a plain libpq `LISTEN` client receiving the same notification (the floor any "
      "NOTIFY-based design has). %d rounds each.\n\n",
      rounds);
  std::printf(
      "| condition | tenantcache p50 | p99 | raw listener p50 | p99 | p50 ratio | p99 ratio |\n"
      "|---|---:|---:|---:|---:|---:|---:|\n");
  std::printf("| idle | %.0f µs | %.0f µs | %.0f µs | %.0f µs | %.2f× | %.2f× |\n", idle_o.p50, idle_o.p99,
              idle_t.p50, idle_t.p99, idle_o.p50 / idle_t.p50, idle_o.p99 / idle_t.p99);
  std::printf(
      "| under %.0f updates/s of other users | %.0f µs | %.0f µs | %.0f µs | %.0f µs | %.2f× | %.2f× |\n\n",
      rate, load_o.p50, load_o.p99, load_t.p50, load_t.p99, load_o.p50 / load_t.p50, load_o.p99 / load_t.p99);
  std::printf(
      "A per-process TTL cache (cachetools, moka) serves the old role until its TTL expires: with a "
      "60 s TTL, 30 s on average.\n\n");
  std::fflush(stdout);
}

void Bench::TenantFanOut() {
  // End to end: a registry row's UPDATE -> every cached user of that tenant invalid.
  PGconn* writer = PQconnectdb(conninfo_.c_str());
  std::vector<double> e2e;
  const int rounds = Samples(50);
  size_t per_tenant = 0;
  std::map<std::string, std::vector<std::string>> by_tenant;
  for (int n = 1; n <= kUsers; ++n) by_tenant[rows_[n - 1].tenant].push_back(UserId(n));
  auto it = by_tenant.begin();
  for (int t = 1; t <= rounds && it != by_tenant.end(); ++t, ++it) {
    const std::vector<std::string>& members = it->second;
    tc_value v;
    size_t cached = 0;
    for (const auto& k : members) {
      if (tc_cache_get(cache_, user_, k.data(), k.size(), &v) != TC_FOUND)
        (void)tc_cache_lookup(cache_, user_, k.data(), k.size(), 5000, &v);
      cached += tc_cache_get(cache_, user_, k.data(), k.size(), &v) == TC_FOUND;
    }
    per_tenant = std::max(per_tenant, cached);
    const auto t0 = Clock::now();
    Exec(writer,
         "UPDATE fleet.fleet_registry SET tenant_url = tenant_url || '/' WHERE id = '" + it->first + "'");
    WaitAllInvalid(members);
    e2e.push_back(Us(Clock::now() - t0));
  }
  PQfinish(writer);
  const Pct p = Percentiles(e2e);
  auto tenant_cost = [](uint64_t entries) {
    test::TempDir tmp;
    auto w = test::OpenSynced(test::FleetOptions(tmp.File("c"), entries + entries / 10));
    for (uint64_t i = 0; i < entries; ++i)
      (void)w->Put(0, test::Uuid(i), EntryData{test::Uuid(i % 1000), {"Y", "https://y", "crew"}}, 0,
                   w->BeginFill());
    const auto s = Clock::now();
    for (int i = 0; i < 10000; ++i) w->InvalidateTenant(test::Uuid(static_cast<uint64_t>(i) % 1000));
    return Ns(Clock::now() - s) / 10000;
  };
  const double t1m = tenant_cost(args_.quick ? 100'000 : 1'000'000), t1k = tenant_cost(1'000);
  std::printf("## 4. Tenant fan-out\n\n");
  std::printf(
      "- A tenant's registry row changes (UPDATE, autocommit): all %zu cached users of that tenant read "
      "as invalid p50 %.0f µs, p99 %.0f µs after the UPDATE was sent (%d tenants).\n",
      per_tenant, p.p50, p.p99, rounds);
  std::printf(
      "- The writer's tenant invalidation is one generation bump, whatever the number of entries: %.0f ns "
      "with %s entries cached, %.0f ns with 1k.\n\n",
      t1m, args_.quick ? "100k" : "1M", t1k);
  std::fflush(stdout);
}

// 100 concurrent misses of one key from 8 processes; queries that reach
// PostgreSQL, counted by pg_stat_statements.
void Bench::Stampede() {
  constexpr int kProcs = 8, kMisses = 100;
  const int rounds = Samples(20);
  struct Sync {
    std::atomic<int> round, ready;
  };
  auto* sync = static_cast<Sync*>(
      mmap(nullptr, sizeof(Sync), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  PgConn admin(conninfo_);
  auto queries = [&] {
    return std::atoll(admin
                          .Scalar("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE "
                                  "'%fleet.user_accounts u JOIN fleet.fleet_registry r%'")
                          .c_str());
  };
  // mode 0: tenantcache (tc_cache_lookup); mode 1: each process has its own
  // in-memory cache that coalesces concurrent misses of a key (single flight).
  auto run = [&](int mode, int first_key) -> double {
    sync->round = 0;
    sync->ready = 0;
    std::vector<pid_t> children;
    for (int p = 0; p < kProcs; ++p) {
      const pid_t pid = fork();
      if (pid == 0) {
        const int threads = kMisses / kProcs + (p < kMisses % kProcs ? 1 : 0);
        tc_cache* cache = nullptr;
        if (mode == 0 && tc_cache_open(daemon_->cache_path().c_str(), &cache) != 0) _exit(1);
        PGconn* c = mode == 1 ? PQconnectdb(conninfo_.c_str()) : nullptr;
        if (c != nullptr) PQclear(PQprepare(c, "q", kUserQuery, 1, nullptr));
        std::mutex mu;
        std::condition_variable cv;
        std::map<std::string, int> state;  // 1 loading, 2 loaded
        std::vector<std::thread> ts;
        for (int t = 0; t < threads; ++t)
          ts.emplace_back([&] {
            for (int r = 0; r < rounds; ++r) {
              const std::string key = UserId(first_key + r);
              ++sync->ready;
              while (sync->round.load() <= r) sched_yield();  // the start line
              if (mode == 0) {
                tc_value v;
                (void)tc_cache_lookup(cache, user_, key.data(), key.size(), 10000, &v);
                continue;
              }
              std::unique_lock lock(mu);
              if (state[key] == 0) {
                state[key] = 1;
                lock.unlock();
                const char* params[] = {key.c_str()};
                PQclear(PQexecPrepared(c, "q", 1, params, nullptr, nullptr, 0));
                lock.lock();
                state[key] = 2;
                cv.notify_all();
              } else {
                cv.wait(lock, [&] { return state[key] == 2; });
              }
            }
          });
        for (auto& t : ts) t.join();
        if (cache != nullptr) tc_cache_close(cache);
        if (c != nullptr) PQfinish(c);
        _exit(0);
      }
      children.push_back(pid);
    }
    const long long q0 = queries();
    for (int r = 0; r < rounds; ++r) {
      const std::string key = UserId(first_key + r);
      if (mode == 0) tc_cache_invalidate(cache_, user_, key.data(), key.size(), 5000);  // cold
      while (sync->ready.load() < kMisses * (r + 1)) sched_yield();
      sync->round = r + 1;  // go
    }
    for (pid_t pid : children) waitpid(pid, nullptr, 0);
    return static_cast<double>(queries() - q0) / rounds;
  };
  const double ours = run(0, 20001), theirs = run(1, 30001);
  munmap(sync, sizeof(Sync));
  std::printf("## 5. Stampede\n\n");
  std::printf(
      "%d processes with %d threads in all ask for the same cold key at the same moment (%d keys, one after "
      "the other); queries that reached PostgreSQL per 100 concurrent misses (pg_stat_statements):\n\n",
      kProcs, kMisses, rounds);
  std::printf("| design | queries per 100 concurrent misses |\n|---|---:|\n");
  std::printf("| tenantcache (the daemon coalesces misses from every process) | %.1f |\n", ours);
  std::printf("| one coalescing (single-flight) cache per process | %.1f |\n", theirs);
  std::printf(
      "| a cache per process without coalescing (cachetools `TTLCache`) | 100 (by construction) |\n\n");
  std::fflush(stdout);
}

void Bench::BulkUpdate() {
  PGconn* writer = PQconnectdb(conninfo_.c_str());
  Fill(1, kUsers);
  std::vector<std::string> all;
  for (int n = 1; n <= kUsers; ++n) all.push_back(UserId(n));
  tc_value v;
  size_t cached = 0;
  for (const auto& k : all) cached += tc_cache_get(cache_, user_, k.data(), k.size(), &v) == TC_FOUND;
  const auto u0 = Clock::now();
  Exec(writer, "UPDATE fleet.user_accounts SET role = 'owner'");
  const auto committed = Clock::now();
  WaitAllInvalid(all);
  const auto all_invalid = Clock::now();
  PQfinish(writer);
  std::printf("## 6. Bulk invalidation\n\n");
  std::printf(
      "One UPDATE of all %d users (%zu cached): the statement took %.0f ms (triggers included); from its "
      "commit to all %zu entries reading as invalid: %.2f ms (above `bulk_threshold` the trigger sends "
      "one flush instead of 100k messages).\n\n",
      kUsers, cached, Ms(committed - u0), cached, Ms(all_invalid - committed));
  std::fflush(stdout);
}

void Bench::DaemonCpu() {
  const long tick = sysconf(_SC_CLK_TCK);
  auto cpu_percent = [&](const std::function<void()>& during) {
    const int64_t c0 = ProcCpuTicks(daemon_->pid());
    const auto t0 = Clock::now();
    during();
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    return 100.0 * static_cast<double>(ProcCpuTicks(daemon_->pid()) - c0) / static_cast<double>(tick) / wall;
  };
  const auto window = args_.quick ? 3s : 10s;
  const double idle = cpu_percent([&] { std::this_thread::sleep_for(window); });
  // Load: every user cached, 200 updates/s of cached users and 2 threads
  // reading random users through tc_cache_lookup (hits, and a refill after
  // each invalidation).
  Fill(1, kUsers);
  auto daemon_lookups = [&] {
    return std::strtoull(
        ParseFlatJson(test::ControlRequest(daemon_->control_socket(), protocol::kStats))["lookups"].c_str(),
        nullptr, 10);
  };
  const unsigned long long lookups0 = daemon_lookups();
  std::atomic<bool> stop{false};
  std::atomic<long> reads{0};
  int updates = 0;
  const double busy = cpu_percent([&] {
    UpdateLoad load(conninfo_, 200, [](int i) { return 1 + (i * 7919) % kUsers; });
    std::vector<std::thread> t;
    for (int r = 0; r < 2; ++r)
      t.emplace_back([&, r] {
        std::mt19937 rng(static_cast<unsigned>(r));
        std::uniform_int_distribution<int> pick(1, kUsers);
        tc_value v;
        while (!stop) {
          const std::string k = UserId(pick(rng));
          (void)tc_cache_lookup(cache_, user_, k.data(), k.size(), 5000, &v);
          ++reads;
        }
      });
    std::this_thread::sleep_for(window);  // the measurement window
    stop = true;
    for (auto& x : t) x.join();
    load.Stop();
    updates = load.updates();
  });
  const double secs = std::chrono::duration<double>(window).count();
  const double misses = static_cast<double>(daemon_lookups() - lookups0) / secs;
  std::printf("## 7. The daemon's CPU\n\n");
  std::printf("| condition | daemon CPU (one core = 100%%) |\n|---|---:|\n");
  std::printf("| idle (listener and cache heartbeats only) | %.2f%% |\n", idle);
  std::printf(
      "| %.0f updates/s of cached users, %.2f M lookups/s from 2 threads (of which %.0f/s missed and "
      "reached the daemon) | %.1f%% |\n\n",
      static_cast<double>(updates) / secs, static_cast<double>(reads) / secs / 1e6, misses, busy);
  std::fflush(stdout);
}

int Bench::Run() {
  Setup();
  HitLatency();
  Memory();
  CommitToInvalid();
  TenantFanOut();
  Stampede();
  BulkUpdate();
  DaemonCpu();
  tc_cache_close(cache_);
  daemon_->Signal(SIGTERM);
  const auto st = daemon_->Wait();
  return st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tenantcache::bench

int main(int argc, char** argv) {
  tenantcache::bench::Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    if (s == "--redis-port" && i + 1 < argc) {
      a.redis_port = std::atoi(argv[++i]);
    } else if (s == "--memcached-port" && i + 1 < argc) {
      a.memcached_port = std::atoi(argv[++i]);
    } else if (s == "--quick") {
      a.quick = true;
    } else {
      std::fprintf(stderr, "usage: compare_bench [--redis-port N] [--memcached-port N] [--quick]\n");
      return 2;
    }
  }
  return tenantcache::bench::Bench(a).Run();
}
