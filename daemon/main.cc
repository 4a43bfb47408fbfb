// tenantcached: the single writer of the tenantcache shared-memory cache.
//
//   tenantcached [--config FILE] [--check-config [--connect]] [--version] [--help]
//
// main() only orders the subsystems' setup; the order matters:
//  1. The configuration is loaded and checked first: a bad file exits
//     non-zero before anything is touched. Then what can be checked on the
//     host (groups, conninfo: CheckHost) and each namespace's query against
//     its database (QueryCheck, on a private loop, bounded by
//     kQueryCheckTimeout): a query that does not return its namespace's
//     columns refuses the start with FILE:LINE, before the cache file or the
//     control socket exist, so systemd sees the unit fail with the reason
//     instead of a READY daemon whose lookups all fail. A database that
//     cannot be reached does not stop the start (readers fail closed until it
//     can be); the loaders run the same check when they connect. READY=1
//     does not wait for the loaders: by then the start check has passed, or
//     could not run and the loaders' check answers for the namespace. A
//     signal during this check ends the process as it would any program:
//     nothing has been created yet.
//  2. Signals are installed before the first connection, so a TERM during a
//     slow start is still a clean stop.
//  3. The cache file is created (or reused, with its epoch bumped) before
//     anything can fill it; it starts unsynced, so readers fail closed.
//  4. The control socket is bound, then the descriptors are counted (what is
//     open now plus the sources' connections to come) against RLIMIT_NOFILE,
//     then the sources connect. READY goes to systemd only once every
//     listener has LISTEN active and is synced.
#include <dirent.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>

#include "cache_writer.h"
#include "config.h"
#include "control.h"
#include "daemon.h"
#include "keys.h"
#include "listener.h"
#include "log_limit.h"
#include "query_check.h"
#include "stats_format.h"
#include "systemd.h"
#include "tenantcache/tenantcache.h"
#include "uv_handle.h"

namespace tenantcache {
namespace {

constexpr const char* kDefaultConfig = "/etc/tenantcache/tenantcached.toml";
// How long the start, a reload and --check-config --connect wait for each
// source's database to answer the query check.
constexpr Millis kQueryCheckTimeout{5000};

}  // namespace

void PrintConfigReference(FILE* out);
void PrintSampleConfig(FILE* out);

namespace {

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: tenantcached [--config FILE] [--check-config [--connect]] [--version]\n"
               "\n"
               "  -c, --config FILE   configuration file (default %s)\n"
               "  -t, --check-config  validate the configuration and what it names on this host (groups,\n"
               "                      conninfo syntax, the cache directory) and exit: 0 valid, 2 not\n"
               "      --connect       with --check-config: also connect to each source and check each\n"
               "                      namespace's query against the database (its parameter, its\n"
               "                      tenant_column and fields); 3 when a database cannot be reached\n"
               "      --config-reference  print every configuration key as a Markdown table\n"
               "      --sample-config     print a commented configuration file with every key\n"
               "  -V, --version       print the version and exit\n"
               "  -h, --help          this help\n",
               kDefaultConfig);
}

}  // namespace

void PrintConfigReference(FILE* out) {
  std::fprintf(out, "| key | type | default | reload | meaning |\n|---|---|---|---|---|\n");
  static const char* kTypes[] = {"string",     "integer",         "duration",
                                 "octal mode", "list of strings", "key kind"};
  for (const auto& k : kConfigKeys) {
    const bool array = std::string_view(k.table) == "source" || std::string_view(k.table) == "namespace";
    std::fprintf(out, "| `%s%s%s.%s` | %s | %s | %s | %s |\n", array ? "[[" : "[", k.table,
                 array ? "]]" : "]", k.name, kTypes[static_cast<int>(k.type)],
                 k.default_value == nullptr ? "required" : ("`" + std::string(k.default_value) + "`").c_str(),
                 k.reloadable ? "yes" : "no", k.doc);
  }
}

// The packaged /etc/tenantcache/tenantcached.toml: every key with its
// documentation and default (commented out), the values a packaged install
// needs set, and the example fleet schema's namespaces.
void PrintSampleConfig(FILE* out) {
  // Values that differ from the defaults in a packaged install, and examples
  // for the keys that have no default.
  static const std::map<std::string, std::string> kSet = {
      {"cache.path", "\"" TC_DEFAULT_CACHE_PATH "\""},
      {"source.name", "\"main\""},
      {"source.conninfo", "\"host=/var/run/postgresql dbname=app user=tenantcache\""},
  };
  std::fprintf(out,
               "# tenantcached configuration (TOML). Every key is listed with its documentation;\n"
               "# a commented-out key shows its default. Reload with SIGHUP (systemctl reload\n"
               "# tenantcached): keys marked reloadable apply at once, others need a restart.\n"
               "# Check a change with: tenantcached --check-config --config FILE\n");
  std::string table;
  for (const auto& k : kConfigKeys) {
    const std::string t = k.table;
    const bool array = t == "source" || t == "namespace";
    if (t != table) {
      table = t;
      if (t == "namespace") {
        std::fprintf(out,
                     "\n# One [[namespace]] per lookup. This one serves the example schema of\n"
                     "# sql/examples/fleet.sql; see the README for the others.\n");
      }
      std::fprintf(out, "\n%s%s%s\n", array ? "[[" : "[", k.table, array ? "]]" : "]");
    }
    std::fprintf(out, "# %s%s\n", k.doc, k.reloadable ? " (reloadable)" : "");
    const auto set = kSet.find(t + "." + k.name);
    if (t == "namespace") {
      static const std::map<std::string, std::string> kExample = {
          {"name", "\"user\""},
          {"kind", "\"uuid\""},
          {"query",
           "\"\"\"\n  SELECT r.id::text AS tenant_id, r.yacht_code AS tenant_code, r.tenant_url, u.role\n"
           "    FROM fleet.user_accounts u JOIN fleet.fleet_registry r ON r.id = u.yacht_id\n"
           "   WHERE u.id = $1::uuid AND u.active\"\"\""},
          {"tenant_column", "\"tenant_id\""},
          {"fields", "[\"tenant_code\", \"tenant_url\", \"role\"]"}};
      const auto e = kExample.find(k.name);
      if (e != kExample.end()) {
        std::fprintf(out, "%s = %s\n", k.name, e->second.c_str());
        continue;
      }
    }
    if (set != kSet.end())
      std::fprintf(out, "%s = %s\n", k.name, set->second.c_str());
    else
      std::fprintf(out, "#%s = %s\n", k.name, k.default_value != nullptr ? k.default_value : "(required)");
  }
}

namespace {

CacheOptions CacheOptionsFrom(const Config& c) {
  CacheOptions o;
  o.path = c.cache_path;
  o.capacity = c.capacity;
  o.slot_size = c.slot_bytes;
  o.mode = c.cache_mode;
  if (!c.cache_group.empty()) o.group = ResolveGroup(c, "cache.group", c.cache_group);
  for (const auto& n : c.namespaces)
    o.namespaces.push_back(
        NamespaceSpec{n.name, n.key_kind, n.key_kind == layout::kText ? n.max_key_len : 0, n.fields});
  o.control_socket = c.control_socket;
  o.stale_after_ns = static_cast<uint64_t>(c.stale_after.count()) * 1'000'000;
  o.idle_timeout_ns = static_cast<uint64_t>(c.idle_timeout.count()) * 1'000'000;
  return o;
}

void SetupLogging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("tenantcached");
  // Under systemd, journald adds the time; elsewhere it helps.
  logger->set_pattern(getenv("JOURNAL_STREAM") != nullptr ? "[%l] %v" : "%Y-%m-%d %H:%M:%S.%e [%l] %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

// Descriptors the daemon may need besides its control clients, beyond what
// is open when they are counted: a Prometheus temporary file, systemd's
// notify socket, name-service files on reload, libpq's transient ones.
constexpr size_t kSpareDescriptors = 16;

size_t OpenDescriptors() {
  size_t n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (const dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
    --n;  // the directory's own descriptor
  }
  return n;
}

// Asks the scheduler for short time slices. The daemon sleeps in its loop
// and a miss wakes it twice (the client's request, then the database's
// answer) for a few microseconds of work each time, while a worker waits.
// On a busy host a woken task with the default slice may queue behind a
// CPU-bound neighbour (a compiler, a batch job) for up to that neighbour's
// slice, milliseconds: the tail of a miss's latency. Since Linux 6.12 a
// SCHED_OTHER task may ask for a shorter slice (sched_attr.sched_runtime,
// no privilege needed); a woken task with a shorter slice than the running
// one preempts it at once. Older kernels ignore the field. The nice value
// and everything else stay as they are (systemd's Nice= still applies).
void RequestShortSlices() {
  struct SchedAttr {  // struct sched_attr, SCHED_ATTR_SIZE_VER0
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
  };
  static_assert(sizeof(SchedAttr) == 48);
  constexpr uint64_t kSliceNs = 100'000;  // the shortest the kernel grants
  SchedAttr attr{};
  if (syscall(SYS_sched_getattr, 0, &attr, sizeof attr, 0) != 0 || attr.policy != SCHED_OTHER) return;
  attr.size = sizeof attr;
  attr.runtime = kSliceNs;
  // Refused only by a system call filter (systemd's @resources group holds
  // sched_setattr): the daemon works as before, its misses may just wait
  // behind busy neighbours, so this is information, not a warning.
  if (syscall(SYS_sched_setattr, 0, &attr, 0) != 0)
    spdlog::info(
        "cannot ask for {} µs scheduler slices ({}): on a busy host misses may wait behind other processes; "
        "allow sched_setattr (systemd: SystemCallFilter=sched_setattr)",
        kSliceNs / 1000, strerror(errno));
}

// Raises the soft RLIMIT_NOFILE to the hard limit (systemd's default soft
// limit, 1024, is below the default max_clients alone) and returns how many
// descriptors remain for control clients once the daemon's own are counted:
// what is open now (cache files, loop, control socket) and one connection
// per loader and listener. Throws when none remain.
size_t ClientDescriptorBudget(const Config& c) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
    throw std::runtime_error(std::string("getrlimit: ") + strerror(errno));
  if (lim.rlim_cur < lim.rlim_max) {
    const rlim_t before = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) == 0) {
      spdlog::info("raised the RLIMIT_NOFILE soft limit from {} to {}", before, lim.rlim_cur);
    } else {
      spdlog::warn("cannot raise the RLIMIT_NOFILE soft limit from {} to {}: {}", before, lim.rlim_max,
                   strerror(errno));
      lim.rlim_cur = before;
    }
  }
  size_t connections = 0;
  for (const auto& s : c.sources) connections += static_cast<size_t>(s.loaders) + 1;
  const size_t open_now = OpenDescriptors();
  const size_t own = open_now + connections + kSpareDescriptors;
  if (lim.rlim_cur <= own) {
    throw std::runtime_error("RLIMIT_NOFILE is " + std::to_string(lim.rlim_cur) + ", but the daemon needs " +
                             std::to_string(own) + " descriptors before any client (" +
                             std::to_string(open_now) + " open, " + std::to_string(connections) +
                             " database connections, " + std::to_string(kSpareDescriptors) +
                             " spare); raise LimitNOFILE= to at least " +
                             std::to_string(own + static_cast<size_t>(c.max_clients)));
  }
  const size_t budget = lim.rlim_cur - own;
  spdlog::info(
      "descriptors: RLIMIT_NOFILE {}, {} for the daemon ({} open, {} database connections, {} spare), "
      "max_clients {}",
      lim.rlim_cur, own, open_now, connections, kSpareDescriptors,
      std::min(budget, static_cast<size_t>(c.max_clients)));
  return budget;
}

struct Process {
  uv_loop_t loop;
  std::unique_ptr<Daemon> daemon;
  std::unique_ptr<ControlServer> control;
  uv_signal_t sighup, sigterm, sigint;
  uv_timer_t* status_timer = nullptr;
  uv_timer_t* watchdog_timer = nullptr;
  bool stopping = false;
  bool ready = false;  // READY=1 sent: every source was synced once
  // A reload's check of the queries it changes, while it runs.
  std::unique_ptr<QueryCheck> reload_check;
};

// A start that fails once the loop exists still closes everything it
// opened, through uv_close, as a normal stop does.
int FailStart(Process* p, const std::exception& e) {
  spdlog::critical("{}", e.what());
  if (p->control) p->control->Stop();
  p->control.reset();
  p->daemon.reset();
  for (uv_signal_t* s : {&p->sighup, &p->sigterm, &p->sigint})
    uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
  uv_run(&p->loop, UV_RUN_DEFAULT);
  uv_loop_close(&p->loop);
  return 1;
}

void Shutdown(Process* p, const char* why) {
  if (p->stopping) {
    spdlog::warn("{} again: exiting immediately", why);
    std::_Exit(1);
  }
  p->stopping = true;
  spdlog::info("{}: stopping (the cache is marked unavailable)", why);
  p->reload_check.reset();
  systemd::Stopping();
  p->daemon->Stop();
  p->control->Stop();
  CloseTimer(p->status_timer);
  CloseTimer(p->watchdog_timer);
  uv_close(reinterpret_cast<uv_handle_t*>(&p->sighup), nullptr);
  // TERM and INT stay armed until the loop ends, for the "second TERM" rule.
  uv_unref(reinterpret_cast<uv_handle_t*>(&p->sigterm));
  uv_unref(reinterpret_cast<uv_handle_t*>(&p->sigint));
}

std::string Joined(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// Applies what a reload can apply of `loaded` and says what changed: each
// change at debug, the keys at info, what needs a restart as a warning.
void ApplyReload(Process* p, const Config& loaded, const std::string& path) {
  const Config& running = p->daemon->config();
  const auto changes = ConfigChanges(running, loaded);
  for (const auto& c : changes) spdlog::debug("reload: {}", c);
  const auto restart = RestartRequired(running, loaded);
  if (!restart.empty())
    spdlog::warn("reload: {} changed; that needs a restart and was not applied", Joined(restart));
  std::vector<std::string> keys;
  keys.reserve(changes.size());
  for (const auto& c : changes) keys.push_back(c.substr(0, c.find(':')));
  spdlog::set_level(spdlog::level::from_str(loaded.log_level));
  p->daemon->Reload(loaded);
  p->control->Reload();
  spdlog::info("reloaded {}: {}", path, keys.empty() ? "nothing changed" : "changed " + Joined(keys));
}

void EndReload(Process* p) {
  // READY=1 ends the reload; before the first sync it would also claim a
  // start that has not happened yet.
  if (p->ready)
    systemd::Ready(p->daemon->StatusLine());
  else
    systemd::Status(p->daemon->StatusLine());
}

// A reload whose file changes a namespace's query, tenant column or fields
// checks those queries against the database first (on the loop: the check is
// asynchronous) and is refused, the running configuration kept, when one does
// not match. The changed namespaces themselves take effect at the next
// restart; the check tells now whether that restart will succeed.
void Reload(Process* p, const std::string& path) {
  systemd::Reloading();
  p->reload_check.reset();  // a newer SIGHUP replaces a check under way
  auto loaded = std::make_shared<Config>();
  try {
    *loaded = LoadConfig(path);
    if (const auto problems = CheckHost(*loaded); !problems.empty())
      throw ConfigError(Joined(problems, "; "));
  } catch (const std::exception& e) {
    spdlog::error("reload failed, keeping the running configuration: {}", e.what());
    EndReload(p);
    return;
  }
  const auto changed = ChangedQueries(p->daemon->config(), *loaded);
  if (changed.empty()) {
    ApplyReload(p, *loaded, path);
    EndReload(p);
    return;
  }
  std::vector<std::string> names;
  names.reserve(changed.size());
  for (const auto& n : changed) names.push_back(n.name);
  spdlog::info("reload: checking the changed queries of namespace {} against the database", Joined(names));
  p->reload_check = std::make_unique<QueryCheck>(
      &p->loop, *loaded, changed, kQueryCheckTimeout, [p, loaded, path](const QueryCheck::Outcome& o) {
        if (!o.problems.empty()) {
          for (const auto& problem : o.problems)
            spdlog::error("reload refused, keeping the running configuration: {}", problem);
        } else {
          for (const auto& u : o.unreachable)
            spdlog::warn(
                "reload: the changed queries could not be checked ({}); the loaders check them when "
                "they connect after the restart",
                u);
          ApplyReload(p, *loaded, path);
        }
        EndReload(p);
        p->reload_check.reset();  // allowed: `done` runs outside libpq's callbacks
      });
  p->reload_check->Start();
}

int Run(const std::string& config_path) {
  Config config;
  try {
    config = LoadConfig(config_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tenantcached: %s\n", e.what());
    return 2;
  }
  SetupLogging(config.log_level);
  spdlog::info("tenantcached {} (cache layout {}, libpq {}, libuv {}) starting, pid {}, config {}",
               tc_version(), tc_layout_version(), PQlibVersion(), uv_version_string(), getpid(), config_path);
  if (const auto problems = CheckHost(config); !problems.empty()) {
    for (const auto& problem : problems) spdlog::critical("{}", problem);
    spdlog::critical("refusing to start: fix {} (tenantcached --check-config shows what is wrong)",
                     config_path);
    return 2;
  }
  {
    const auto outcome = CheckQueriesNow(config, kQueryCheckTimeout);
    if (!outcome.problems.empty()) {
      for (const auto& problem : outcome.problems) spdlog::critical("{}", problem);
      spdlog::critical(
          "refusing to start: a namespace's query does not match it (tenantcached --check-config --connect "
          "checks a fix)");
      return 2;
    }
    for (const auto& u : outcome.unreachable)
      spdlog::warn(
          "the namespaces' queries could not be checked at start ({}); the loaders check them when they "
          "connect",
          u);
  }

  Process p;
  uv_loop_init(&p.loop);
  uv_signal_init(&p.loop, &p.sighup);
  uv_signal_init(&p.loop, &p.sigterm);
  uv_signal_init(&p.loop, &p.sigint);
  p.sighup.data = p.sigterm.data = p.sigint.data = &p;
  static std::string path_for_reload;
  path_for_reload = config_path;
  uv_signal_start(
      &p.sighup, [](uv_signal_t* s, int) { Reload(static_cast<Process*>(s->data), path_for_reload); },
      SIGHUP);
  uv_signal_start(
      &p.sigterm, [](uv_signal_t* s, int) { Shutdown(static_cast<Process*>(s->data), "SIGTERM"); }, SIGTERM);
  uv_signal_start(
      &p.sigint, [](uv_signal_t* s, int) { Shutdown(static_cast<Process*>(s->data), "SIGINT"); }, SIGINT);
  std::signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<CacheWriter> writer;
  try {
    writer = CacheWriter::Open(CacheOptionsFrom(config));
  } catch (const std::exception& e) {
    return FailStart(&p, e);
  }
  spdlog::info("cache file {} {} ({}, capacity {} entries, {} namespaces)", config.cache_path,
               writer->reused() ? "reused" : "created",
               FormatBytes(writer->file_bytes() + writer->recency_bytes()), config.capacity,
               config.namespaces.size());
  for (const auto& note : writer->notes()) spdlog::info("cache file {}: {}", config.cache_path, note);
  if (writer->huge_page_bytes() > 0) {
    spdlog::info("cache file {}: {} of {} in 2 MiB pages (a hit walks no 4 KiB page tables there)",
                 config.cache_path, FormatBytes(writer->huge_page_bytes()),
                 FormatBytes(writer->file_bytes()));
  } else {
    spdlog::info(
        "cache file {}: in 4 KiB pages (no huge pages: each random hit also pays TLB misses); to get 2 MiB "
        "pages, put it on a tmpfs mounted with huge=advise (mount -o remount,huge=advise /dev/shm) on a "
        "kernel with transparent huge pages, stop the daemon, remove the file (a reused file keeps its "
        "pages) and "
        "start it again",
        config.cache_path);
  }

  p.daemon = std::make_unique<Daemon>(&p.loop, config, std::move(writer));
  p.control = std::make_unique<ControlServer>(p.daemon.get());
  try {
    p.control->Start();
  } catch (const std::exception& e) {
    return FailStart(&p, e);
  }
  spdlog::info("control socket {}", config.control_socket);
  try {
    p.control->SetClientBudget(ClientDescriptorBudget(config));
  } catch (const std::exception& e) {
    return FailStart(&p, e);
  }

  p.status_timer = NewTimer(&p.loop, &p);
  uv_timer_start(
      p.status_timer,
      [](uv_timer_t* t) { systemd::Status(static_cast<Process*>(t->data)->daemon->StatusLine()); }, 5000,
      5000);
  if (const uint64_t usec = systemd::WatchdogUsec(); usec > 0) {
    p.watchdog_timer = NewTimer(&p.loop, &p);
    uv_timer_start(
        p.watchdog_timer, [](uv_timer_t*) { systemd::WatchdogPing(); }, 0,
        std::max<uint64_t>(usec / 2000, 1));
  }
  p.daemon->Start([&p] {
    spdlog::info("ready: every source is listening and synced");
    p.ready = true;
    systemd::Ready(p.daemon->StatusLine());
  });

  RequestShortSlices();
  uv_run(&p.loop, UV_RUN_DEFAULT);
  p.daemon.reset();
  p.control.reset();
  uv_close(reinterpret_cast<uv_handle_t*>(&p.sigterm), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&p.sigint), nullptr);
  uv_run(&p.loop, UV_RUN_DEFAULT);
  systemd::Finish(std::chrono::seconds(1));
  const int rc = uv_loop_close(&p.loop);
  if (rc != 0) {
    spdlog::error("event loop did not close cleanly: {}", uv_strerror(rc));
    return 1;
  }
  spdlog::info("stopped");
  return 0;
}

// --check-config --connect: a listener that reaches PostgreSQL through a
// pooler is refused at start (and retried until the file is fixed), so the
// check says so now. Blocking libpq is fine in a command that exits; the
// connect is bounded like the query check. Appends to `problems`, or to
// `unreachable` when the listener's own conninfo cannot connect.
void CheckListener(const SourceConfig& s, std::vector<std::string>* problems,
                   std::vector<std::string>* unreachable) {
  const std::string& conninfo = s.listener_conninfo.empty() ? s.conninfo : s.listener_conninfo;
  // Before dbname, so that a connect_timeout in the conninfo wins.
  const std::string timeout = std::to_string(std::max<int64_t>(2, kQueryCheckTimeout.count() / 1000));
  const char* keys[] = {"connect_timeout", "dbname", nullptr};
  const char* values[] = {timeout.c_str(), conninfo.c_str(), nullptr};
  PGconn* c = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (PQstatus(c) != CONNECTION_OK) {
    // The query check already reports a conninfo that cannot connect.
    std::string error = PQerrorMessage(c);
    while (!error.empty() && error.back() == '\n') error.pop_back();
    if (!s.listener_conninfo.empty())
      unreachable->push_back("source " + s.name + ": listener_conninfo cannot connect: " + Printable(error));
  } else {
    PGresult* r = PQexec(c, "SELECT pg_backend_pid()");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
      const int server_pid = std::atoi(PQgetvalue(r, 0, 0));
      if (server_pid != PQbackendPID(c))
        problems->push_back("source " + s.name + ": " + ListenerBehindPooler(s, server_pid, PQbackendPID(c)));
    }
    PQclear(r);
  }
  PQfinish(c);
}

// --check-config: everything that can be checked without starting, with the
// daemon's own checks, each problem on its own line.
int CheckConfig(const std::string& path, bool connect) {
  Config c;
  try {
    c = LoadConfig(path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tenantcached: %s\n", e.what());
    return 2;
  }
  std::vector<std::string> problems = CheckHost(c);
  // The directory as CacheWriter::Open will require it. Run as root (sudo),
  // the check cannot know the daemon's user, so any owner passes; and a
  // directory that does not exist yet may be made at start (the packaged
  // unit's RuntimeDirectory=): that is a warning, not an error.
  const std::string dir = c.cache_path.substr(0, std::max<size_t>(c.cache_path.rfind('/'), 1));
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0 && errno == ENOENT) {
    std::fprintf(
        stderr,
        "tenantcached: warning: %s: cache.path: the directory %s does not exist; the daemon refuses to "
        "start unless it exists then (RuntimeDirectory= in the unit, or create it owned by the "
        "daemon's user)\n",
        path.c_str(), dir.c_str());
  } else {
    try {
      CheckCacheDirectory(c.cache_path, geteuid() == 0 ? std::nullopt : std::optional<uid_t>(geteuid()));
    } catch (const std::exception& e) {
      problems.push_back(path + ": cache.path: " + e.what());
    }
  }
  int rc = 0;
  if (connect) {
    const auto outcome = CheckQueriesNow(c, kQueryCheckTimeout);
    problems.insert(problems.end(), outcome.problems.begin(), outcome.problems.end());
    for (const auto& u : outcome.unreachable)
      std::fprintf(stderr, "tenantcached: cannot check the queries of %s\n", u.c_str());
    std::vector<std::string> listeners_unreachable;
    for (const auto& s : c.sources) CheckListener(s, &problems, &listeners_unreachable);
    for (const auto& u : listeners_unreachable)
      std::fprintf(stderr, "tenantcached: cannot check the listener of %s\n", u.c_str());
    if (!outcome.unreachable.empty() || !listeners_unreachable.empty()) rc = 3;
  }
  for (const auto& problem : problems) std::fprintf(stderr, "tenantcached: %s\n", problem.c_str());
  if (!problems.empty()) return 2;
  if (rc != 0) return rc;
  std::printf("%s: configuration OK (%zu source(s), %zu namespace(s)%s)\n", path.c_str(), c.sources.size(),
              c.namespaces.size(), connect ? ", every query checked against its database" : "");
  return 0;
}

}  // namespace
}  // namespace tenantcache

int main(int argc, char** argv) {
  static const option kOptions[] = {{"config", required_argument, nullptr, 'c'},
                                    {"check-config", no_argument, nullptr, 't'},
                                    {"connect", no_argument, nullptr, 'C'},
                                    {"version", no_argument, nullptr, 'V'},
                                    {"config-reference", no_argument, nullptr, 'R'},
                                    {"sample-config", no_argument, nullptr, 'S'},
                                    {"help", no_argument, nullptr, 'h'},
                                    {nullptr, 0, nullptr, 0}};
  std::string config = tenantcache::kDefaultConfig;
  bool check = false;
  bool connect = false;
  int opt;
  while ((opt = getopt_long(argc, argv, "c:tVh", kOptions, nullptr)) != -1) {
    switch (opt) {
      case 'c':
        config = optarg;
        break;
      case 't':
        check = true;
        break;
      case 'C':
        connect = true;
        break;
      case 'V':
        std::printf("tenantcached %s (cache layout %u)\n", tc_version(), tc_layout_version());
        return 0;
      case 'R':
        tenantcache::PrintConfigReference(stdout);
        return 0;
      case 'S':
        tenantcache::PrintSampleConfig(stdout);
        return 0;
      case 'h':
        tenantcache::Usage(stdout);
        return 0;
      default:
        tenantcache::Usage(stderr);
        return 2;
    }
  }
  if (optind != argc) {
    tenantcache::Usage(stderr);
    return 2;
  }
  if (connect && !check) {
    std::fprintf(stderr, "tenantcached: --connect goes with --check-config\n");
    return 2;
  }
  if (check) return tenantcache::CheckConfig(config, connect);
  return tenantcache::Run(config);
}
