// tenantcached: the single writer of the tenantcache shared-memory cache.
//
//   tenantcached [--config FILE] [--check-config] [--version] [--help]
//
// main() only orders the subsystems' setup; the order matters:
//  1. The configuration is loaded and checked first: a bad file exits
//     non-zero before anything is touched.
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
#include <grp.h>
#include <libpq-fe.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>

#include "cache_writer.h"
#include "config.h"
#include "control.h"
#include "daemon.h"
#include "keys.h"
#include "systemd.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache {
namespace {

constexpr const char* kDefaultConfig = "/etc/tenantcache/tenantcached.toml";

}  // namespace

void PrintConfigReference(FILE* out);
void PrintSampleConfig(FILE* out);

namespace {

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: tenantcached [--config FILE] [--check-config] [--version]\n"
               "\n"
               "  -c, --config FILE   configuration file (default %s)\n"
               "  -t, --check-config  validate the configuration and exit (0: valid)\n"
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
      {"cache.path", "\"/run/tenantcache/cache\""},
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
  if (!c.cache_group.empty()) {
    const group* g = getgrnam(c.cache_group.c_str());
    if (g == nullptr) throw ConfigError(c.path + ": cache.group: no group named \"" + c.cache_group + "\"");
    o.group = g->gr_gid;
  }
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

void Reload(Process* p, const std::string& path) {
  systemd::Reloading();
  try {
    Config loaded = LoadConfig(path);
    const auto restart = RestartRequired(p->daemon->config(), loaded);
    if (!restart.empty()) {
      std::string keys;
      for (const auto& k : restart) keys += (keys.empty() ? "" : ", ") + k;
      spdlog::warn("reload: {} changed; that needs a restart and was not applied", keys);
    }
    spdlog::set_level(spdlog::level::from_str(loaded.log_level));
    p->daemon->Reload(loaded);
    p->control->Reload();
    spdlog::info("reloaded {}", path);
  } catch (const std::exception& e) {
    spdlog::error("reload failed, keeping the running configuration: {}", e.what());
  }
  // READY=1 ends the reload; before the first sync it would also claim a
  // start that has not happened yet.
  if (p->ready)
    systemd::Ready(p->daemon->StatusLine());
  else
    systemd::Status(p->daemon->StatusLine());
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
  spdlog::info("cache file {} {} ({} MiB, capacity {} entries, {} namespaces)", config.cache_path,
               writer->reused() ? "reused" : "created",
               (writer->file_bytes() + writer->recency_bytes()) >> 20, config.capacity,
               config.namespaces.size());
  for (const auto& note : writer->notes()) spdlog::info("cache file {}: {}", config.cache_path, note);

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

}  // namespace
}  // namespace tenantcache

int main(int argc, char** argv) {
  static const option kOptions[] = {{"config", required_argument, nullptr, 'c'},
                                    {"check-config", no_argument, nullptr, 't'},
                                    {"version", no_argument, nullptr, 'V'},
                                    {"config-reference", no_argument, nullptr, 'R'},
                                    {"sample-config", no_argument, nullptr, 'S'},
                                    {"help", no_argument, nullptr, 'h'},
                                    {nullptr, 0, nullptr, 0}};
  std::string config = tenantcache::kDefaultConfig;
  bool check = false;
  int opt;
  while ((opt = getopt_long(argc, argv, "c:tVh", kOptions, nullptr)) != -1) {
    switch (opt) {
      case 'c':
        config = optarg;
        break;
      case 't':
        check = true;
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
  if (check) {
    try {
      const auto c = tenantcache::LoadConfig(config);
      std::printf("%s: configuration OK (%zu source(s), %zu namespace(s))\n", config.c_str(),
                  c.sources.size(), c.namespaces.size());
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tenantcached: %s\n", e.what());
      return 2;
    }
  }
  return tenantcache::Run(config);
}
