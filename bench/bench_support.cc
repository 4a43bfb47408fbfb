#include "bench_support.h"

#include <poll.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

namespace tenantcache::bench {

Pct Percentiles(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 99 / 100)]};
}

void Exec(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  const auto st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    std::fprintf(stderr, "%s: %s\n", sql.c_str(), PQresultErrorMessage(r));
    std::exit(1);
  }
  PQclear(r);
}

std::string ToggleRole(const std::string& id) {
  return "UPDATE fleet.user_accounts SET role = (CASE WHEN role = 'guest' THEN 'crew' ELSE 'guest' END) "
         "WHERE id = " +
         id;
}

int64_t ProcCpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The command name may hold spaces and parentheses: fields count from the
  // last ')'.
  const size_t close = s.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(s.substr(close + 2));
  std::string field;
  int64_t utime = 0, stime = 0;
  for (int i = 3; rest >> field; ++i) {
    if (i == 14) utime = std::atoll(field.c_str());
    if (i == 15) {
      stime = std::atoll(field.c_str());
      break;
    }
  }
  return utime + stime;
}

BenchDaemon StartDaemon(const std::string& dir, const std::string& conninfo, const std::string& log_level,
                        uint64_t capacity, const std::string& source) {
  std::string config = test::FleetConfig(dir, conninfo, "", source);
  auto set = [&config](const std::string& from, const std::string& to) {
    config.replace(config.find(from), from.size(), to);
  };
  set("log_level = \"debug\"", "log_level = \"" + log_level + "\"");
  set("capacity = 10000", "capacity = " + std::to_string(capacity));
  set("stale_after = \"2s\"", "stale_after = \"5s\"");
  set("heartbeat_interval = \"200ms\"", "heartbeat_interval = \"1s\"");
  BenchDaemon d;
  d.process = std::make_unique<test::DaemonProcess>(dir, config);
  if (!d.process->WaitReady()) {
    std::fprintf(stderr, "the daemon did not start:\n%s\n", d.process->Log().c_str());
    std::exit(1);
  }
  if (tc_cache_open(d.process->cache_path().c_str(), &d.cache) != 0 ||
      tc_namespace(d.cache, "user", &d.user) != 0) {
    std::fprintf(stderr, "cannot open the daemon's cache at %s\n", d.process->cache_path().c_str());
    std::exit(1);
  }
  return d;
}

namespace {

PGconn* Connect(const std::string& conninfo) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::fprintf(stderr, "connect: %s\n", PQerrorMessage(c));
    std::exit(1);
  }
  return c;
}

}  // namespace

CommitToInvalid::CommitToInvalid(const std::string& conninfo, tc_cache* cache, tc_ns user)
    : cache_(cache), user_(user), writer_(Connect(conninfo)), raw_(Connect(conninfo)) {
  Exec(raw_, "LISTEN tenantcache");
}

CommitToInvalid::~CommitToInvalid() {
  PQfinish(writer_);
  PQfinish(raw_);
}

std::optional<CommitToInvalid::Sample> CommitToInvalid::Round(const std::string& key) {
  tc_value v;
  if (tc_cache_lookup(cache_, user_, key.data(), key.size(), 5000, &v) != TC_FOUND) return std::nullopt;
  // What the raw listener has not read yet (heartbeats, other writers'
  // messages, a backlog it built up between rounds) must not count in this
  // round: read until its socket holds nothing more.
  for (pollfd p{PQsocket(raw_), POLLIN, 0}; poll(&p, 1, 0) > 0 && PQconsumeInput(raw_) != 0;)
    while (PGnotify* note = PQnotifies(raw_)) PQfreemem(note);
  // Both watchers spin from before the UPDATE is sent, each on its own
  // thread, so neither waits for the other or for the writer's answer.
  std::atomic<bool> go{false};
  Clock::time_point t0, raw_at, invalid_at;
  std::thread raw_thread([&] {
    while (!go.load()) sched_yield();
    for (;;) {
      pollfd p{PQsocket(raw_), POLLIN, 0};
      poll(&p, 1, 5000);
      PQconsumeInput(raw_);
      bool seen = false;
      while (PGnotify* note = PQnotifies(raw_)) {
        if (std::strstr(note->extra, key.c_str()) != nullptr) seen = true;
        PQfreemem(note);
      }
      if (seen) {
        raw_at = Clock::now();
        return;
      }
    }
  });
  std::thread checker([&] {
    tc_value cv;
    while (!go.load()) sched_yield();
    while (tc_cache_get(cache_, user_, key.data(), key.size(), &cv) == TC_FOUND) sched_yield();
    invalid_at = Clock::now();
  });
  t0 = Clock::now();
  go.store(true);
  Exec(writer_, ToggleRole("'" + key + "'"));
  raw_thread.join();
  checker.join();
  return Sample{Us(invalid_at - t0), Us(raw_at - t0)};
}

}  // namespace tenantcache::bench
