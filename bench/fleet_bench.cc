// The fleet benchmark: N hosts on one primary, each with a listener that
// drains every NOTIFY and a heartbeat every heartbeat_interval, and what that
// does to the primary as N grows (packaging/bench.sh runs it and puts its
// section into bench/RESULTS.md).
//
//   fleet_bench [--quick] [--hosts 1,N,...] [--window SECONDS]
//
// --hosts: the fleet sizes (1, the reference, among them; default 1, 50,
// 200, 500; 1, 50 with --quick). --window: each idle window and pgbench run
// in seconds (default 5; 1 with --quick).
//
// It starts a throwaway PostgreSQL 15 cluster (max_connections raised to
// hold the largest fleet) with the fleet example, one real tenantcached, and
// N - 1 simulated hosts: one libpq connection each, all in this process on
// one thread (non-blocking, poll()), that LISTENs on the channel, drains
// every notification (PQconsumeInput, PQnotifies) and heartbeats once per
// second at its own random phase, skipping a tick while its previous
// heartbeat is still in flight, as the daemon's listener does. A real host
// has its heartbeat on a second connection that does not LISTEN; PostgreSQL
// wakes only listening backends for a NOTIFY, so one connection per host
// carries the load that matters and keeps the cluster under ~600
// connections at N = 500.
//
// For each N, the simulated hosts run each heartbeat protocol in turn (see
// Protocol): `own`, one NOTIFY per host per interval, and `shared`, a probe
// per host per interval and a NOTIFY from the two leaders only. The real
// daemon runs whatever its schema gives it; the section says what that was,
// from its statistics. Each row measures, in this order:
//
//   * heartbeat NOTIFYs per second the primary commits, and its CPU, over an
//     idle window (nothing but the fleet running): the payloads starting
//     `1 h ` an observer connection receives between two markers, and
//     utime + stime of the postmaster and all its children from /proc, as %
//     of one core;
//   * commit -> invalid at the real daemon: a cached user's UPDATE to the
//     entry reading as invalid in shared memory (bench_support.h), beside a
//     raw LISTEN client's receipt of the same notification;
//   * NOTIFY capacity: pgbench, 2 clients, `SELECT pg_notify(channel,
//     '1 h capacity')` (an unknown heartbeat token: daemons ignore it);
//   * the write latency of an invalidating UPDATE (one user's role, a
//     watched column): pgbench, 1 client back to back, average and p99 from
//     its per-transaction log.
//
// N = 1 (the real daemon alone) is each column's reference: every figure is
// also printed as its ratio to N = 1 of the same run.
#include <libpq-fe.h>
#include <poll.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench_support.h"
#include "shared_heartbeat.h"
#include "support/daemon_process.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::bench {
namespace {

using namespace std::chrono_literals;

constexpr const char* kChannel = "tenantcache";
// The observer's markers: a channel no daemon listens on.
constexpr const char* kMarkerChannel = "fleet_bench_marker";
constexpr auto kInterval = 1s;  // the daemon's default heartbeat_interval
constexpr int kUsers = 20000;

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "fleet_bench: %s\n", why.c_str());
  std::exit(1);
}

// `own`: the daemon before shared heartbeats (and after, on a schema older
// than version 6): every host every interval commits
// "SELECT txid_current_snapshot()::text, pg_notify(channel, '1 h <token>')".
// `shared` (daemon/shared_heartbeat.h, whose SharedHeartbeats each host runs
// here as the daemon does): every host every interval runs kSharedTickQuery
// (a snapshot, and a try at one of the two leader slots); only a host that
// holds a slot, or that received no verified heartbeat for 1.25 to 1.75
// intervals, then NOTIFYs its signed heartbeat.
enum class Protocol { kOwn, kShared };

const char* Name(Protocol p) { return p == Protocol::kOwn ? "own" : "shared"; }

// 32 hex characters from the kernel's CSPRNG (the daemon's token).
std::string Token() {
  unsigned char raw[16];
  if (getrandom(raw, sizeof raw, 0) != static_cast<ssize_t>(sizeof raw)) Die("getrandom failed");
  static const char* const kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : raw) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

// A heartbeat's payload, and not pgbench's NOTIFY of the capacity column.
bool IsHeartbeat(const char* payload) {
  return std::strncmp(payload, "1 h ", 4) == 0 && std::strcmp(payload, "1 h capacity") != 0;
}

// The simulated hosts, and the observer: one more connection that LISTENs on
// the channel and on kMarkerChannel and counts the heartbeats it receives.
// Notifications arrive in commit order, so the count when a marker arrives is
// the number of heartbeats committed before the marker, however far behind
// delivery runs. Connections live as long as the object; the loop that
// drives them runs on its own thread between Start() and Stop(), and only
// then: Grow() and set_protocol() are called while it is stopped.
class Fleet {
 public:
  // `key`: the database's heartbeat key, which the shared protocol signs
  // with.
  Fleet(std::string conninfo, std::string key) : conninfo_(std::move(conninfo)), key_(std::move(key)) {
    observer_.conn = Connect();
    Exec(observer_.conn, std::string("LISTEN ") + kMarkerChannel);
  }
  ~Fleet() {
    Stop();
    PQfinish(observer_.conn);
    for (Host& h : hosts_)
      if (h.conn != nullptr) PQfinish(h.conn);
  }
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Connects hosts until there are `n`, each LISTENing, its first tick at a
  // random phase within one interval of the next Start().
  void Grow(size_t n) {
    while (hosts_.size() < n) {
      Host h;
      h.conn = Connect();
      h.pid = PQbackendPID(h.conn);
      h.shared = std::make_unique<SharedHeartbeats>(kChannel, rng_());
      h.shared->SetKey(HeartbeatKey(key_));
      hosts_.push_back(std::move(h));
    }
  }
  void set_protocol(Protocol p) { protocol_ = p; }
  size_t size() const { return hosts_.size(); }

  void Start() {
    stop_ = false;
    ticked_ = 0;
    std::uniform_int_distribution<int64_t> phase(0, std::chrono::nanoseconds(kInterval).count() - 1);
    const auto now = Clock::now();
    for (Host& h : hosts_) {
      h.next = now + std::chrono::nanoseconds(phase(rng_));
      h.ticked = false;
      // As a daemon whose listener has just synced: its fallback wait runs
      // from now.
      h.last_heartbeat = now;
    }
    thread_ = std::thread([this] { Loop(); });
  }
  // Stops ticking and returns once no host has a heartbeat in flight, so
  // that the next row starts from a quiet fleet (a NOTIFY still waiting for
  // its commit would count in the next row's window). Exits after 120 s.
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  // Hosts that have ticked since Start().
  size_t ticked() const { return ticked_; }
  uint64_t ticks() const { return ticks_; }
  // Heartbeat NOTIFYs the hosts sent.
  uint64_t sent() const { return sent_; }
  // Ticks that found the previous heartbeat still in flight.
  uint64_t skipped() const { return skipped_; }
  // Shared protocol: hosts that held a leader slot at their last tick.
  size_t leaders() const {
    return static_cast<size_t>(std::count_if(hosts_.begin(), hosts_.end(), [](const Host& h) {
      return h.conn != nullptr && h.shared->slot() != 0;
    }));
  }
  // Hosts whose connection failed (each one's error went to stderr).
  size_t lost() const { return lost_; }

  // The heartbeats the observer had received when marker `marker` arrived,
  // once it has (nullopt until then).
  std::optional<uint64_t> HeartbeatsAt(int marker) const {
    const std::lock_guard<std::mutex> lock(markers_mutex_);
    const auto it = heartbeats_at_marker_.find(marker);
    if (it == heartbeats_at_marker_.end()) return std::nullopt;
    return it->second;
  }

 private:
  enum class Stage { kIdle, kOwn, kProbe, kNotify };  // what is in flight
  struct Host {
    PGconn* conn = nullptr;
    int pid = 0;  // its backend's: a leader slot belongs to a session
    Clock::time_point next;
    Stage stage = Stage::kIdle;
    bool flushing = false;  // libpq holds unsent output
    bool ticked = false;
    std::unique_ptr<SharedHeartbeats> shared;
    Clock::time_point last_heartbeat;  // the last verified shared heartbeat
    uint64_t probe_ns = 0;
    std::string snapshot;  // the probe's answer
    int slot = 0;
  };

  // A connection LISTENing on the channel, in non-blocking mode.
  PGconn* Connect() const {
    PGconn* c = PQconnectdb(conninfo_.c_str());
    if (PQstatus(c) != CONNECTION_OK) Die(std::string("connect: ") + PQerrorMessage(c));
    Exec(c, std::string("LISTEN ") + kChannel);
    if (PQsetnonblocking(c, 1) != 0) Die("PQsetnonblocking failed");
    return c;
  }

  void Observe() {
    if (PQconsumeInput(observer_.conn) == 0)
      Die(std::string("the observer: ") + PQerrorMessage(observer_.conn));
    while (PGnotify* n = PQnotifies(observer_.conn)) {
      if (std::strcmp(n->relname, kMarkerChannel) == 0) {
        const std::lock_guard<std::mutex> lock(markers_mutex_);
        heartbeats_at_marker_[std::atoi(n->extra)] = heartbeats_seen_;
      } else if (IsHeartbeat(n->extra)) {
        ++heartbeats_seen_;
      }
      PQfreemem(n);
    }
  }

  void Lose(Host* h, const std::string& why) {
    std::fprintf(stderr, "fleet_bench: a simulated host lost its connection: %s\n", why.c_str());
    PQfinish(h->conn);
    h->conn = nullptr;
    ++lost_;
  }

  void Query(Host* h, Stage stage, const char* sql, const std::vector<std::optional<std::string>>& params) {
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
    if (PQsendQueryParams(h->conn, sql, static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                          nullptr, 0) == 0)
      return Lose(h, PQerrorMessage(h->conn));
    h->stage = stage;
    Flush(h);
  }

  void Tick(Host* h) {
    if (protocol_ == Protocol::kOwn) {
      ++sent_;
      return Query(h, Stage::kOwn, "SELECT txid_current_snapshot()::text, pg_notify($1, $2)",
                   {kChannel, "1 h " + Token()});
    }
    h->probe_ns = static_cast<uint64_t>(std::chrono::nanoseconds(Clock::now().time_since_epoch()).count());
    Query(h, Stage::kProbe, kSharedTickQuery, h->shared->TickParams(h->pid));
  }

  // A query's last result arrived: the probe's answer decides whether this
  // host sends the heartbeat.
  void Done(Host* h) {
    const Stage done = std::exchange(h->stage, Stage::kIdle);
    if (done != Stage::kProbe) return;
    const std::string payload = h->shared->Ticked(h->probe_ns, h->snapshot, h->slot, h->pid, Clock::now(),
                                                  h->last_heartbeat, kInterval);
    if (payload.empty()) return;
    ++sent_;
    Query(h, Stage::kNotify, "SELECT pg_notify($1, $2)", {kChannel, payload});
  }

  void Flush(Host* h) {
    const int rc = PQflush(h->conn);
    if (rc < 0) return Lose(h, PQerrorMessage(h->conn));
    h->flushing = rc == 1;
  }

  // Reads what the server sent: the results of the query in flight, then
  // every notification: shared heartbeats verified as the daemon does (in
  // the shared protocol), the rest dropped, as a daemon with nothing cached
  // would apply them.
  void Read(Host* h) {
    if (PQconsumeInput(h->conn) == 0) return Lose(h, PQerrorMessage(h->conn));
    while (h->stage != Stage::kIdle && PQisBusy(h->conn) == 0) {
      PGresult* r = PQgetResult(h->conn);
      if (r == nullptr) {
        Done(h);
        if (h->conn == nullptr) return;
        continue;
      }
      const bool failed = PQresultStatus(r) != PGRES_TUPLES_OK;
      const std::string error = failed ? PQresultErrorMessage(r) : "";
      if (!failed && h->stage == Stage::kProbe) {
        h->snapshot = PQgetvalue(r, 0, 0);
        h->slot = std::atoi(PQgetvalue(r, 0, 1));
      }
      PQclear(r);
      if (failed) {
        // Consume the rest of the query's results before giving up on it.
        while (PGresult* rest = PQgetResult(h->conn)) PQclear(rest);
        return Lose(h, "heartbeat failed: " + error);
      }
    }
    while (PGnotify* n = PQnotifies(h->conn)) {
      const std::string_view payload(n->extra);
      std::string why;
      if (protocol_ == Protocol::kShared && payload.rfind("1 h ", 0) == 0 &&
          IsSharedHeartbeat(payload.substr(4)) && h->shared->Received(payload.substr(4), &why))
        h->last_heartbeat = Clock::now();
      PQfreemem(n);
    }
  }

  void Loop() {
    // fds[0] is the observer's, fds[i + 1] host i's.
    std::vector<pollfd> fds(hosts_.size() + 1);
    std::optional<Clock::time_point> stopping;
    for (;;) {
      auto now = Clock::now();
      if (stop_ && !stopping) stopping = now;
      if (stopping) {
        if (std::none_of(hosts_.begin(), hosts_.end(),
                         [](const Host& h) { return h.conn != nullptr && h.stage != Stage::kIdle; }))
          return;
        if (now - *stopping > 120s) Die("the simulated hosts' heartbeats did not complete within 120 s");
      }
      auto wake = now + 100ms;  // Stop() is noticed within this
      for (Host& h : hosts_) {
        if (h.conn == nullptr) continue;
        if (!stopping && now >= h.next) {
          // One tick per interval, never caught up: a late host keeps its
          // cadence, as the daemon's repeating timer does.
          while (h.next <= now) h.next += kInterval;
          if (!h.ticked) {
            h.ticked = true;
            ++ticked_;
          }
          ++ticks_;
          if (h.stage != Stage::kIdle) {
            ++skipped_;
          } else {
            Tick(&h);
          }
        }
        if (!stopping) wake = std::min(wake, h.next);
      }
      fds[0] = pollfd{PQsocket(observer_.conn), POLLIN, 0};
      for (size_t i = 0; i < hosts_.size(); ++i) {
        const Host& h = hosts_[i];
        fds[i + 1] = pollfd{h.conn != nullptr ? PQsocket(h.conn) : -1,
                            static_cast<short>(POLLIN | (h.flushing ? POLLOUT : 0)), 0};
      }
      now = Clock::now();
      const auto timeout = wake > now ? std::chrono::ceil<std::chrono::milliseconds>(wake - now) : 0ms;
      if (poll(fds.data(), fds.size(), static_cast<int>(timeout.count())) < 0 && errno != EINTR)
        Die(std::string("poll: ") + std::strerror(errno));
      if (fds[0].revents != 0) Observe();
      for (size_t i = 0; i < hosts_.size(); ++i) {
        Host& h = hosts_[i];
        if (h.conn == nullptr || fds[i + 1].revents == 0) continue;
        if (h.flushing) Flush(&h);
        if (h.conn != nullptr) Read(&h);
      }
    }
  }

  std::string conninfo_, key_;
  Host observer_;
  uint64_t heartbeats_seen_ = 0;  // the loop's own
  mutable std::mutex markers_mutex_;
  std::map<int, uint64_t> heartbeats_at_marker_;  // by marker
  std::vector<Host> hosts_;
  Protocol protocol_ = Protocol::kOwn;
  std::mt19937_64 rng_{std::random_device{}()};
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> ticked_{0}, lost_{0};
  std::atomic<uint64_t> ticks_{0}, sent_{0}, skipped_{0};
};

// utime + stime of the postmaster and of every process it started, in
// ticks, by process id.
std::map<pid_t, int64_t> PrimaryCpuTicks(pid_t postmaster) {
  std::map<pid_t, int64_t> ticks{{postmaster, ProcCpuTicks(postmaster)}};
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "stat");
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t close = s.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(s.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    if (rest >> state >> ppid && ppid == postmaster) {
      const pid_t pid = std::atoi(name.c_str());
      ticks[pid] = ProcCpuTicks(pid);
    }
  }
  return ticks;
}

// The CPU the primary used between two PrimaryCpuTicks: what each process
// alive at the end used since the start (all of it if it started since). A
// process that exited in between is not counted: nothing exits in an idle
// window.
int64_t CpuUsed(const std::map<pid_t, int64_t>& start, const std::map<pid_t, int64_t>& end) {
  int64_t used = 0;
  for (const auto& [pid, ticks] : end) {
    const auto it = start.find(pid);
    used += ticks - (it != start.end() ? std::min(it->second, ticks) : 0);
  }
  return used;
}

// The parent of a backend: the postmaster.
pid_t ParentOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("PPid:", 0) == 0) return std::atoi(line.c_str() + 5);
  Die("cannot read the parent of process " + std::to_string(pid));
}

struct Args {
  bool quick = false;
  std::vector<int> sizes;
  int window_s = 0;  // each measuring window and pgbench run
  int rounds = 0;    // commit -> invalid samples per row
};

struct Row {
  int n = 0;
  Protocol protocol = Protocol::kOwn;
  double heartbeats_per_s = 0, cpu_pct = 0, capacity_tps = 0;
  double bench_cpu_pct = 0;  // this process: the simulated hosts' client side
  double update_avg_ms = 0, update_p99_ms = 0;
  long updates = 0;                           // transactions pgbench completed
  Pct invalid, listener;                      // µs
  int unavailable = 0;                        // rounds the daemon could not fill: not synced
  uint64_t ticks = 0, skipped = 0, sent = 0;  // the simulated hosts', in the idle window
  size_t leaders = 0;                         // simulated hosts holding a leader slot
  uint64_t daemon_sent = 0, daemon_received = 0, daemon_reconnects = 0;
  size_t deaf = 0;          // the daemon's "connected but deaf" warnings
  std::string daemon_mode;  // its heartbeats: "shared" or "own", from its statistics
  std::string daemon_slots;
};

class Bench {
 public:
  explicit Bench(Args a) : args_(std::move(a)) {}
  int Run();

 private:
  void Setup();
  // The pgbench binary run on `script` for the window; its output.
  std::string Pgbench(const std::string& script, int clients, const std::string& extra) const;
  Row Measure(int n, Protocol p);
  // Commits the next marker; its number.
  int Mark();
  // The heartbeats committed before marker `marker` (waits for the observer
  // to receive it).
  uint64_t HeartbeatsAt(int marker) const;
  void Print() const;

  Args args_;
  test::TempDir dir_;
  std::string db_, conninfo_;
  pid_t postmaster_ = 0;
  std::string settings_;
  std::unique_ptr<test::DaemonProcess> daemon_;
  tc_cache* cache_ = nullptr;
  tc_ns user_ = 0;
  std::unique_ptr<Fleet> fleet_;
  std::unique_ptr<test::PgConn> marker_;
  int markers_ = 0;
  std::unique_ptr<CommitToInvalid> probe_;
  int next_user_ = 1;
  std::vector<Row> rows_;
};

void Bench::Setup() {
  test::PgCluster& cluster = test::SharedCluster();
  {
    // The harness's 200 connections do not hold 500 hosts: raised for this
    // cluster only (postgresql.auto.conf wins over postgresql.conf), with
    // room for the daemon, pgbench and the benchmark's own connections.
    test::PgConn admin(cluster.Conninfo());
    const int largest = *std::max_element(args_.sizes.begin(), args_.sizes.end());
    admin.Exec("ALTER SYSTEM SET max_connections = " + std::to_string(std::max(200, largest + 100)));
  }
  cluster.Restart();
  db_ = cluster.CreateDatabase();
  conninfo_ = cluster.Conninfo(db_);
  test::PgConn admin(conninfo_);
  admin.Exec(test::ReadFile(test::SqlDir() + "/install.sql"));
  admin.Exec(test::ReadFile(test::SqlDir() + "/examples/fleet.sql"));
  admin.Exec("SELECT fleet.generate(" + std::to_string(kUsers) + ", 100)");
  // The generated rows vacuumed and checkpointed now rather than by
  // autovacuum and the checkpointer during the first rows.
  admin.Exec("VACUUM ANALYZE");
  admin.Exec("CHECKPOINT");
  // What the section states about durability is what the server runs with.
  for (const char* s : {"max_connections", "fsync", "synchronous_commit", "full_page_writes"})
    settings_ += std::string(settings_.empty() ? "" : ", ") + "`" + s + " = " +
                 admin.Scalar("SHOW " + std::string(s)) + "`";
  postmaster_ = ParentOf(std::atoi(admin.Scalar("SELECT pg_backend_pid()").c_str()));

  BenchDaemon d = StartDaemon(dir_.path(), conninfo_, "info", 10000);
  daemon_ = std::move(d.process);
  cache_ = d.cache;
  user_ = d.user;

  fleet_ = std::make_unique<Fleet>(conninfo_, admin.Scalar(kHeartbeatKeyQuery));
  marker_ = std::make_unique<test::PgConn>(conninfo_);
  probe_ = std::make_unique<CommitToInvalid>(conninfo_, cache_, user_);
  // The writer's first UPDATEs load the trigger and the catalog into its
  // backend: not what a row measures.
  for (int i = 0; i < 5; ++i)
    if (!probe_->Round(test::UserId(next_user_++))) Die("cannot fill a user through the daemon");
  std::ofstream(dir_.File("notify.sql")) << "SELECT pg_notify('" << kChannel << "', '1 h capacity');\n";
  std::ofstream(dir_.File("update.sql")) << "\\set n random(1, " << kUsers << ")\n"
                                         << ToggleRole("fleet.user_id(:n)") << ";\n";
}

std::string Bench::Pgbench(const std::string& script, int clients, const std::string& extra) const {
  const test::PgCluster& cluster = test::SharedCluster();
  const std::string cmd = cluster.bin_dir() + "/pgbench -n -h " + cluster.socket_dir() + " -p " +
                          std::to_string(cluster.port()) + " -U postgres -f " + dir_.File(script) + " -c " +
                          std::to_string(clients) + " -j " + std::to_string(clients) + " -T " +
                          std::to_string(args_.window_s) + " " + extra + " " + db_ + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) Die("cannot run pgbench");
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  if (pclose(p) != 0) Die(cmd + " failed:\n" + out);
  return out;
}

int Bench::Mark() {
  marker_->Exec("SELECT pg_notify('" + std::string(kMarkerChannel) + "', '" + std::to_string(++markers_) +
                "')");
  return markers_;
}

uint64_t Bench::HeartbeatsAt(int marker) const {
  const auto deadline = Clock::now() + 60s;
  for (;;) {
    if (const auto n = fleet_->HeartbeatsAt(marker)) return *n;
    if (Clock::now() > deadline)
      Die("the observer did not receive marker " + std::to_string(marker) + " in 60 s");
    std::this_thread::sleep_for(1ms);
  }
}

// The number after `label` in pgbench's output.
double Figure(const std::string& out, const std::string& label) {
  const size_t at = out.find(label);
  if (at == std::string::npos) Die("no \"" + label + "\" in pgbench's output:\n" + out);
  return std::atof(out.c_str() + at + label.size());
}

Row Bench::Measure(int n, Protocol p) {
  Row row;
  row.n = n;
  row.protocol = p;
  fleet_->Grow(static_cast<size_t>(n - 1));
  fleet_->set_protocol(p);
  // A daemon the previous row left unsynced has resynced (or the row's
  // table says it could not fill).
  for (const auto synced_by = Clock::now() + 30s;
       test::DaemonStats(*daemon_)["synced"] != "true" && Clock::now() < synced_by;)
    std::this_thread::sleep_for(50ms);
  const auto d0 = test::DaemonStats(*daemon_);
  const size_t log0 = daemon_->Log().size();
  fleet_->Start();
  // Every host has ticked once: the fleet's cadence is established.
  const auto deadline = Clock::now() + 10 * kInterval;
  while (fleet_->ticked() < fleet_->size()) {
    if (Clock::now() > deadline) Die("the simulated hosts did not all tick within 10 intervals");
    std::this_thread::sleep_for(10ms);
  }

  // Whatever the previous row's pgbench runs left in the queue has reached
  // the observer: the window below sees the fleet alone.
  HeartbeatsAt(Mark());

  // The idle window: the fleet alone, between two markers.
  const uint64_t ticks0 = fleet_->ticks(), sent0 = fleet_->sent(), skipped0 = fleet_->skipped();
  const auto cpu0 = PrimaryCpuTicks(postmaster_);
  const int64_t own0 = ProcCpuTicks(getpid());
  const auto w0 = Clock::now();
  const int first = Mark();
  std::this_thread::sleep_until(w0 + std::chrono::seconds(args_.window_s));  // the window itself
  const int last = Mark();
  const auto cpu1 = PrimaryCpuTicks(postmaster_);
  const int64_t own1 = ProcCpuTicks(getpid());
  const double secs = std::chrono::duration<double>(Clock::now() - w0).count();
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  row.bench_cpu_pct = 100.0 * static_cast<double>(own1 - own0) / tick / secs;
  row.heartbeats_per_s = static_cast<double>(HeartbeatsAt(last) - HeartbeatsAt(first)) / secs;
  row.cpu_pct = 100.0 * static_cast<double>(CpuUsed(cpu0, cpu1)) / tick / secs;
  row.ticks = fleet_->ticks() - ticks0;
  row.sent = fleet_->sent() - sent0;
  row.skipped = fleet_->skipped() - skipped0;
  row.leaders = fleet_->leaders();

  std::vector<double> invalid, listener;
  for (int i = 0; i < args_.rounds; ++i) {
    const auto s = probe_->Round(test::UserId(next_user_++));
    if (!s) {
      ++row.unavailable;
      continue;
    }
    invalid.push_back(s->invalid_us);
    listener.push_back(s->listener_us);
  }
  row.invalid = Percentiles(invalid);
  row.listener = Percentiles(listener);

  row.capacity_tps = Figure(Pgbench("notify.sql", 2, ""), "tps = ");

  const std::string log_prefix = dir_.File("update-" + std::to_string(n) + Name(p));
  const std::string out = Pgbench("update.sql", 1, "--log --log-prefix=" + log_prefix);
  row.update_avg_ms = Figure(out, "latency average = ");
  row.updates = static_cast<long>(Figure(out, "number of transactions actually processed: "));
  std::vector<double> latencies;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
    if (e.path().string().rfind(log_prefix + ".", 0) != 0) continue;
    std::ifstream in(e.path());
    // client_id transaction_no time(µs) script_no time_epoch time_us
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      long client = 0, tx = 0;
      double us = 0;
      if (f >> client >> tx >> us) latencies.push_back(us / 1000);
    }
    std::filesystem::remove(e.path());
  }
  // None when no UPDATE completed: the table says 0 UPDATEs and a dash.
  row.update_p99_ms = Percentiles(latencies).p99;

  fleet_->Stop();

  const auto d1 = test::DaemonStats(*daemon_);
  auto delta = [&](const char* key) -> uint64_t {
    if (d0.count(key) == 0 || d1.count(key) == 0) Die(std::string("the daemon's statistics lack ") + key);
    return std::stoull(d1.at(key)) - std::stoull(d0.at(key));
  };
  row.daemon_sent = delta("heartbeats_sent");
  row.daemon_received = delta("heartbeats_received");
  row.daemon_reconnects = delta("reconnects");
  row.daemon_mode = d1.count("shared_heartbeat_sources") != 0 && d1.at("shared_heartbeat_sources") != "0"
                        ? "shared"
                        : "own";
  row.daemon_slots = d1.count("heartbeat_leader_slots") != 0 ? d1.at("heartbeat_leader_slots") : "—";
  const std::string log = daemon_->Log().substr(log0);
  for (size_t at = 0; (at = log.find("connected but deaf", at)) != std::string::npos; ++at) ++row.deaf;
  if (fleet_->lost() > 0) Die(std::to_string(fleet_->lost()) + " simulated hosts lost their connection");
  std::fprintf(stderr, "fleet_bench: N = %d (%s) measured\n", n, Name(p));
  return row;
}

// "value (ratio to the reference)". A latency of 0 is one nothing measured
// (no transaction completed, no round ran): a dash.
std::string Cell(double v, double ref, const char* format, bool latency = false) {
  char b[96];
  if (latency && v <= 0) return "—";
  const int len = std::snprintf(b, sizeof b, format, v);
  if (ref > 0) std::snprintf(b + len, sizeof b - static_cast<size_t>(len), " (%.2f×)", v / ref);
  return b;
}

void Bench::Print() const {
  std::printf("## 12. Fleets: N hosts on one primary\n\n");
  std::printf(
      "One PostgreSQL (%s), one real `tenantcached` (heartbeat_interval 1 s, stale_after 5 s) and N − 1 "
      "simulated hosts in `build/bench/fleet_bench`: one connection each that LISTENs on `%s`, drains "
      "every notification and heartbeats every second at its own random phase, skipping a tick while its "
      "previous heartbeat is in flight (the daemon's listener does the same). A real host heartbeats on a "
      "second connection that does not LISTEN; PostgreSQL wakes only listening backends, so one connection "
      "per host carries the load that matters. Two more connections listen, the benchmark's own: an "
      "observer that counts heartbeats and a raw listener (for commit → invalid). The simulated hosts run "
      "in one process on the same machine as the primary: their CPU is in the table too.\n\n"
      "Two heartbeat protocols for the simulated hosts, each N measured with both: `own`, the daemon's "
      "before shared heartbeats (and still its protocol on a schema older than version 6): every host "
      "every interval commits `SELECT txid_current_snapshot()::text, pg_notify('%s', '1 h <token>')`; "
      "`shared` (daemon/shared_heartbeat.h, whose logic each simulated host runs as the daemon does): "
      "every host every interval runs the probe (a snapshot and a try at one of the two leader slots, no "
      "NOTIFY), and only a leader, or a host that has received no verified heartbeat for 1.25 to 1.75 "
      "intervals, NOTIFYs its signed heartbeat. The real daemon runs what its schema and its config give "
      "it; the last table says which, from its statistics (`shared_heartbeat_sources`).\n\n"
      "Per row: a %d s idle window (the fleet alone) for the heartbeat NOTIFYs per second the primary "
      "commits (payloads `1 h …` the observer receives between two markers, which arrive in commit "
      "order) and the primary's CPU (utime + stime of the postmaster and all its children, %% of one "
      "core); commit → invalid at the real daemon: %d cached users updated one at a time, to the entry "
      "reading invalid in shared memory, beside the raw listener's receipt of the same message; NOTIFY "
      "capacity (`pgbench -c 2 -j 2 -T %d`, `SELECT pg_notify('%s', '1 h capacity')`, an unknown "
      "heartbeat token that daemons ignore); the write latency of an invalidating UPDATE (a user's role, "
      "`pgbench -c 1 -T %d` back to back, average and p99 of its transaction log). In parentheses: the "
      "ratio to N = 1 of the same protocol in this run, which is how each column grows with N. A dash: "
      "nothing measured (no transaction completed, or the daemon was not synced for any round).\n\n",
      settings_.c_str(), kChannel, kChannel, args_.window_s, args_.rounds, args_.window_s, kChannel,
      args_.window_s);
  auto base = [this](const Row& r) {
    for (const Row& c : rows_)
      if (c.protocol == r.protocol && c.n == 1) return c;
    return Row{};
  };
  std::printf(
      "| protocol | N | heartbeat NOTIFY/s | primary CPU | NOTIFY capacity | simulated hosts' CPU | their "
      "ticks | skipped (previous heartbeat in flight) | their heartbeat NOTIFYs | leader slots they hold "
      "|\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows_) {
    const Row b = base(r);
    std::printf("| %s | %d | %s | %s | %s | %.1f %% | %llu | %llu | %llu | %s |\n", Name(r.protocol), r.n,
                Cell(r.heartbeats_per_s, b.heartbeats_per_s, "%.1f").c_str(),
                Cell(r.cpu_pct, b.cpu_pct, "%.1f %%").c_str(),
                Cell(r.capacity_tps, b.capacity_tps, "%.0f tps").c_str(), r.bench_cpu_pct,
                static_cast<unsigned long long>(r.ticks), static_cast<unsigned long long>(r.skipped),
                static_cast<unsigned long long>(r.sent),
                r.protocol == Protocol::kShared ? std::to_string(r.leaders).c_str() : "—");
  }
  std::printf(
      "\n| protocol | N | UPDATE latency avg | p99 | UPDATEs in %d s | commit → invalid p50 | p99 | raw "
      "listener p50 | p99 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
      args_.window_s);
  for (const Row& r : rows_) {
    const Row b = base(r);
    std::printf("| %s | %d | %s | %s | %ld | %s | %s | %s | %s |\n", Name(r.protocol), r.n,
                Cell(r.update_avg_ms, b.update_avg_ms, "%.2f ms", true).c_str(),
                Cell(r.update_p99_ms, b.update_p99_ms, "%.2f ms", true).c_str(), r.updates,
                Cell(r.invalid.p50, b.invalid.p50, "%.0f µs", true).c_str(),
                Cell(r.invalid.p99, b.invalid.p99, "%.0f µs", true).c_str(),
                Cell(r.listener.p50, b.listener.p50, "%.0f µs", true).c_str(),
                Cell(r.listener.p99, b.listener.p99, "%.0f µs", true).c_str());
  }
  std::printf("\nThe real daemon in each row (its statistics and its log, over the row):\n\n");
  std::printf(
      "| protocol | N | its heartbeats | leader slots it holds | heartbeats sent | heartbeats received | "
      "\"connected but deaf\" warnings | listener reconnects | commit → invalid rounds it could not fill "
      "(not synced) |\n|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows_)
    std::printf("| %s | %d | %s | %s | %llu | %llu | %zu | %llu | %d of %d |\n", Name(r.protocol), r.n,
                r.daemon_mode.c_str(), r.daemon_slots.c_str(), static_cast<unsigned long long>(r.daemon_sent),
                static_cast<unsigned long long>(r.daemon_received), r.deaf,
                static_cast<unsigned long long>(r.daemon_reconnects), r.unavailable, args_.rounds);
  std::printf("\n");
  std::fflush(stdout);
}

int Bench::Run() {
  Setup();
  for (int n : args_.sizes)
    for (Protocol p : {Protocol::kOwn, Protocol::kShared}) rows_.push_back(Measure(n, p));
  // Grouped by protocol, each N = 1 first.
  std::stable_sort(rows_.begin(), rows_.end(), [](const Row& a, const Row& b) {
    return a.protocol == Protocol::kOwn && b.protocol != a.protocol;
  });
  Print();
  probe_.reset();
  marker_.reset();
  fleet_.reset();
  tc_cache_close(cache_);
  daemon_->Signal(SIGTERM);
  const auto st = daemon_->Wait();
  return st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0 ? 0 : 1;
}

bool ParseSizes(const std::string& s, std::vector<int>* out) {
  std::istringstream in(s);
  for (std::string part; std::getline(in, part, ',');) {
    const int n = std::atoi(part.c_str());
    if (n < 1 || std::to_string(n) != part) return false;
    out->push_back(n);
  }
  std::sort(out->begin(), out->end());
  return !out->empty() && out->front() == 1;
}

}  // namespace
}  // namespace tenantcache::bench

int main(int argc, char** argv) {
  tenantcache::bench::Args a;
  std::string sizes;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    if (s == "--quick") {
      a.quick = true;
    } else if (s == "--hosts" && i + 1 < argc) {
      sizes = argv[++i];
    } else if (s == "--window" && i + 1 < argc && std::atoi(argv[i + 1]) > 0) {
      a.window_s = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: fleet_bench [--quick] [--hosts 1,N,...] [--window SECONDS]\n");
      return 2;
    }
  }
  if (sizes.empty()) sizes = a.quick ? "1,50" : "1,50,200,500";
  if (!tenantcache::bench::ParseSizes(sizes, &a.sizes)) {
    std::fprintf(stderr, "fleet_bench: --hosts takes host counts separated by commas, 1 among them: \"%s\"\n",
                 sizes.c_str());
    return 2;
  }
  if (a.window_s == 0) a.window_s = a.quick ? 1 : 5;
  a.rounds = a.quick ? 20 : 50;
  return tenantcache::bench::Bench(std::move(a)).Run();
}
