// Consistency soak: the whole product under faults, checked against what was
// committed.
//
//   tc_soak [--duration SECONDS] [--seed N] [--readers N] [--writes-per-sec N]
//           [--reads-per-sec N] [--fault-every SECONDS] [--stale-after-ms N]
//           [--topology direct|pgbouncer|standby|relay] [--apply-delay-ms N] [--faults NAME,...]
//           [--lookup-timeout-ms N]
//
// It starts a throwaway PostgreSQL cluster and the real tenantcached, with a
// namespace "member" whose value carries the member row's version and its
// tenant row's version. Writer threads bump those versions (UPDATE ...
// RETURNING version, autocommit) and publish, per row, when each version's
// commit was acknowledged. Reader processes (this binary, re-executed with
// --reader) look members up through the client library and check every
// value they are served against that history:
//
//   stale     a newer version of the member or its tenant had been
//             acknowledged before the read started; its age is the time from
//             that acknowledgment to the read (a lower bound of the true
//             staleness, by the commit's round trip);
//   wrong     the value names another tenant, or a member reads as absent.
//
// The topology says how the daemon reaches PostgreSQL:
//
//   direct      loaders and listener connect to the server itself.
//   pgbouncer   loaders through a PgBouncer in transaction mode (the Debian
//               package, tests/support/pgbouncer.*, four server
//               connections), the listener to the server itself.
//   relay       the daemon is a Redis subscriber (daemon/relay.h): two
//               relay daemons LISTEN on the server and publish to a real
//               redis-server (tests/support/redis_server.*), the checked
//               daemon reads Redis instead of LISTENing; loaders direct.
//   standby     loaders on a streaming hot standby of the server (made with
//               pg_basebackup -R) that applies each commit --apply-delay-ms
//               late (default 0.3 x stale_after: most fills wait for it,
//               and readers still get answers; above stale_after a fill
//               answered from it unchecked would also fail the run as
//               stale > bound, but then every miss waits that long);
//               listener and writers on the primary.
//
// A fault injector, at random times (seeded), injects one of the faults of
// the topology (kFaults; --faults picks some) and waits for the cache to be
// available again after each:
//
//   kill-listener     terminates the listener's backend;
//   restart-postgres  restarts PostgreSQL (fast);
//   stop-listener     SIGSTOPs the listener's backend for 0.5-2.5 x stale_after;
//   kill-daemon       SIGKILLs tenantcached and starts it again;
//   stop-daemon       SIGSTOPs tenantcached for 0.5-2.5 x stale_after (its
//                     readers must fail closed on their own);
//   restart-pgbouncer (pgbouncer only) stops and starts PgBouncer: every
//                     loader connection drops; recovered once a fill has
//                     written the cache again.
//   pause-replay      (standby) pauses the standby's replay for 0.5-2.5 x
//                     stale_after: fills must wait or time out, never serve
//                     what it has not replayed.
//   kill-relay        (relay) SIGKILLs one of the two relays and starts it
//                     again;
//   restart-redis     (relay) kills redis-server and starts it again on the
//                     same port (a failover as clients see it);
//   stop-redis        (relay) SIGSTOPs redis-server for 0.5-2.5 x
//                     stale_after: every connection stays open and silent.
// In the relay topology the listener faults hit a relay's LISTEN backend
// (the subscriber has none), and the checked daemon need not reconnect.
//
// The run fails (exit 1) when any read was served staler than the fail-closed
// bound (stale_after), any answer was wrong, a fault was not recovered from
// within 60 s, a reader died, or nothing was checked. Reads staler than 10 ms
// while the cache was trusted are reported (they happen in the windows that
// the bound exists for: a deaf listener not yet detected, a dead daemon whose
// last heartbeat is not yet stale).
#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "protocol.h"
#include "stats_format.h"
#include "support/daemon_process.h"
#include "support/pg_cluster.h"
#include "support/pgbouncer.h"
#include "support/redis_server.h"
#include "support/standby.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::soak {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr uint32_t kRing = 64;     // acknowledged versions kept per row
constexpr uint64_t kAckBits = 40;  // microseconds since the run's start
constexpr uint64_t kAckMask = (uint64_t{1} << kAckBits) - 1;
constexpr uint64_t kTagMask = (uint64_t{1} << (64 - kAckBits)) - 1;  // version, low 24 bits
constexpr int kMaxReaders = 64;
constexpr int64_t kFreshUs = 10'000;  // "stale beyond 10 ms"

// One row's acknowledged versions: ring[v % kRing] = (v & kTagMask) << 40 | ack_us.
// One writer thread per row, so versions are published in order.
struct History {
  std::atomic<uint64_t> latest;
  std::atomic<uint64_t> ring[kRing];
};

struct ReaderCounters {
  std::atomic<uint64_t> reads, found, unavailable, busy, timeout, daemon_error, other;
  std::atomic<uint64_t> stale_fresh, stale_bound, wrong;
  std::atomic<int64_t> max_stale_us;
  std::atomic<int> done;
  char first_problem[256];
};

// The file the driver and the readers share (MAP_SHARED, zero-filled by
// ftruncate: the atomics must be lock-free so that zero bytes are a valid
// zero and processes can share them).
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<int64_t>::is_always_lock_free &&
              std::atomic<int>::is_always_lock_free);
struct Shared {
  uint32_t members, tenants;
  int64_t bound_us;
  int64_t base_us;  // CLOCK_MONOTONIC at the start: times are kept relative to it
  std::atomic<int> stop;
  ReaderCounters readers[kMaxReaders];
  History rows[1];  // members, then tenants
};

size_t SharedSize(uint32_t rows) { return sizeof(Shared) + sizeof(History) * rows; }

int64_t NowUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000 + ts.tv_nsec / 1000;
}

std::string MemberKey(uint32_t m) { return test::Uuid(m); }
std::string TenantKey(uint32_t t) { return test::Uuid(1'000'000 + t); }

void Publish(History& h, uint64_t version, int64_t ack_us) {
  h.ring[version % kRing].store(
      ((version & kTagMask) << kAckBits) | (static_cast<uint64_t>(ack_us) & kAckMask),
      std::memory_order_release);
  h.latest.store(version, std::memory_order_release);
}

// How long before `read_us` a version newer than `seen` was acknowledged;
// negative when none was. Versions are acknowledged in order, so the oldest
// newer version still in the ring gives a lower bound when older ones were
// overwritten or their acknowledgment was lost (a commit whose outcome the
// writer could not learn).
int64_t Staleness(const History& h, uint64_t seen, int64_t read_us) {
  const uint64_t latest = h.latest.load(std::memory_order_acquire);
  const uint64_t first = std::max(seen + 1, latest >= kRing ? latest - kRing + 1 : 0);
  for (uint64_t w = first; w <= latest; ++w) {
    const uint64_t word = h.ring[w % kRing].load(std::memory_order_acquire);
    if ((word >> kAckBits) != (w & kTagMask)) continue;  // not acknowledged (or overwritten)
    return read_us - static_cast<int64_t>(word & kAckMask);
  }
  return -1;
}

enum class Topology { kDirect, kPgBouncer, kStandby, kRelay };
const char* const kTopologies[] = {"direct", "pgbouncer", "standby", "relay"};

enum class Fault {
  kKillListener,
  kRestartPostgres,
  kStopListener,
  kKillDaemon,
  kStopDaemon,
  kRestartPgBouncer,
  kPauseReplay,
  kKillRelay,
  kRestartRedis,
  kStopRedis
};
struct FaultKind {
  Fault fault;
  const char* name;
  // Injected only in this topology (nullopt: in every one).
  std::optional<Topology> only_in;
  // The listener loses its connection: recovery counts only once the daemon
  // has noticed (a reconnect), or "available" could be the state from before.
  bool listener_reconnects;
};
const FaultKind kFaults[] = {
    {Fault::kKillListener, "kill-listener", std::nullopt, true},
    {Fault::kRestartPostgres, "restart-postgres", std::nullopt, true},
    {Fault::kStopListener, "stop-listener", std::nullopt, false},
    {Fault::kKillDaemon, "kill-daemon", std::nullopt, false},
    {Fault::kStopDaemon, "stop-daemon", std::nullopt, false},
    {Fault::kRestartPgBouncer, "restart-pgbouncer", Topology::kPgBouncer, false},
    {Fault::kPauseReplay, "pause-replay", Topology::kStandby, false},
    {Fault::kKillRelay, "kill-relay", Topology::kRelay, false},
    {Fault::kRestartRedis, "restart-redis", Topology::kRelay, true},
    {Fault::kStopRedis, "stop-redis", Topology::kRelay, false},
};

struct Options {
  int duration_s = 120;
  uint64_t seed = 1;
  int readers = 4;
  int writes_per_sec = 200;
  int reads_per_sec = 5000;  // per reader
  double fault_every_s = 12;
  int stale_after_ms = 1000;
  uint32_t members = 2000, tenants = 20;
  Topology topology = Topology::kDirect;
  int apply_delay_ms = -1;  // standby: -1 = 0.3 x stale_after
  // A reader's tc_cache_lookup timeout; -1: 1 s, or 2.5 s on a standby,
  // where a fill waits for the replay for up to query_timeout (2 s) and a
  // shorter wait would end every miss in the reader's own timeout.
  int lookup_timeout_ms = -1;
  std::vector<size_t> faults;  // indexes into kFaults; empty: every fault of the topology
  // Reader mode.
  std::string shared_path, cache_path;
  int reader_index = -1;
};

Shared* MapShared(const std::string& path, uint32_t rows, bool create) {
  const int fd = open(path.c_str(), create ? O_RDWR | O_CREAT | O_TRUNC : O_RDWR, 0600);
  if (fd < 0 || (create && ftruncate(fd, static_cast<off_t>(SharedSize(rows))) != 0)) {
    std::perror(path.c_str());
    std::exit(2);
  }
  void* p = mmap(nullptr, SharedSize(rows), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    std::perror("mmap");
    std::exit(2);
  }
  return static_cast<Shared*>(p);
}

// ---- a reader process ------------------------------------------------------

void Problem(ReaderCounters& c, const std::string& what) {
  if (c.first_problem[0] == '\0') std::snprintf(c.first_problem, sizeof c.first_problem, "%s", what.c_str());
}

int RunReader(const Options& o) {
  // A reader never outlives the driver (killed, crashed or timed out).
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) return 1;
  Shared* s = MapShared(o.shared_path, o.members + o.tenants, false);
  ReaderCounters& c = s->readers[o.reader_index];
  tc_cache* cache = nullptr;
  if (tc_cache_open(o.cache_path.c_str(), &cache) != 0) {
    Problem(c, "cannot open the cache file");
    c.done = 2;
    return 1;
  }
  tc_ns ns;
  if (tc_namespace(cache, "member", &ns) != 0) {
    Problem(c, "no namespace member");
    c.done = 2;
    return 1;
  }
  std::vector<std::string> member_keys(o.members), tenant_ids(o.tenants);
  for (uint32_t m = 0; m < o.members; ++m) member_keys[m] = MemberKey(m);
  for (uint32_t t = 0; t < o.tenants; ++t) tenant_ids[t] = TenantKey(t);
  std::mt19937_64 rng(o.seed * 1000 + static_cast<uint64_t>(o.reader_index));
  std::uniform_int_distribution<uint32_t> pick(0, o.members - 1);
  const int batch = std::max(1, o.reads_per_sec / 100);  // paced in 10 ms ticks
  auto next_tick = Clock::now();
  tc_value v;
  int64_t max_stale = 0;
  auto check = [&](const History& h, const char* field, int64_t read_us, uint32_t row_label) {
    const char* text = nullptr;
    size_t len = 0;
    if (tc_value_get(&v, field, &text, &len) != 0 || text == nullptr) {
      ++c.wrong;
      Problem(c, std::string("value without field ") + field);
      return;
    }
    const uint64_t seen = std::strtoull(text, nullptr, 10);
    const int64_t stale = Staleness(h, seen, read_us);
    if (stale > max_stale) max_stale = stale;
    if (stale > kFreshUs) ++c.stale_fresh;
    if (stale > s->bound_us) {
      ++c.stale_bound;
      Problem(c, std::string(field) + " " + std::to_string(seen) + " of row " + std::to_string(row_label) +
                     " served " + std::to_string(stale / 1000) + " ms after a newer version was committed");
    }
  };
  while (s->stop.load(std::memory_order_acquire) == 0) {
    for (int i = 0; i < batch; ++i) {
      const uint32_t m = pick(rng);
      const uint32_t t = m % o.tenants;
      const int64_t t0 = NowUs() - s->base_us;
      const int st =
          tc_cache_lookup(cache, ns, member_keys[m].data(), member_keys[m].size(), o.lookup_timeout_ms, &v);
      ++c.reads;
      switch (st) {
        case TC_FOUND: {
          ++c.found;
          const char* tenant = tc_value_tenant(&v, nullptr);
          const char* key = tc_value_key(&v, nullptr);
          if (tenant == nullptr || tenant_ids[t] != tenant || key == nullptr || member_keys[m] != key) {
            ++c.wrong;
            Problem(c, "member " + std::to_string(m) + " served as key " + (key ? key : "(none)") +
                           " of tenant " + (tenant ? tenant : "(none)"));
            break;
          }
          check(s->rows[m], "version", t0, m);
          check(s->rows[o.members + t], "tenant_version", t0, o.members + t);
          break;
        }
        case TC_E_UNAVAILABLE:
          ++c.unavailable;
          break;
        case TC_E_BUSY:
          ++c.busy;
          break;
        case TC_E_TIMEOUT:
          ++c.timeout;
          break;
        case TC_E_DAEMON:
          ++c.daemon_error;
          break;
        case TC_NOT_FOUND:
          ++c.wrong;
          Problem(c, "member " + std::to_string(m) + " read as absent");
          break;
        default:
          ++c.other;
          Problem(c, "lookup returned " + std::string(tc_strerror(st)));
          break;
      }
    }
    c.max_stale_us.store(max_stale, std::memory_order_relaxed);
    next_tick += 10ms;
    const auto now = Clock::now();
    if (next_tick > now)
      std::this_thread::sleep_until(next_tick);  // pacing, not synchronisation
    else
      next_tick = now;
  }
  tc_cache_close(cache);
  c.done = 1;
  return 0;
}

// ---- the driver ------------------------------------------------------------

class Writer {
 public:
  Writer(int index, int count, const std::string& conninfo, const Options& o, Shared* s)
      : index_(index), count_(count), conninfo_(conninfo), o_(o), s_(s) {}

  void Run() {
    std::mt19937_64 rng(o_.seed * 7919 + static_cast<uint64_t>(index_));
    // Each writer owns the members m with m % count == index; writer 0 also
    // owns the tenants (5% of its writes).
    const uint32_t own = (o_.members - static_cast<uint32_t>(index_) + static_cast<uint32_t>(count_) - 1) /
                         static_cast<uint32_t>(count_);
    std::uniform_int_distribution<uint32_t> member(0, own - 1), tenant(0, o_.tenants - 1);
    std::uniform_int_distribution<int> percent(0, 99);
    const auto period = std::chrono::microseconds(1'000'000LL * count_ / std::max(1, o_.writes_per_sec));
    auto next = Clock::now();
    while (s_->stop.load(std::memory_order_acquire) == 0) {
      next += period;
      std::this_thread::sleep_until(next);  // pacing
      if (Clock::now() > next + 1s) next = Clock::now();
      if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
        if (conn_ != nullptr) PQfinish(conn_);
        conn_ = PQconnectdb(conninfo_.c_str());
        if (PQstatus(conn_) != CONNECTION_OK) {
          ++errors;
          continue;
        }
      }
      const bool is_tenant = index_ == 0 && percent(rng) < 5;
      const uint32_t row = is_tenant
                               ? tenant(rng)
                               : member(rng) * static_cast<uint32_t>(count_) + static_cast<uint32_t>(index_);
      const std::string key = is_tenant ? TenantKey(row) : MemberKey(row);
      const char* params[] = {key.c_str()};
      PGresult* r = PQexecParams(conn_,
                                 is_tenant ? "UPDATE soak.tenants SET version = version + 1 WHERE id = $1 "
                                             "RETURNING version"
                                           : "UPDATE soak.members SET version = version + 1 WHERE id = $1 "
                                             "RETURNING version",
                                 1, nullptr, params, nullptr, nullptr, 0);
      const int64_t ack = NowUs() - s_->base_us;
      if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        const uint64_t version = std::strtoull(PQgetvalue(r, 0, 0), nullptr, 10);
        Publish(s_->rows[is_tenant ? o_.members + row : row], version, ack);
        ++(is_tenant ? tenant_writes : member_writes);
      } else {
        ++errors;  // e.g. the server restarting; the outcome may be unknown
      }
      PQclear(r);
    }
    if (conn_ != nullptr) PQfinish(conn_);
  }

  std::atomic<uint64_t> member_writes{0}, tenant_writes{0}, errors{0};

 private:
  int index_, count_;
  std::string conninfo_;
  const Options& o_;
  Shared* s_;
  PGconn* conn_ = nullptr;
};

// `conninfo` is the loaders'; `listener_conninfo` the listener's ("" = the same).
std::string SoakConfig(const std::string& dir, const std::string& conninfo,
                       const std::string& listener_conninfo, int stale_after_ms,
                       const std::string& source_extra = "") {
  return "[daemon]\nlog_level = \"info\"\n\n[cache]\npath = \"" + dir +
         "/cache\"\ncapacity = 10000\nstale_after = \"" + std::to_string(stale_after_ms) +
         "ms\"\nheartbeat_interval = \"" + std::to_string(std::max(10, stale_after_ms / 10)) +
         "ms\"\n\n[control]\nsocket = \"" + dir +
         "/ctl.sock\"\n\n[[source]]\nname = \"main\"\nconninfo = \"" + conninfo +
         "\"\nlistener_conninfo = \"" + listener_conninfo +
         "\"\nreconnect_min = \"20ms\"\nreconnect_max = \"500ms\"\nquery_timeout = \"2s\"\n" + source_extra +
         "\n"
         "[[namespace]]\nname = \"member\"\nkind = \"uuid\"\n"
         "query = \"\"\"SELECT t.id::text AS tenant_id, m.version::text AS version, t.version::text AS "
         "tenant_version\n  FROM soak.members m JOIN soak.tenants t ON t.id = m.tenant_id WHERE m.id = "
         "$1::uuid\"\"\"\n"
         "tenant_column = \"tenant_id\"\nfields = [\"version\", \"tenant_version\"]\n";
}

// The daemon's count of listener reconnects (0 when it does not answer).
uint64_t Reconnects(const test::DaemonProcess& d) {
  const auto stats = ParseFlatJson(test::ControlRequest(d.control_socket(), protocol::kStats));
  const auto it = stats.find("reconnects");
  return it == stats.end() ? 0 : std::strtoull(it->second.c_str(), nullptr, 10);
}

// Entries the daemon's fills have written (0 when it does not answer).
uint64_t Puts(const test::DaemonProcess& d) {
  const auto stats = ParseFlatJson(test::ControlRequest(d.control_socket(), protocol::kStats));
  const auto it = stats.find("puts");
  return it == stats.end() ? 0 : std::strtoull(it->second.c_str(), nullptr, 10);
}

// The listener's backend pid, waiting (up to `timeout`) for one to exist.
int ListenerBackend(const std::string& conninfo, std::chrono::milliseconds timeout) {
  int pid = 0;
  test::WaitFor(
      [&] {
        try {
          test::PgConn c(conninfo);
          const std::string s = c.Scalar(
              "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE application_name = "
              "'tenantcached listener main'");
          pid = std::atoi(s.c_str());
        } catch (const std::exception&) {
          pid = 0;
        }
        return pid > 0;
      },
      timeout);
  return pid;
}

int RunDriver(const Options& o, const char* self) {
  std::vector<size_t> fault_set = o.faults;
  for (size_t f = 0; f < std::size(kFaults) && o.faults.empty(); ++f)
    if (!kFaults[f].only_in || *kFaults[f].only_in == o.topology) fault_set.push_back(f);
  std::printf("soak: %d s, seed %" PRIu64
              ", topology %s, %d reader processes at %d reads/s each, %d writes/s, "
              "a fault every ~%.0f s, stale_after %d ms\n",
              o.duration_s, o.seed, kTopologies[static_cast<int>(o.topology)], o.readers, o.reads_per_sec,
              o.writes_per_sec, o.fault_every_s, o.stale_after_ms);
  std::fflush(stdout);
  test::TempDir dir;
  test::PgCluster cluster;
  const std::string db = cluster.CreateDatabase();
  const std::string conninfo = cluster.Conninfo(db);
  {
    test::PgConn c(conninfo);
    c.Exec(test::ReadFile(test::SqlDir() + "/install.sql"));
    c.Exec(
        "CREATE SCHEMA soak;"
        "CREATE TABLE soak.tenants (id uuid PRIMARY KEY, version bigint NOT NULL DEFAULT 0);"
        "CREATE TABLE soak.members (id uuid PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES soak.tenants,"
        "                           version bigint NOT NULL DEFAULT 0);"
        "SELECT tenantcache.watch_table('soak.tenants', 'id', '{}');"
        "SELECT tenantcache.watch_table('soak.members', NULL, '{\"member\": \"id\"}');");
    std::string tenants = "INSERT INTO soak.tenants (id) VALUES ", members;
    for (uint32_t t = 0; t < o.tenants; ++t) tenants += (t ? ",('" : "('") + TenantKey(t) + "')";
    c.Exec(tenants);
    for (uint32_t m = 0; m < o.members; ++m) {
      if (m % 1000 == 0) {
        if (!members.empty()) c.Exec(members);
        members = "INSERT INTO soak.members (id, tenant_id) VALUES ";
      } else {
        members += ",";
      }
      members += "('" + MemberKey(m) + "','" + TenantKey(m % o.tenants) + "')";
    }
    c.Exec(members);
  }

  const std::string shared_path = dir.File("shared");
  Shared* s = MapShared(shared_path, o.members + o.tenants, true);
  s->members = o.members;
  s->tenants = o.tenants;
  s->bound_us = int64_t{o.stale_after_ms} * 1000;
  s->base_us = NowUs();

  // How the daemon reaches the server: writers and faults always use it directly.
  std::string loader_conninfo = conninfo, listener_conninfo;
  std::unique_ptr<test::PgBouncer> bouncer;  // outlives the daemon
  std::unique_ptr<test::Standby> standby;    // made after the data: the base backup holds it
  std::unique_ptr<test::RedisServer> redis;  // relay: outlives every daemon
  std::string source_extra;
  switch (o.topology) {
    case Topology::kDirect:
      break;
    case Topology::kRelay:
      redis = std::make_unique<test::RedisServer>();
      source_extra = "redis = \"" + redis->address() + "\"\n";
      break;
    case Topology::kPgBouncer:
      bouncer = std::make_unique<test::PgBouncer>(cluster, 4);
      loader_conninfo = bouncer->Conninfo(db);
      listener_conninfo = conninfo;
      break;
    case Topology::kStandby: {
      const int delay = o.apply_delay_ms >= 0 ? o.apply_delay_ms : o.stale_after_ms * 3 / 10;
      std::printf("standby: recovery_min_apply_delay %d ms\n", delay);
      std::fflush(stdout);
      standby = std::make_unique<test::Standby>(cluster, std::chrono::milliseconds(delay));
      loader_conninfo = standby->Conninfo(db);
      listener_conninfo = conninfo;
      break;
    }
  }
  // Relay topology: two relays, each in a directory of its own, then the
  // checked daemon as their subscriber.
  std::vector<std::unique_ptr<test::TempDir>> relay_dirs;
  std::vector<std::unique_ptr<test::DaemonProcess>> relays;
  const std::string relay_extra = source_extra + "redis_role = \"relay\"\n";
  auto start_relay = [&](size_t i) -> bool {
    relays[i] = std::make_unique<test::DaemonProcess>(
        relay_dirs[i]->path(),
        SoakConfig(relay_dirs[i]->path(), conninfo, "", o.stale_after_ms, relay_extra));
    return relays[i]->WaitReady(30s);
  };
  if (redis) {
    for (size_t i = 0; i < 2; ++i) {
      relay_dirs.push_back(std::make_unique<test::TempDir>());
      relays.emplace_back();
      if (!start_relay(i)) {
        std::fprintf(stderr, "soak: relay %zu did not become ready:\n%s\n", i, relays[i]->Log().c_str());
        return 1;
      }
    }
    source_extra += "redis_role = \"subscribe\"\n";
  }
  const std::string config =
      SoakConfig(dir.path(), loader_conninfo, listener_conninfo, o.stale_after_ms, source_extra);
  const int lookup_timeout_ms = o.lookup_timeout_ms >= 0 ? o.lookup_timeout_ms : standby ? 2500 : 1000;
  auto daemon = std::make_unique<test::DaemonProcess>(dir.path(), config);
  if (!daemon->WaitReady(30s)) {
    std::fprintf(stderr, "soak: the daemon did not become ready:\n%s\n", daemon->Log().c_str());
    return 1;
  }
  tc_cache* cache = nullptr;
  if (tc_cache_open(daemon->cache_path().c_str(), &cache) != 0) {
    std::fprintf(stderr, "soak: cannot open the cache\n");
    return 1;
  }
  auto available = [&] {
    tc_info info;
    return tc_cache_info(cache, &info) == 0 && info.available == 1 && info.synced == 1;
  };
  test::WaitFor(available, 30s);

  // Writers (threads) first, then readers (processes, exec'd afresh).
  std::vector<std::unique_ptr<Writer>> writers;
  std::vector<std::thread> writer_threads;
  for (int i = 0; i < 2; ++i) writers.push_back(std::make_unique<Writer>(i, 2, conninfo, o, s));
  for (auto& w : writers) writer_threads.emplace_back([&w] { w->Run(); });
  std::vector<pid_t> readers;
  for (int i = 0; i < o.readers; ++i) {
    // Everything the child needs is built before fork: between fork and exec
    // a child of a threaded process may only call async-signal-safe functions.
    const std::vector<std::string> args = {self,
                                           "--reader",
                                           std::to_string(i),
                                           "--shared",
                                           shared_path,
                                           "--cache",
                                           daemon->cache_path(),
                                           "--seed",
                                           std::to_string(o.seed),
                                           "--members",
                                           std::to_string(o.members),
                                           "--tenants",
                                           std::to_string(o.tenants),
                                           "--reads-per-sec",
                                           std::to_string(o.reads_per_sec),
                                           "--lookup-timeout-ms",
                                           std::to_string(lookup_timeout_ms)};
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
      execv(self, argv.data());
      _exit(127);
    }
    readers.push_back(pid);
  }

  // The fault injector.
  std::mt19937_64 rng(o.seed);
  std::uniform_real_distribution<double> gap(0.5 * o.fault_every_s, 1.5 * o.fault_every_s);
  std::uniform_int_distribution<size_t> which(0, fault_set.size() - 1);
  std::uniform_real_distribution<double> hold(0.5, 2.5);
  // How long a stopped process stays stopped: around the bound, so that
  // both sides of it are exercised.
  auto held = [&] { return std::chrono::milliseconds(static_cast<int64_t>(hold(rng) * o.stale_after_ms)); };
  // Injects one fault; returns what went wrong doing it ("" when it was done).
  auto inject = [&](Fault f) -> std::string {
    switch (f) {
      case Fault::kKillListener: {
        const int pid = ListenerBackend(cluster.Conninfo(), 30s);
        test::PgConn c(cluster.Conninfo());
        if (pid == 0 || c.Scalar("SELECT pg_terminate_backend(" + std::to_string(pid) + ")") != "t")
          return "could not find the listener's backend to kill";
        return "";
      }
      case Fault::kRestartPostgres:
        cluster.Restart();
        return "";
      case Fault::kStopListener: {
        const int pid = ListenerBackend(cluster.Conninfo(), 30s);
        if (pid == 0) return "could not find the listener's backend to stop";
        kill(pid, SIGSTOP);
        std::this_thread::sleep_for(held());  // the fault's duration
        kill(pid, SIGCONT);
        return "";
      }
      case Fault::kKillDaemon:
        daemon->Signal(SIGKILL);
        daemon->Wait(10s);
        daemon = std::make_unique<test::DaemonProcess>(dir.path(), config);
        if (!daemon->WaitReady(30s)) return "the daemon did not start again after SIGKILL";
        return "";
      case Fault::kStopDaemon:
        daemon->Signal(SIGSTOP);
        std::this_thread::sleep_for(held());  // the fault's duration
        daemon->Signal(SIGCONT);
        return "";
      case Fault::kRestartPgBouncer: {
        // The cache stays available (the listener is direct): recovery is
        // a fill written again, through new loader connections.
        bouncer->Restart();
        const uint64_t puts = Puts(*daemon);
        if (!test::WaitFor([&] { return Puts(*daemon) > puts; }, 60s))
          return "no fill was written within 60 s after PgBouncer restarted";
        return "";
      }
      case Fault::kKillRelay: {
        const size_t i = std::uniform_int_distribution<size_t>(0, relays.size() - 1)(rng);
        relays[i]->Signal(SIGKILL);
        relays[i]->Wait(10s);
        if (!start_relay(i))
          return "relay " + std::to_string(i) + " did not start again after SIGKILL:\n" + relays[i]->Log();
        return "";
      }
      case Fault::kRestartRedis:
        redis->Stop();
        redis->Start();
        return "";
      case Fault::kStopRedis:
        redis->Pause();
        std::this_thread::sleep_for(held());  // the fault's duration
        redis->Resume();
        return "";
      case Fault::kPauseReplay:
        if (!standby) return "no standby to pause";
        standby->PauseReplay();
        std::this_thread::sleep_for(held());  // the fault's duration
        standby->ResumeReplay();
        return "";
    }
    return "unknown fault";
  };
  std::vector<int> faults(std::size(kFaults), 0);
  double max_recovery_s = 0;
  std::string failure;
  const auto start = Clock::now();
  const auto end = start + std::chrono::seconds(o.duration_s);
  for (;;) {
    const auto at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(gap(rng) * 1000));
    if (at + 5s > end) break;
    std::this_thread::sleep_until(at);  // a random time for the next fault
    const size_t f = fault_set[which(rng)];
    const FaultKind& kind = kFaults[f];
    const auto injected = Clock::now();
    const uint64_t reconnects_before = Reconnects(*daemon);
    try {
      failure = inject(kind.fault);
    } catch (const std::exception& e) {
      failure = std::string(kind.name) + ": " + e.what();
    }
    ++faults[f];
    if (!failure.empty()) break;
    // A relay's listener lost is the relay's to notice; the other relay
    // keeps the subscriber synced.
    const bool checked_reconnects =
        kind.listener_reconnects && !(o.topology == Topology::kRelay && kind.fault == Fault::kKillListener);
    if (checked_reconnects && !test::WaitFor([&] { return Reconnects(*daemon) > reconnects_before; }, 30s)) {
      failure = std::string("the daemon did not notice ") + kind.name;
      break;
    }
    if (!test::WaitFor(available, 60s)) {
      failure = std::string("the cache was not available again within 60 s after ") + kind.name;
      std::printf("daemon %d: %s", daemon->pid(),
                  test::ReadFile("/proc/" + std::to_string(daemon->pid()) + "/stat").c_str());
      // Where it is stuck, when gdb is at hand.
      std::printf("%s\n", test::RunCommand("gdb -p " + std::to_string(daemon->pid()) +
                                           " -batch -ex 'thread apply all bt' 2>&1 | tail -n 60")
                              .output.c_str());
      break;
    }
    max_recovery_s = std::max(max_recovery_s, std::chrono::duration<double>(Clock::now() - injected).count());
  }
  if (failure.empty()) std::this_thread::sleep_until(end);  // the rest of the run

  s->stop.store(1, std::memory_order_release);
  for (auto& t : writer_threads) t.join();
  // What the standby cost the fills, from the daemon itself.
  const auto daemon_stats = ParseFlatJson(test::ControlRequest(daemon->control_socket(), protocol::kStats));
  auto stat = [&](const char* k) {
    return daemon_stats.count(k) != 0 ? daemon_stats.at(k) : std::string("?");
  };
  int readers_failed = 0;
  for (pid_t pid : readers) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++readers_failed;
  }
  daemon->Signal(SIGTERM);
  const auto status = daemon->Wait(20s);
  if (!status || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    if (failure.empty()) failure = "the daemon did not exit 0 on SIGTERM";
  }
  tc_cache_close(cache);

  ReaderCounters sum{};
  int64_t max_stale = 0;
  std::string problem;
  for (int i = 0; i < o.readers; ++i) {
    const ReaderCounters& c = s->readers[i];
    const std::pair<std::atomic<uint64_t>*, const std::atomic<uint64_t>*> counters[] = {
        {&sum.reads, &c.reads},
        {&sum.found, &c.found},
        {&sum.unavailable, &c.unavailable},
        {&sum.busy, &c.busy},
        {&sum.timeout, &c.timeout},
        {&sum.daemon_error, &c.daemon_error},
        {&sum.other, &c.other},
        {&sum.stale_fresh, &c.stale_fresh},
        {&sum.stale_bound, &c.stale_bound},
        {&sum.wrong, &c.wrong}};
    for (const auto& [to, from] : counters) *to += from->load();
    max_stale = std::max<int64_t>(max_stale, c.max_stale_us.load());
    if (problem.empty() && c.first_problem[0] != '\0') problem = c.first_problem;
  }
  uint64_t member_writes = 0, tenant_writes = 0, write_errors = 0;
  for (auto& w : writers) {
    member_writes += w->member_writes;
    tenant_writes += w->tenant_writes;
    write_errors += w->errors;
  }
  int total_faults = 0;
  std::string fault_counts;
  for (size_t f = 0; f < std::size(kFaults); ++f) {
    if (std::find(fault_set.begin(), fault_set.end(), f) == fault_set.end()) continue;
    total_faults += faults[f];
    fault_counts +=
        std::string(fault_counts.empty() ? "" : ", ") + kFaults[f].name + " " + std::to_string(faults[f]);
  }
  std::printf("reads checked      %" PRIu64 " (served %" PRIu64 ", unavailable %" PRIu64 ", busy %" PRIu64
              ", timeout %" PRIu64 ", daemon error %" PRIu64 ", other %" PRIu64 ")\n",
              sum.reads.load(), sum.found.load(), sum.unavailable.load(), sum.busy.load(), sum.timeout.load(),
              sum.daemon_error.load(), sum.other.load());
  std::printf("writes committed   %" PRIu64 " member, %" PRIu64 " tenant (%" PRIu64
              " failed during faults)\n",
              member_writes, tenant_writes, write_errors);
  std::printf("faults injected    %d (%s); slowest recovery %.2f s\n", total_faults, fault_counts.c_str(),
              max_recovery_s);
  if (standby)
    std::printf("standby fills      %s waited for replay, %s answered timeout (standby behind); %s fills\n",
                stat("replica_waits").c_str(), stat("replica_timeouts").c_str(), stat("fills").c_str());
  if (redis)
    std::printf(
        "relayed            %s messages received by the subscriber, %s gaps, %s rejected; %s joined "
        "relay sessions at the end, %s reconnects\n",
        stat("relayed_received").c_str(), stat("relay_gaps").c_str(), stat("relayed_rejected").c_str(),
        stat("joined_relay_sessions").c_str(), stat("reconnects").c_str());
  std::printf("stale > 10 ms      %" PRIu64 " reads served while trusted (max staleness %.1f ms)\n",
              sum.stale_fresh.load(), static_cast<double>(max_stale) / 1000.0);
  std::printf("stale > bound      %" PRIu64 " (bound: stale_after = %d ms; must be 0)\n",
              sum.stale_bound.load(), o.stale_after_ms);
  std::printf("wrong answers      %" PRIu64 " (must be 0)\n", sum.wrong.load());
  if (!problem.empty()) std::printf("first problem      %s\n", problem.c_str());
  if (readers_failed > 0 && failure.empty()) failure = std::to_string(readers_failed) + " reader(s) failed";
  if (sum.found == 0 && failure.empty()) failure = "no read was served, so nothing was checked";
  if (sum.stale_bound > 0 || sum.wrong > 0 || sum.other > 0) failure = "consistency violated";
  if (!failure.empty()) {
    const std::string log = daemon->Log();
    std::printf("FAILED: %s\ndaemon log tail:\n%s\n", failure.c_str(),
                log.substr(log.size() > 4000 ? log.size() - 4000 : 0).c_str());
    for (size_t i = 0; i < relays.size(); ++i) {
      const std::string relay_log = relays[i] ? relays[i]->Log() : "";
      const auto relay_stats =
          ParseFlatJson(test::ControlRequest(relays[i]->control_socket(), protocol::kStats));
      auto relay_stat = [&](const char* k) { return relay_stats.count(k) != 0 ? relay_stats.at(k) : "?"; };
      std::printf("relay %zu: redis_connected %s, published %s in %s session(s); log tail:\n%s\n", i,
                  relay_stat("redis_connected").c_str(), relay_stat("relayed_published").c_str(),
                  relay_stat("relay_sessions").c_str(),
                  relay_log.substr(relay_log.size() > 3000 ? relay_log.size() - 3000 : 0).c_str());
    }
    return 1;
  }
  std::printf("PASSED\n");
  return 0;
}

int Usage() {
  std::fprintf(
      stderr,
      "usage: tc_soak [--duration SECONDS] [--seed N] [--readers N] [--writes-per-sec N]\n"
      "               [--reads-per-sec N] [--fault-every SECONDS] [--stale-after-ms N]\n"
      "               [--topology direct|pgbouncer|standby|relay] [--apply-delay-ms N] [--faults NAME,...]\n"
      "               [--lookup-timeout-ms N]\n"
      "faults:");
  for (const auto& f : kFaults)
    std::fprintf(
        stderr, " %s%s", f.name,
        f.only_in ? (std::string(" (") + kTopologies[static_cast<int>(*f.only_in)] + " only)").c_str() : "");
  std::fprintf(stderr, "\n");
  return 2;
}

}  // namespace
}  // namespace tenantcache::soak

int main(int argc, char** argv) {
  using namespace tenantcache::soak;
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return Usage();
    const char* v = argv[++i];
    if (a == "--duration") {
      o.duration_s = std::atoi(v);
    } else if (a == "--seed") {
      o.seed = std::strtoull(v, nullptr, 10);
    } else if (a == "--readers") {
      o.readers = std::atoi(v);
    } else if (a == "--writes-per-sec") {
      o.writes_per_sec = std::atoi(v);
    } else if (a == "--reads-per-sec") {
      o.reads_per_sec = std::atoi(v);
    } else if (a == "--fault-every") {
      o.fault_every_s = std::atof(v);
    } else if (a == "--faults") {
      o.faults.clear();
      std::string list = v;
      for (size_t at = 0; at <= list.size();) {
        const size_t comma = std::min(list.find(',', at), list.size());
        const std::string name = list.substr(at, comma - at);
        const auto* it = std::find_if(std::begin(kFaults), std::end(kFaults),
                                      [&](const FaultKind& f) { return f.name == name; });
        if (it == std::end(kFaults)) return Usage();
        o.faults.push_back(static_cast<size_t>(it - std::begin(kFaults)));
        at = comma + 1;
      }
    } else if (a == "--topology") {
      const auto* it = std::find(std::begin(kTopologies), std::end(kTopologies), std::string_view(v));
      if (it == std::end(kTopologies)) return Usage();
      o.topology = static_cast<Topology>(it - std::begin(kTopologies));
    } else if (a == "--lookup-timeout-ms") {
      o.lookup_timeout_ms = std::atoi(v);
    } else if (a == "--apply-delay-ms") {
      o.apply_delay_ms = std::atoi(v);
    } else if (a == "--stale-after-ms") {
      o.stale_after_ms = std::atoi(v);
    } else if (a == "--reader") {
      o.reader_index = std::atoi(v);
    } else if (a == "--shared") {
      o.shared_path = v;
    } else if (a == "--cache") {
      o.cache_path = v;
    } else if (a == "--members") {
      o.members = static_cast<uint32_t>(std::atoi(v));
    } else if (a == "--tenants") {
      o.tenants = static_cast<uint32_t>(std::atoi(v));
    } else {
      return Usage();
    }
  }
  if (o.duration_s < 10 || o.readers < 1 || o.readers > kMaxReaders || o.writes_per_sec < 1 ||
      o.reads_per_sec < 100 || o.fault_every_s < 1 || o.stale_after_ms < 100 || o.members < 2 ||
      o.tenants < 1) {
    std::fprintf(stderr, "tc_soak: an option is out of range\n");
    return Usage();
  }
  if (o.apply_delay_ms >= 0 && o.topology != Topology::kStandby) {
    std::fprintf(stderr, "tc_soak: --apply-delay-ms needs --topology standby\n");
    return 2;
  }
  for (size_t f : o.faults) {
    if (kFaults[f].only_in && *kFaults[f].only_in != o.topology) {
      std::fprintf(stderr, "tc_soak: fault %s needs --topology %s\n", kFaults[f].name,
                   kTopologies[static_cast<int>(*kFaults[f].only_in)]);
      return 2;
    }
  }
  if (o.reader_index >= 0) return RunReader(o);
  try {
    return RunDriver(o, "/proc/self/exe");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tc_soak: %s\n", e.what());
    return 1;
  }
}
