// tenantcachectl: the operator's command line. Reads the cache file
// read-only (status, get) and talks to tenantcached over the control socket
// published in that file (lookup, invalidate, flush, stats). Applies the SQL
// through libpq (install-sql, uninstall-sql, watch).
//
// Exit codes, for scripts:
//   0  success (get/lookup: found)
//   1  get/lookup: the key is not found (negative entry) or not cached (miss)
//   2  usage error
//   3  the cache is unavailable or the daemon is not running
//   4  any other error (invalid key, timeout, database error, ...)
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "keys.h"
#include "protocol.h"
#include "reader.h"
#include "stats_format.h"
#include "tenantcache/tenantcache.h"

namespace {

constexpr int kOk = 0, kNotFound = 1, kUsage = 2, kUnavailable = 3, kError = 4;

struct Options {
  std::string cache = TC_DEFAULT_CACHE_PATH;
  std::string conninfo;
  std::string sql_dir;
  std::string format = "text";
  int timeout_ms = 2000;
  bool help = false;
  std::vector<std::string> args;  // command and its operands
  std::map<std::string, std::string> flags;
};

const char* kUsageText =
    "usage: tenantcachectl [--cache PATH] [--timeout MS] COMMAND [ARGS] [--] [OPERANDS]\n"
    "\n"
    "commands:\n"
    "  status                      daemon pid, sync state, epoch, heartbeat age, entries, hit rate\n"
    "  get NS KEY                  read shared memory only (never asks the daemon)\n"
    "  lookup NS KEY               read, and on a miss ask the daemon to fill\n"
    "  invalidate NS KEY           drop one entry\n"
    "  invalidate-tenant ID        drop every entry of a tenant\n"
    "  flush                       drop everything (bump the epoch)\n"
    "  stats [--format text|json|prometheus]\n"
    "  install-sql [--conninfo C] [--sql-dir DIR] [--daemon-role R]\n"
    "                              apply sql/install.sql (and grant role R what the daemon needs)\n"
    "  uninstall-sql [--conninfo C] [--sql-dir DIR]   apply sql/uninstall.sql\n"
    "  watch TABLE --keys JSON [--tenant-column COL] [--columns a,b] [--conninfo C]\n"
    "\n"
    "options:\n"
    "  --cache PATH    the cache file (default " TC_DEFAULT_CACHE_PATH
    ")\n"
    "  --timeout MS    how long to wait for the daemon (default 2000)\n"
    "  --conninfo C    libpq conninfo for the SQL commands (default: PG* environment)\n"
    "  -h, --help      this help, or a command's with COMMAND --help\n"
    "  --              ends the options: what follows are operands even if they\n"
    "                  begin with '-' (a slug such as -acme: get tenant_by_slug -- -acme)\n"
    "\n"
    "exit codes: 0 ok/found, 1 not found or not cached, 2 usage, 3 unavailable, 4 error\n";

const std::map<std::string, std::string> kCommandHelp = {
    {"status", "usage: tenantcachectl status\n  Prints what the daemon publishes in the cache file.\n"},
    {"get",
     "usage: tenantcachectl get NS KEY [--wait-change MS]\n  Reads shared memory only. Exit 0 found, 1 not "
     "found/miss, 3 unavailable.\n  --wait-change MS: keep reading until the answer changes and print "
     "when.\n"},
    {"lookup",
     "usage: tenantcachectl lookup NS KEY\n  Reads, and on a miss asks the daemon (which queries "
     "PostgreSQL).\n"},
    {"invalidate", "usage: tenantcachectl invalidate NS KEY\n  Drops one entry now.\n"},
    {"invalidate-tenant",
     "usage: tenantcachectl invalidate-tenant TENANT_ID\n  Drops every entry of the tenant. TENANT_ID is the "
     "tenant column's text as PostgreSQL\n  prints it; a uuid may be given braced, upper-case or without "
     "dashes.\n"},
    {"flush", "usage: tenantcachectl flush\n  Drops every entry (bumps the epoch).\n"},
    {"stats", "usage: tenantcachectl stats [--format text|json|prometheus]\n  The daemon's counters.\n"},
    {"install-sql",
     "usage: tenantcachectl install-sql [--conninfo C] [--sql-dir DIR] [--daemon-role R]\n  Applies "
     "install.sql (idempotent; also upgrades); with --daemon-role, then grants the daemon's database role R "
     "what it needs in schema tenantcache (tenantcache.grant_daemon).\n"},
    {"uninstall-sql",
     "usage: tenantcachectl uninstall-sql [--conninfo C] [--sql-dir DIR]\n  Removes the triggers "
     "and schema tenantcache.\n"},
    {"watch",
     "usage: tenantcachectl watch TABLE --keys '{\"ns\": \"column\"}' [--tenant-column COL] "
     "[--columns a,b] [--conninfo C]\n  Attaches the triggers to TABLE (you must own it).\n"},
};

// A usage error: one line naming it and where the help is, on stderr. The
// whole help page would bury the one line that says what is wrong.
int Usage(const std::string& why) {
  std::fprintf(stderr, "tenantcachectl: %s\nsee tenantcachectl --help\n", why.c_str());
  return kUsage;
}

// A whole positive decimal number of milliseconds (atoi would take "10s" as
// 10 and "abc" as 0).
bool ParseMs(const std::string& text, int* out) {
  if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos)
    return false;
  *out = std::atoi(text.c_str());
  return *out > 0;
}

int StatusCode(int rc) {
  switch (rc) {
    case TC_FOUND:
      return kOk;
    case TC_NOT_FOUND:
    case TC_MISS:
      return kNotFound;
    case TC_E_UNAVAILABLE:
    case TC_E_IO:
    case TC_E_LAYOUT:
      return kUnavailable;
    default:
      return kError;
  }
}

tc_cache* Open(const Options& o, int* exit_code) {
  tc_cache* c = nullptr;
  const int rc = tc_cache_open(o.cache.c_str(), &c);
  if (rc != 0) {
    const bool unsafe = rc == TC_E_IO && errno == EPERM;
    std::fprintf(stderr, "tenantcachectl: %s: %s%s%s%s\n", o.cache.c_str(), tc_strerror(rc),
                 rc == TC_E_IO ? ": " : "", rc == TC_E_IO ? std::strerror(errno) : "",
                 unsafe ? " (the file is writable by group or others, or its directory by anyone but its "
                          "owner: another user could have planted it; tenantcached never creates it so)"
                        : "");
    *exit_code = kUnavailable;
  }
  return c;
}

bool Namespace(tc_cache* c, const std::string& name, tc_ns* ns) {
  if (tc_namespace(c, name.c_str(), ns) == 0) return true;
  std::fprintf(stderr, "tenantcachectl: no namespace \"%s\"; this cache has:", name.c_str());
  for (uint32_t i = 0; i < tc_namespace_count(c); ++i) std::fprintf(stderr, " %s", tc_namespace_name(c, i));
  std::fprintf(stderr, "\n");
  return false;
}

void PrintValue(const tc_value& v) {
  size_t len = 0;
  const char* tenant = tc_value_tenant(&v, &len);
  std::printf("tenant\t%.*s\n", static_cast<int>(len), tenant);
  for (size_t i = 0; i < tc_value_field_count(&v); ++i) {
    const char *name = nullptr, *text = nullptr;
    tc_value_field(&v, i, &name, &text, &len);
    if (text == nullptr)
      std::printf("%s\t(null)\n", name);
    else
      std::printf("%s\t%.*s\n", name, static_cast<int>(len), text);
  }
}

int Read(const Options& o, bool ask_daemon) {
  if (o.args.size() != 3) return Usage(std::string(ask_daemon ? "lookup" : "get") + " takes NS KEY");
  int code = kOk;
  tc_cache* c = Open(o, &code);
  if (c == nullptr) return code;
  tc_ns ns;
  if (!Namespace(c, o.args[1], &ns)) {
    tc_cache_close(c);
    return kError;
  }
  const std::string& key = o.args[2];
  tc_value v;
  const auto start = std::chrono::steady_clock::now();
  int rc = ask_daemon ? tc_cache_lookup(c, ns, key.data(), key.size(), o.timeout_ms, &v)
                      : tc_cache_get(c, ns, key.data(), key.size(), &v);
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  if (!ask_daemon && o.flags.count("wait-change") != 0) {
    // Watches the entry until its status changes (an invalidation, say) and
    // prints the wall-clock time it saw the change, to compare with a commit.
    const int first = rc;
    int wait_ms = 0;
    if (!ParseMs(o.flags.at("wait-change"), &wait_ms)) {
      tc_cache_close(c);
      return Usage("--wait-change takes a positive number of milliseconds, not \"" +
                   o.flags.at("wait-change") + "\"");
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    std::printf("watching (%s)\n", tc_strerror(first));
    std::fflush(stdout);
    while (rc == first && std::chrono::steady_clock::now() < deadline)
      rc = tc_cache_get(c, ns, key.data(), key.size(), &v);
    if (rc == first) {
      std::printf("unchanged\n");
      tc_cache_close(c);
      return kError;
    }
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    std::printf("changed to \"%s\" at %.6f\n", tc_strerror(rc), std::chrono::duration<double>(now).count());
    tc_cache_close(c);
    return kOk;
  }
  // The first read of a process pays for mapping pages and cold caches; a
  // shared-memory read is also timed warm (median of 1001) to show what a
  // worker that reads all day sees. The timing reads are not counted in the
  // handle's statistics, which the daemon sums as the host's hit rate: no
  // worker made them.
  std::string warm;
  if (!ask_daemon || rc == TC_FOUND) {
    std::vector<double> ns_samples;
    tc_value w;
    for (int i = 0; i < 1001; ++i) {
      const auto t = std::chrono::steady_clock::now();
      (void)tenantcache::GetWithoutStats(c, ns, key.data(), key.size(), &w);
      ns_samples.push_back(
          std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t).count());
    }
    std::nth_element(ns_samples.begin(), ns_samples.begin() + 500, ns_samples.end());
    char b[64];
    std::snprintf(b, sizeof b, "; warm shared-memory read %.0f ns", ns_samples[500]);
    warm = b;
  }
  if (rc == TC_FOUND) {
    PrintValue(v);
    std::fprintf(stderr, "found in %.1f us%s\n", us, warm.c_str());
  } else {
    // The daemon's own words (a database error, a misconfigured namespace)
    // follow the status when it gave any.
    const std::string detail = ask_daemon ? tc_last_error_detail() : "";
    std::printf("%s%s%s\n", tc_strerror(rc), detail.empty() ? "" : ": ", detail.c_str());
    std::fprintf(stderr, "answered in %.1f us%s\n", us, warm.c_str());
  }
  tc_cache_close(c);
  return StatusCode(rc);
}

int Status(const Options& o) {
  int code = kOk;
  tc_cache* c = Open(o, &code);
  if (c == nullptr) return code;
  tc_info i;
  tc_cache_info(c, &i);
  std::printf("cache file      %s (layout %u, %s)\n", o.cache.c_str(), i.layout_version,
              tenantcache::FormatBytes(i.file_bytes).c_str());
  std::printf("daemon pid      %d\n", i.daemon_pid);
  std::printf("available       %s\n", i.available ? "yes" : "NO (readers fail closed)");
  std::printf("synced          %s\n", i.synced ? "yes" : "no");
  if (i.retired) std::printf("retired         yes (a newer file replaced this one)\n");
  std::printf("epoch           %llu\n", static_cast<unsigned long long>(i.epoch));
  std::printf("heartbeat age   %.1f ms (bound %.0f ms)\n", static_cast<double>(i.heartbeat_age_ns) / 1e6,
              static_cast<double>(i.stale_after_ns) / 1e6);
  std::printf("entries         %llu of %llu slots (capacity %llu)\n",
              static_cast<unsigned long long>(i.entries), static_cast<unsigned long long>(i.slots),
              static_cast<unsigned long long>(i.capacity));
  std::printf("namespaces     ");
  for (uint32_t n = 0; n < tc_namespace_count(c); ++n) std::printf(" %s", tc_namespace_name(c, n));
  std::printf("\ncontrol socket  %s\n", i.control_socket);
  char buf[16384];
  const int n = tc_cache_daemon_stats(c, buf, sizeof buf, o.timeout_ms);
  if (n >= 0) {
    const auto stats = tenantcache::ParseFlatJson(buf);
    auto get = [&](const char* k) { return stats.count(k) != 0 ? stats.at(k) : std::string("?"); };
    // Huge pages as the daemon's mapping got them (its log says how to get
    // them when it did not).
    const std::string huge = get("huge_page_bytes");
    if (huge == "0")
      std::printf(
          "huge pages      no: 4 KiB pages (a random hit also pays TLB misses; see the daemon log)\n");
    else if (huge != "?")
      std::printf("huge pages      yes: %s of %s in 2 MiB pages\n",
                  tenantcache::FormatBytes(std::strtoull(huge.c_str(), nullptr, 10)).c_str(),
                  tenantcache::FormatBytes(std::strtoull(get("file_bytes").c_str(), nullptr, 10)).c_str());
    std::printf("hit rate        %s (hits %s, negative hits %s, misses %s)\n", get("hit_rate").c_str(),
                get("hits").c_str(), get("negative_hits").c_str(), get("misses").c_str());
    std::printf("fills           %s (coalesced %s, pending %s, errors %s, busy %s)\n", get("fills").c_str(),
                get("coalesced").c_str(), get("pending_fills").c_str(), get("fill_errors").c_str(),
                get("busy").c_str());
    if (const std::string broken = get("broken_namespaces"); broken != "0" && broken != "?")
      std::printf(
          "broken queries  %s namespace(s): their lookups fail; the daemon log names the query's "
          "FILE:LINE and tenantcachectl lookup prints why\n",
          broken.c_str());
    if (const std::string pooled = get("listeners_behind_pooler"); pooled != "0" && pooled != "?")
      std::printf(
          "listener        REFUSED for %s source(s): listener_conninfo reaches PostgreSQL through a pooler "
          "(PgBouncer); LISTEN needs a direct connection: set listener_conninfo to reach PostgreSQL itself "
          "(the daemon log names the source)\n",
          pooled.c_str());
    // What the daemon's check of the watched tables found (it names them in its log).
    const std::string untruncated = get("partitions_without_truncate_trigger");
    const std::string unseen = get("unseen_before_update_triggers");
    if ((untruncated != "0" && untruncated != "?") || (unseen != "0" && unseen != "?"))
      std::printf(
          "watched tables  %s partition(s) lack the TRUNCATE trigger (a TRUNCATE of one sends nothing), %s "
          "BEFORE UPDATE trigger(s) came after watch_table (a change one makes to a watched column is not "
          "sent): run tenantcache.watch_table() again for their tables; the daemon log and "
          "tenantcache.watched_tables name them\n",
          untruncated.c_str(), unseen.c_str());
    // Loaders on a hot standby: how far behind it is, and what that cost.
    if (const std::string standby = get("standby_loaders"); standby != "0" && standby != "?")
      std::printf(
          "standby         %s loader(s) on a hot standby, lag %s bytes, %s s (fills waited %s, timed out "
          "%s)\n",
          standby.c_str(), get("replica_lag_bytes").c_str(), get("replica_lag_seconds").c_str(),
          get("replica_waits").c_str(), get("replica_timeouts").c_str());
    // Shared heartbeats keep a fleet's NOTIFY load flat; a daemon that sends
    // its own says why in its log (schema, grant, or too short a bound).
    const std::string shared = get("shared_heartbeat_sources");
    const bool sharing = shared != "0" && shared != "?" && shared == get("sources");
    std::printf("heartbeats      %s (sent %s, received %s, rejected %s)\n",
                sharing ? (get("heartbeat_leader_slots") != "0" ? "shared, this daemon is a leader"
                                                                : "shared, this daemon follows")
                        : "this daemon's own, one NOTIFY per interval: the daemon log says why not shared",
                get("heartbeats_sent").c_str(), get("heartbeats_received").c_str(),
                get("heartbeats_rejected").c_str());
    // Relaying through Redis: a relay publishes, a subscriber reads.
    if (const std::string r = get("relay_sources"); r != "0" && r != "?")
      std::printf("redis relay     %s (published %s notification(s) in %s message(s), %s session(s))\n",
                  get("redis_connected") != "0" ? "connected" : "NOT connected: see the daemon log",
                  get("relayed_notifications").c_str(), get("relayed_published").c_str(),
                  get("relay_sessions").c_str());
    if (const std::string sub = get("subscriber_sources"); sub != "0" && sub != "?")
      std::printf(
          "redis           subscriber, %s, %s joined relay session(s) (received %s, gaps %s, rejected %s)\n",
          get("redis_connected") != "0" ? "subscribed" : "NOT subscribed: see the daemon log",
          get("joined_relay_sessions").c_str(), get("relayed_received").c_str(), get("relay_gaps").c_str(),
          get("relayed_rejected").c_str());
    std::printf("notify queue    %s (reconnects %s, unsynced %s s)\n",
                get("notification_queue_usage").c_str(), get("reconnects").c_str(),
                get("unsynced_seconds").c_str());
    // The daemon prunes the invalidation log itself (log_retention); a
    // daemon that never managed to says why in its log.
    const std::string age = get("log_prune_age_seconds");
    const std::string when = age == "-1" || age == "?"
                                 ? "none yet: see the daemon log if log_retention is set"
                                 : "last " + age + " s ago";
    std::printf("log pruning     %s row(s) pruned in %s call(s), %s (errors %s)\n",
                get("log_pruned_rows").c_str(), get("log_prune_runs").c_str(), when.c_str(),
                get("log_prune_errors").c_str());
    // Messages for a namespace the daemon lacks invalidate nothing: the
    // cache keeps what they meant to remove until its TTL.
    const std::string unknown = get("unknown_namespace_messages");
    std::printf("notifications   %s (malformed %s, unknown namespace %s%s)\n", get("notifications").c_str(),
                get("malformed_notifications").c_str(), unknown.c_str(),
                unknown != "0" && unknown != "?"
                    ? ": triggers name a namespace this daemon does not serve; see its log and "
                      "SELECT * FROM tenantcache.watched_tables"
                    : "");
  } else {
    std::printf("daemon          not answering: %s\n", tc_strerror(n));
  }
  tc_cache_close(c);
  return i.available && n >= 0 ? kOk : kUnavailable;
}

int Stats(const Options& o) {
  if (o.format != "text" && o.format != "json" && o.format != "prometheus")
    return Usage("--format is text, json or prometheus");
  int code = kOk;
  tc_cache* c = Open(o, &code);
  if (c == nullptr) return code;
  char buf[16384];
  const int n = tc_cache_daemon_stats(c, buf, sizeof buf, o.timeout_ms);
  tc_cache_close(c);
  if (n < 0) {
    std::fprintf(stderr, "tenantcachectl: stats: %s\n", tc_strerror(n));
    return StatusCode(n);
  }
  if (o.format == "json") {
    std::printf("%s\n", buf);
    return kOk;
  }
  if (o.format == "prometheus") {
    std::printf("%s", tenantcache::PrometheusText(buf).c_str());
    return kOk;
  }
  for (const auto& [k, v] : tenantcache::ParseFlatJson(buf)) std::printf("%-26s %s\n", k.c_str(), v.c_str());
  return kOk;
}

int Command(const Options& o) {
  const std::string& cmd = o.args[0];
  int code = kOk;
  if (cmd == "flush" && o.args.size() != 1) return Usage("flush takes no arguments");
  if (cmd == "invalidate-tenant" && o.args.size() != 2) return Usage("invalidate-tenant takes TENANT_ID");
  if (cmd == "invalidate" && o.args.size() != 3) return Usage("invalidate takes NS KEY");
  // Checked here, not only by the library, so that the operator reads why and
  // sees the id that was sent (a braced or upper-case uuid is folded).
  char tenant[tenantcache::kMaxTenantLen];
  tenantcache::KeyResult t;
  if (cmd == "invalidate-tenant") {
    t = tenantcache::NormalizeTenant(o.args[1].data(), o.args[1].size(), tenant);
    if (!t.ok()) {
      std::fprintf(stderr, "tenantcachectl: invalidate-tenant: %s\n", t.error);
      return kError;
    }
  }
  tc_cache* c = Open(o, &code);
  if (c == nullptr) return code;
  int rc;
  std::string done;
  if (cmd == "flush") {
    rc = tc_cache_flush(c, o.timeout_ms);
    done = "flushed: every entry is invalid (new epoch)";
  } else if (cmd == "invalidate-tenant") {
    rc = tc_cache_invalidate_tenant(c, tenant, t.len, o.timeout_ms);
    done = "invalidated tenant " + std::string(tenant, t.len);
  } else {
    tc_ns ns;
    if (!Namespace(c, o.args[1], &ns)) {
      tc_cache_close(c);
      return kError;
    }
    char key[TC_MAX_KEY_LEN + 1];
    size_t len = 0;
    const char* why = nullptr;
    rc = tc_cache_normalize_key(c, ns, o.args[2].data(), o.args[2].size(), key, &len, &why);
    if (rc == TC_E_INVALID_KEY) {
      std::fprintf(stderr, "tenantcachectl: invalidate: %s\n", why);
      tc_cache_close(c);
      return kError;
    }
    if (rc == 0) rc = tc_cache_invalidate(c, ns, key, len, o.timeout_ms);
    done = "invalidated " + o.args[1] + " " + std::string(key, len);
  }
  const std::string detail = tc_last_error_detail();
  tc_cache_close(c);
  if (rc != 0) {
    std::fprintf(stderr, "tenantcachectl: %s: %s%s%s\n", cmd.c_str(), tc_strerror(rc),
                 detail.empty() ? "" : ": ", detail.c_str());
    return StatusCode(rc);
  }
  std::printf("%s\n", done.c_str());
  return kOk;
}

std::string SqlDir(const Options& o) {
  if (!o.sql_dir.empty()) return o.sql_dir;
  for (const char* dir : {TC_INSTALLED_SQL_DIR, TC_SOURCE_SQL_DIR})
    if (access((std::string(dir) + "/install.sql").c_str(), R_OK) == 0) return dir;
  return TC_INSTALLED_SQL_DIR;
}

int RunSql(const Options& o, const std::string& sql, const std::string& what) {
  PGconn* conn = PQconnectdb(o.conninfo.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::fprintf(stderr, "tenantcachectl: %s: cannot connect: %s", what.c_str(), PQerrorMessage(conn));
    PQfinish(conn);
    return kError;
  }
  // The scripts' own notices are for the operator (install.sql names the
  // roles an upgrade allowed to watch tables, uninstall.sql the triggers of
  // other roles it leaves to DROP SCHEMA); PostgreSQL's "already exists,
  // skipping" ones on every re-run are noise.
  PQsetNoticeReceiver(
      conn,
      [](void*, const PGresult* n) {
        const char* msg = PQresultErrorField(n, PG_DIAG_MESSAGE_PRIMARY);
        const char* severity = PQresultErrorField(n, PG_DIAG_SEVERITY);
        if (msg != nullptr && std::strncmp(msg, "tenantcache:", 12) == 0)
          std::fprintf(stderr, "%s: %s\n", severity != nullptr ? severity : "NOTICE", msg);
      },
      nullptr);
  PGresult* r = PQexec(conn, sql.c_str());
  const auto st = PQresultStatus(r);
  const bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  if (!ok) std::fprintf(stderr, "tenantcachectl: %s failed: %s", what.c_str(), PQresultErrorMessage(r));
  PQclear(r);
  PQfinish(conn);
  if (ok) std::printf("%s: done\n", what.c_str());
  return ok ? kOk : kError;
}

// With `grant_daemon`, the script is followed by tenantcache.grant_daemon()
// for the --daemon-role role, in the same run (its NOTICE says what it
// granted).
int ApplyFile(const Options& o, const char* file, bool grant_daemon = false) {
  if (o.args.size() != 1) return Usage(std::string(file) + " takes no arguments");
  const std::string path = SqlDir(o) + "/" + file;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "tenantcachectl: cannot read %s (use --sql-dir)\n", path.c_str());
    return kError;
  }
  std::string sql(std::istreambuf_iterator<char>(in), {});
  if (grant_daemon) {
    // A string literal (standard_conforming_strings): quotes doubled.
    std::string role;
    for (const char c : o.flags.at("daemon-role")) role += c == '\'' ? std::string("''") : std::string(1, c);
    sql += "\n;SELECT tenantcache.grant_daemon('" + role + "');\n";
  }
  return RunSql(o, sql, path);
}

std::string Literal(PGconn* conn, const std::string& s) {
  char* q = PQescapeLiteral(conn, s.data(), s.size());
  std::string out = q != nullptr ? q : "NULL";
  PQfreemem(q);
  return out;
}

int Watch(const Options& o) {
  if (o.args.size() != 2 || o.flags.count("keys") == 0) return Usage("watch takes TABLE --keys JSON");
  PGconn* conn = PQconnectdb(o.conninfo.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::fprintf(stderr, "tenantcachectl: watch: cannot connect: %s", PQerrorMessage(conn));
    PQfinish(conn);
    return kError;
  }
  std::string columns = "NULL";
  if (o.flags.count("columns") != 0) {
    columns = "string_to_array(" + Literal(conn, o.flags.at("columns")) + ", ',')";
  }
  const std::string tenant =
      o.flags.count("tenant-column") != 0 ? Literal(conn, o.flags.at("tenant-column")) : "NULL";
  const std::string sql = "SELECT tenantcache.watch_table(" + Literal(conn, o.args[1]) + ", " + tenant +
                          ", " + Literal(conn, o.flags.at("keys")) + "::jsonb, " + columns + ")";
  PQfinish(conn);
  return RunSql(o, sql, "watch " + o.args[1]);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bool options_ended = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (options_ended) {
      o.args.push_back(a);
      continue;
    }
    if (a == "--") {
      options_ended = true;
      continue;
    }
    if (a == "-h" || a == "--help") {
      o.help = true;
      continue;
    }
    static const char* const kValued[] = {"--cache",       "--timeout",    "--conninfo",      "--sql-dir",
                                          "--format",      "--keys",       "--tenant-column", "--columns",
                                          "--wait-change", "--daemon-role"};
    if (std::find(std::begin(kValued), std::end(kValued), a) != std::end(kValued)) {
      if (i + 1 >= argc) return Usage(a + " needs a value");
      const std::string v = argv[++i];
      if (a == "--cache") {
        o.cache = v;
      } else if (a == "--timeout") {
        if (!ParseMs(v, &o.timeout_ms))
          return Usage("--timeout takes a positive number of milliseconds, not \"" + v + "\"");
      } else if (a == "--conninfo") {
        o.conninfo = v;
      } else if (a == "--sql-dir") {
        o.sql_dir = v;
      } else if (a == "--format") {
        o.format = v;
      } else {
        o.flags[a.substr(2)] = v;
      }
    } else if (a.size() > 1 && a[0] == '-') {
      return Usage("unknown option " + a + " (an operand that begins with '-' goes after --)");
    } else {
      o.args.push_back(a);
    }
  }
  if (o.args.empty()) {
    if (o.help) {
      std::printf("%s", kUsageText);
      return kOk;
    }
    return Usage("no command");
  }
  const std::string& cmd = o.args[0];
  if (o.help) {
    const auto it = kCommandHelp.find(cmd);
    if (it == kCommandHelp.end()) return Usage("unknown command " + cmd);
    std::printf("%s", it->second.c_str());
    return kOk;
  }
  if (cmd == "status") return o.args.size() == 1 ? Status(o) : Usage("status takes no arguments");
  if (cmd == "get") return Read(o, false);
  if (cmd == "lookup") return Read(o, true);
  if (cmd == "invalidate" || cmd == "invalidate-tenant" || cmd == "flush") return Command(o);
  if (cmd == "stats") return o.args.size() == 1 ? Stats(o) : Usage("stats takes no arguments");
  if (cmd == "install-sql") return ApplyFile(o, "install.sql", o.flags.count("daemon-role") != 0);
  if (cmd == "uninstall-sql") return ApplyFile(o, "uninstall.sql");
  if (cmd == "watch") return Watch(o);
  return Usage("unknown command " + cmd);
}
