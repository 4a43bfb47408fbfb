#include "config.h"

#include <grp.h>
#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <toml.hpp>

#include "cache_layout.h"
#include "keys.h"
#include "redis_link.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache {

// clang-format off
const std::vector<ConfigKey> kConfigKeys = {
  {"daemon", "log_level", KeyType::kString, "\"info\"", true,
   "trace, debug, info, warn, error or critical"},
  {"daemon", "prometheus_file", KeyType::kString, "\"\"", true,
   "write the statistics in Prometheus text format to this file for node_exporter's "
   "textfile collector (\"\": off)"},
  {"daemon", "prometheus_interval", KeyType::kDuration, "\"15s\"", true,
   "how often prometheus_file is rewritten"},

  {"cache", "path", KeyType::kString, "\"" TC_DEFAULT_CACHE_PATH "\"", false,
   "the cache file workers map, in a directory owned by the daemon's user that no one else can write"},
  {"cache", "capacity", KeyType::kInteger, "100000", false,
   "entries the cache is sized for (it has 25% more slots)"},
  {"cache", "slot_bytes", KeyType::kInteger, "320", false,
   "bytes per entry slot, a multiple of 64 from 256 to 4096; 64 of them are metadata"},
  {"cache", "mode", KeyType::kMode, "\"0640\"", false,
   "mode of the cache file; group read also lets the group record hits in the recency segment"},
  {"cache", "group", KeyType::kString, "\"\"", false,
   "group owning the cache file and recency segment, normally the workers' group (\"\": the daemon's)"},
  {"cache", "ttl", KeyType::kDuration, "\"1h\"", true,
   "lifetime of an entry: a safety net, correctness never depends on it"},
  {"cache", "negative_ttl", KeyType::kDuration, "\"1m\"", true,
   "lifetime of a \"no such row\" entry"},
  {"cache", "idle_timeout", KeyType::kDuration, "\"0s\"", true,
   "drop entries nobody read for this long (0s: never)"},
  {"cache", "stale_after", KeyType::kDuration, "\"5s\"", true,
   "the fail-closed bound: readers refuse the cache when the daemon's heartbeat is older, "
   "and the daemon declares its listener dead when no heartbeat has come back for this long"},
  {"cache", "heartbeat_interval", KeyType::kDuration, "\"1s\"", true,
   "how often the daemon probes each source and, when it leads or hears no heartbeat, sends a NOTIFY "
   "heartbeat (heartbeats are shared with the other daemons on the database when stale_after is at "
   "least 4 x this)"},

  {"control", "socket", KeyType::kString, "\"/run/tenantcache/tenantcached.sock\"", false,
   "unix socket clients send misses and commands to"},
  {"control", "mode", KeyType::kMode, "\"0660\"", false,
   "mode of the control socket"},
  {"control", "allowed_groups", KeyType::kStringList, "[]", true,
   "groups whose members may use the socket (checked on the peer's credentials); "
   "[]: whoever the socket's mode lets connect. root and the daemon's user always may"},
  {"control", "max_clients", KeyType::kInteger, "1024", true,
   "connections served at once; more are refused"},

  {"source", "name", KeyType::kString, nullptr, false,
   "name namespaces refer to this database by"},
  {"source", "conninfo", KeyType::kString, "\"\"", false,
   "libpq conninfo for the loaders (and the listener unless listener_conninfo is set); it may be a "
   "transaction-pooling PgBouncer or a hot standby; PG* variables, the service file and .pgpass apply "
   "as usual"},
  {"source", "listener_conninfo", KeyType::kString, "\"\"", false,
   "conninfo of the LISTEN, heartbeat and log-pruning connections when they must differ: the primary, "
   "directly (a connection through a pooler or to a standby is refused); \"\": conninfo"},
  {"source", "channel", KeyType::kString, "\"tenantcache\"", false,
   "NOTIFY channel, as in tenantcache.settings.channel"},
  {"source", "loaders", KeyType::kInteger, "2", false,
   "connections that run fill queries"},
  {"source", "queue_bound", KeyType::kInteger, "10000", true,
   "fills waiting or running at once; beyond it lookups are answered busy"},
  {"source", "query_timeout", KeyType::kDuration, "\"2s\"", true,
   "a fill query running longer is cancelled and its waiters told timeout"},
  {"source", "reconnect_min", KeyType::kDuration, "\"100ms\"", true,
   "first reconnect delay; it doubles (with jitter) up to reconnect_max"},
  {"source", "reconnect_max", KeyType::kDuration, "\"10s\"", true,
   "longest reconnect delay"},
  {"source", "log_retention", KeyType::kDuration, "\"6h\"", true,
   "invalidation log rows are pruned once older than this (the longest of the database's daemons "
   "wins; schema version 4): a shorter disconnect is replayed, a longer one flushes; at most 1d, "
   "at least 2 x (cache.stale_after + reconnect_max); \"0s\": never (prune by cron with "
   "tenantcache.prune_log)"},
  {"source", "redis", KeyType::kString, "\"\"", false,
   "the Redis server that relays this source's notifications to the hosts of a large fleet: IP:PORT or "
   "unix:PATH (an address, not a host name); \"\": none"},
  {"source", "redis_role", KeyType::kString, "\"\"", false,
   "\"relay\": LISTEN on PostgreSQL and publish every notification to redis_channel; \"subscribe\": read "
   "redis_channel instead of LISTENing (loaders, probes and the log replay still use PostgreSQL); \"\": "
   "neither (needs schema version 6)"},
  {"source", "redis_channel", KeyType::kString, "\"tenantcache\"", false,
   "the Redis pub/sub channel the relays publish on and the subscribers read"},
  {"source", "redis_password_file", KeyType::kString, "\"\"", false,
   "a file whose first line is the Redis password, sent with AUTH on every connection (not readable by "
   "others: the daemon warns otherwise); read at start, so a new password needs a restart; \"\": no AUTH"},
  {"source", "redis_user", KeyType::kString, "\"\"", false,
   "the Redis ACL user that AUTH names (needs redis_password_file); \"\": Redis's default user"},

  {"namespace", "name", KeyType::kString, nullptr, false,
   "name clients look up, 1-63 of [a-z0-9_]; triggers send it in key messages"},
  {"namespace", "kind", KeyType::kKeyKind, nullptr, false,
   "key kind: uuid, slug, host or text"},
  {"namespace", "source", KeyType::kString, "\"\"", false,
   "the source whose database the query runs on (\"\": the first source)"},
  {"namespace", "query", KeyType::kString, nullptr, false,
   "SQL returning at most one row for the key $1 (its only parameter); the daemon reads the tenant column and "
   "the columns named in fields from it and ignores any other column"},
  {"namespace", "tenant_column", KeyType::kString, nullptr, false,
   "the column holding the entry's tenant id"},
  {"namespace", "fields", KeyType::kStringList, nullptr, false,
   "the value columns the query returns besides the tenant column, in the order clients "
   "see them (each returned as text; NULL stays NULL)"},
  {"namespace", "max_key_len", KeyType::kInteger, "255", false,
   "longest key, for kind text (1-255)"},
};
// clang-format on

namespace {

using Table = toml::value;

[[noreturn]] void Fail(const toml::value& v, const std::string& key, const std::string& msg) {
  const auto loc = v.location();
  throw ConfigError(loc.file_name() + ":" + std::to_string(loc.line()) + ": " + key + ": " + msg);
}

[[noreturn]] void FailFile(const std::string& file, const std::string& key, const std::string& msg) {
  throw ConfigError(file + ": " + key + ": " + msg);
}

// Reads one table's keys against kConfigKeys, with defaults.
class TableReader {
 public:
  TableReader(const toml::value* table, std::string file, std::string table_name, std::string label)
      : table_(table), file_(std::move(file)), table_name_(std::move(table_name)), label_(std::move(label)) {
    if (table_ == nullptr) return;
    if (!table_->is_table()) Fail(*table_, label_, "must be a table");
    for (const auto& entry : table_->as_table()) {
      const std::string& key = entry.first;
      const bool known = std::any_of(kConfigKeys.begin(), kConfigKeys.end(), [&](const ConfigKey& c) {
        return table_name_ == c.table && key == c.name;
      });
      if (!known) Fail(entry.second, label_ + "." + key, "unknown key");
    }
  }

  const toml::value* Find(const char* name) const {
    if (table_ == nullptr) return nullptr;
    const auto& t = table_->as_table();
    const auto it = t.find(name);
    return it == t.end() ? nullptr : &it->second;
  }

  // The key's value, or its default parsed as TOML.
  toml::value Get(const char* name) const {
    const ConfigKey& k = Key(name);
    if (const toml::value* v = Find(name)) return *v;
    if (k.default_value == nullptr) {
      if (table_ != nullptr) Fail(*table_, label_ + "." + name, "is required");
      FailFile(file_, label_ + "." + name, "is required");
    }
    std::istringstream in("x = " + std::string(k.default_value));
    const auto parsed = toml::parse(in, "(default of " + label_ + "." + name + ")");
    return toml::find(parsed, "x");
  }

  std::string Label(const char* name) const { return label_ + "." + name; }

  std::string String(const char* name) const {
    const toml::value v = Get(name);
    if (!v.is_string()) Fail(v, Label(name), "must be a string");
    return v.as_string();
  }

  int64_t Integer(const char* name, int64_t min, int64_t max) const {
    const toml::value v = Get(name);
    if (!v.is_integer()) Fail(v, Label(name), "must be an integer");
    const int64_t n = v.as_integer();
    if (n < min || n > max)
      Fail(v, Label(name), "must be between " + std::to_string(min) + " and " + std::to_string(max));
    return n;
  }

  Millis Duration(const char* name) const {
    const toml::value v = Get(name);
    if (!v.is_string()) Fail(v, Label(name), "must be a duration string such as \"500ms\", \"5s\", \"10m\"");
    const auto d = ParseDuration(v.as_string().str);
    if (!d) Fail(v, Label(name), "\"" + v.as_string().str + "\" is not a duration (use ms, s, m, h or d)");
    return *d;
  }

  mode_t Mode(const char* name) const {
    const toml::value v = Get(name);
    if (!v.is_string()) Fail(v, Label(name), "must be an octal string such as \"0640\"");
    const std::string& s = v.as_string().str;
    if (s.empty() || s.size() > 4 || s.find_first_not_of("01234567") != std::string::npos)
      Fail(v, Label(name), "\"" + s + "\" is not an octal mode");
    return static_cast<mode_t>(std::stoul(s, nullptr, 8));
  }

  std::vector<std::string> StringList(const char* name) const {
    const toml::value v = Get(name);
    if (!v.is_array()) Fail(v, Label(name), "must be an array of strings");
    std::vector<std::string> out;
    for (const auto& e : v.as_array()) {
      if (!e.is_string()) Fail(e, Label(name), "must be an array of strings");
      out.push_back(e.as_string());
    }
    return out;
  }

  uint32_t Kind(const char* name) const {
    const toml::value v = Get(name);
    if (!v.is_string()) Fail(v, Label(name), "must be a string");
    const uint32_t kind = ParseKeyKind(v.as_string().str);
    if (kind == 0)
      Fail(v, Label(name), "\"" + v.as_string().str + "\" is not a key kind (uuid, slug, host, text)");
    return kind;
  }

  const toml::value* table() const { return table_; }

 private:
  const ConfigKey& Key(const char* name) const {
    for (const auto& k : kConfigKeys)
      if (table_name_ == k.table && std::string_view(name) == k.name) return k;
    throw std::logic_error("config key not declared: " + table_name_ + "." + name);
  }

  const toml::value* table_;
  std::string file_, table_name_, label_;
};

bool ValidName(const std::string& s) {
  return !s.empty() && s.size() < 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

}  // namespace

std::optional<Millis> ParseDuration(std::string_view s) {
  size_t i = 0;
  uint64_t n = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    n = n * 10 + static_cast<uint64_t>(s[i] - '0');
    if (n > (uint64_t{1} << 40)) return std::nullopt;
    ++i;
  }
  if (i == 0) return std::nullopt;
  const std::string_view unit = s.substr(i);
  uint64_t ms;
  if (unit == "ms") {
    ms = n;
  } else if (unit == "s") {
    ms = n * 1000;
  } else if (unit == "m") {
    ms = n * 60'000;
  } else if (unit == "h") {
    ms = n * 3'600'000;
  } else if (unit == "d") {
    ms = n * 86'400'000;
  } else {
    return std::nullopt;
  }
  return Millis(ms);
}

std::string RedactConninfo(const std::string& conninfo) {
  // libpq's own parser, so every form it accepts is redacted as it reads it:
  // key=value pairs with any quoting, URIs with a password in the userinfo
  // or as a (percent-encoded) query parameter. What it cannot parse is not
  // shown at all: its error message may quote the string.
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  if (options == nullptr) {
    PQfreemem(error);
    return "<conninfo that libpq cannot parse>";
  }
  std::string out;
  for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    if (!out.empty()) out += ' ';
    // dispchar "*" marks a secret (password, sslpassword, ...).
    const bool secret = o->dispchar != nullptr && std::strchr(o->dispchar, '*') != nullptr;
    out += std::string(o->keyword) + "=" + (secret ? std::string("********") : std::string(o->val));
  }
  PQconninfoFree(options);
  return out;
}

gid_t ResolveGroup(const Config& c, const std::string& key, const std::string& name) {
  const group* g = getgrnam(name.c_str());
  if (g == nullptr)
    throw ConfigError(c.path + ": " + key + ": no group named \"" + name +
                      "\" on this host (create it, or fix the name)");
  return g->gr_gid;
}

std::vector<std::string> CheckHost(const Config& c) {
  std::vector<std::string> problems;
  auto group = [&](const std::string& key, const std::string& name) {
    try {
      ResolveGroup(c, key, name);
    } catch (const ConfigError& e) {
      problems.emplace_back(e.what());
    }
  };
  if (!c.cache_group.empty()) group("cache.group", c.cache_group);
  for (const auto& g : c.allowed_groups) group("control.allowed_groups", g);
  for (size_t i = 0; i < c.sources.size(); ++i) {
    const auto& s = c.sources[i];
    for (const auto& [key, conninfo] : {std::make_pair("conninfo", &s.conninfo),
                                        std::make_pair("listener_conninfo", &s.listener_conninfo)}) {
      if (conninfo->empty()) continue;
      char* error = nullptr;
      PQconninfoOption* options = PQconninfoParse(conninfo->c_str(), &error);
      if (options != nullptr) {
        PQconninfoFree(options);
        continue;
      }
      // libpq's message may quote part of the string, a password perhaps:
      // only an unknown option's name is safe to repeat.
      std::string why = error != nullptr ? error : "out of memory";
      PQfreemem(error);
      while (!why.empty() && why.back() == '\n') why.pop_back();
      if (why.rfind("invalid connection option", 0) != 0)
        why = "write key=value pairs (quote values with spaces in single quotes) or a postgresql:// URI";
      problems.push_back(c.path + ": source[" + std::to_string(i) + "]." + key +
                         ": libpq cannot parse it: " + why);
    }
  }
  return problems;
}

namespace {

// toml11's messages quote the offending line of the file, which may hold a
// password: keep its first line (what is wrong) and the position only.
ConfigError TomlError(const toml::exception& e) {
  std::string what = e.what();
  what = what.substr(0, what.find('\n'));
  if (what.rfind("[error] ", 0) == 0) what.erase(0, 8);
  const auto& loc = e.location();
  const bool syntax = dynamic_cast<const toml::syntax_error*>(&e) != nullptr;
  return ConfigError(loc.file_name() + ":" + std::to_string(loc.line()) + ":" + std::to_string(loc.column()) +
                     ": " + (syntax ? "syntax error: " : "") + what);
}

}  // namespace

Config LoadConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open: " + std::strerror(errno));
  return ParseConfig(in, path);
}

Config ParseConfig(std::istream& text, const std::string& path) {
  // TOML files are UTF-8. toml11 3.7 reads past its buffer on some invalid
  // sequences inside strings (found by fuzz/fuzz_config), so they are refused
  // here, naming the line, before the parser sees them.
  std::string line;
  std::ostringstream whole;
  for (size_t number = 1; std::getline(text, line); ++number) {
    if (!ValidUtf8(reinterpret_cast<const unsigned char*>(line.data()), line.size()))
      throw ConfigError(path + ":" + std::to_string(number) +
                        ": not valid UTF-8 (a TOML file must be UTF-8)");
    whole << line << '\n';
  }
  if (text.bad()) throw ConfigError(path + ": read error");
  std::istringstream checked(whole.str());
  toml::value root;
  try {
    root = toml::parse(checked, path);
  } catch (const toml::exception& e) {
    throw TomlError(e);
  } catch (const std::exception& e) {
    throw ConfigError(path + ": " + e.what());
  }
  for (const auto& [k, v] : root.as_table()) {
    static const std::set<std::string> kTables = {"daemon", "cache", "control", "source", "namespace"};
    if (kTables.count(k) == 0)
      Fail(v, k, "unknown table (expected [daemon], [cache], [control], [[source]], [[namespace]])");
  }
  auto sub = [&](const char* name) -> const toml::value* {
    const auto& t = root.as_table();
    const auto it = t.find(name);
    return it == t.end() ? nullptr : &it->second;
  };

  Config c;
  c.path = path;
  try {
    const TableReader daemon(sub("daemon"), path, "daemon", "daemon");
    c.log_level = daemon.String("log_level");
    c.prometheus_file = daemon.String("prometheus_file");
    c.prometheus_interval = daemon.Duration("prometheus_interval");
    if (c.prometheus_interval < Millis(100))
      Fail(daemon.Get("prometheus_interval"), "daemon.prometheus_interval", "must be at least 100ms");
    static const std::set<std::string> kLevels = {"trace", "debug",    "info", "warn",
                                                  "error", "critical", "off"};
    if (kLevels.count(c.log_level) == 0) {
      if (const auto* v = daemon.Find("log_level"))
        Fail(*v, "daemon.log_level", "unknown level \"" + c.log_level + "\"");
    }

    const TableReader cache(sub("cache"), path, "cache", "cache");
    c.cache_path = cache.String("path");
    if (c.cache_path.empty() || c.cache_path[0] != '/')
      FailFile(path, "cache.path", "must be an absolute path");
    c.capacity = static_cast<uint64_t>(cache.Integer("capacity", 1, int64_t{1} << 34));
    c.slot_bytes =
        static_cast<uint32_t>(cache.Integer("slot_bytes", layout::kMinSlotSize, layout::kMaxSlotSize));
    if (c.slot_bytes % 64 != 0) Fail(cache.Get("slot_bytes"), "cache.slot_bytes", "must be a multiple of 64");
    c.cache_mode = cache.Mode("mode");
    // Only the daemon writes the cache; readers refuse a file others can write.
    if ((c.cache_mode & 0022) != 0)
      Fail(cache.Get("mode"), "cache.mode",
           "must not grant write to group or others (readers refuse such a file; workers only read it)");
    c.cache_group = cache.String("group");
    c.ttl = cache.Duration("ttl");
    c.negative_ttl = cache.Duration("negative_ttl");
    c.idle_timeout = cache.Duration("idle_timeout");
    c.stale_after = cache.Duration("stale_after");
    c.heartbeat_interval = cache.Duration("heartbeat_interval");
    if (c.stale_after < Millis(100))
      Fail(cache.Get("stale_after"), "cache.stale_after", "must be at least 100ms");
    if (c.heartbeat_interval < Millis(10) || c.heartbeat_interval * 2 > c.stale_after)
      Fail(cache.Get("heartbeat_interval"), "cache.heartbeat_interval",
           "must be at least 10ms and at most half of cache.stale_after");

    const TableReader control(sub("control"), path, "control", "control");
    c.control_socket = control.String("socket");
    if (c.control_socket.empty() || c.control_socket.size() > 107)
      FailFile(path, "control.socket", "must be a path of 1 to 107 bytes");
    c.control_mode = control.Mode("mode");
    c.allowed_groups = control.StringList("allowed_groups");
    c.max_clients = static_cast<int>(control.Integer("max_clients", 1, 1 << 20));

    const toml::value* sources = sub("source");
    if (sources == nullptr) FailFile(path, "source", "at least one [[source]] is required");
    if (!sources->is_array()) Fail(*sources, "source", "must be an array of tables: write [[source]]");
    if (sources->as_array().empty()) Fail(*sources, "source", "at least one [[source]] is required");
    std::set<std::string> source_names;
    for (size_t i = 0; i < sources->as_array().size(); ++i) {
      const toml::value& t = sources->as_array()[i];
      const TableReader r(&t, path, "source", "source[" + std::to_string(i) + "]");
      SourceConfig s;
      s.name = r.String("name");
      if (!ValidName(s.name)) Fail(r.Get("name"), r.Label("name"), "must be 1-63 of [a-z0-9_]");
      if (!source_names.insert(s.name).second)
        Fail(r.Get("name"), r.Label("name"), "\"" + s.name + "\" is defined twice");
      s.conninfo = r.String("conninfo");
      s.listener_conninfo = r.String("listener_conninfo");
      s.channel = r.String("channel");
      if (!ValidName(s.channel) || !(s.channel[0] >= 'a' && s.channel[0] <= 'z'))
        Fail(r.Get("channel"), r.Label("channel"), "must be a lower-case identifier");
      s.loaders = static_cast<int>(r.Integer("loaders", 1, 64));
      s.queue_bound = static_cast<int>(r.Integer("queue_bound", 1, 1 << 24));
      s.query_timeout = r.Duration("query_timeout");
      s.reconnect_min = r.Duration("reconnect_min");
      s.reconnect_max = r.Duration("reconnect_max");
      if (s.query_timeout < Millis(1))
        Fail(r.Get("query_timeout"), r.Label("query_timeout"), "must be positive");
      if (s.reconnect_min < Millis(1) || s.reconnect_max < s.reconnect_min)
        Fail(r.Get("reconnect_max"), r.Label("reconnect_max"), "must be at least reconnect_min (> 0)");
      s.log_retention = r.Duration("log_retention");
      // A retention shorter than a reconnect (the sync point is up to
      // stale_after old when the listener is found lost, and the next try
      // comes up to reconnect_max later) would flush at every reconnect; the
      // database keeps a daemon's claim for a day at most.
      if (s.log_retention != Millis(0)) {
        const Millis least = 2 * (c.stale_after + s.reconnect_max);
        if (s.log_retention < least)
          Fail(r.Get("log_retention"), r.Label("log_retention"),
               "must be \"0s\" (never prune) or at least " + std::to_string(least.count()) +
                   " ms, 2 x (cache.stale_after + reconnect_max): a shorter log cannot replay a reconnect");
        if (s.log_retention > std::chrono::hours(24))
          Fail(r.Get("log_retention"), r.Label("log_retention"), "must be at most 1d (the database's limit)");
      }
      s.redis = r.String("redis");
      const std::string role = r.String("redis_role");
      s.redis_channel = r.String("redis_channel");
      if (role == "relay")
        s.redis_role = SourceConfig::RedisRole::kRelay;
      else if (role == "subscribe")
        s.redis_role = SourceConfig::RedisRole::kSubscribe;
      else if (!role.empty())
        Fail(r.Get("redis_role"), r.Label("redis_role"), "must be \"relay\", \"subscribe\" or \"\"");
      if (!role.empty() && s.redis.empty())
        Fail(r.Get("redis_role"), r.Label("redis_role"), "needs redis, the Redis server's address");
      if (role.empty() && !s.redis.empty())
        Fail(r.Get("redis"), r.Label("redis"),
             "is set but redis_role is not: say \"relay\" or \"subscribe\"");
      if (!s.redis.empty()) {
        if (const std::string why = RedisAddressError(s.redis); !why.empty())
          Fail(r.Get("redis"), r.Label("redis"), "must be " + why);
      }
      s.redis_user = r.String("redis_user");
      s.redis_password_file = r.String("redis_password_file");
      if (!s.redis_password_file.empty()) {
        if (s.redis.empty())
          Fail(r.Get("redis_password_file"), r.Label("redis_password_file"),
               "needs redis, the Redis server's address");
        std::ifstream in(s.redis_password_file);
        if (!in)
          Fail(r.Get("redis_password_file"), r.Label("redis_password_file"),
               "cannot read " + s.redis_password_file + ": " + std::strerror(errno));
        std::getline(in, s.redis_password);
        if (!s.redis_password.empty() && s.redis_password.back() == '\r') s.redis_password.pop_back();
        if (s.redis_password.empty())
          Fail(r.Get("redis_password_file"), r.Label("redis_password_file"),
               s.redis_password_file + " holds no password on its first line");
      }
      if (!s.redis_user.empty() && s.redis_password_file.empty())
        Fail(r.Get("redis_user"), r.Label("redis_user"), "needs redis_password_file, the user's password");
      if (s.redis_channel.empty() || s.redis_channel.size() > 255)
        Fail(r.Get("redis_channel"), r.Label("redis_channel"), "must be 1 to 255 bytes");
      // A subscriber proves its cache with relayed shared heartbeats, which
      // take up to three heartbeat intervals to prove a probe.
      if (s.redis_role == SourceConfig::RedisRole::kSubscribe && c.stale_after < 4 * c.heartbeat_interval)
        Fail(r.Get("redis_role"), r.Label("redis_role"),
             "\"subscribe\" needs cache.stale_after of at least 4 x cache.heartbeat_interval");
      c.sources.push_back(std::move(s));
    }

    const toml::value* namespaces = sub("namespace");
    if (namespaces == nullptr) FailFile(path, "namespace", "at least one [[namespace]] is required");
    if (!namespaces->is_array())
      Fail(*namespaces, "namespace", "must be an array of tables: write [[namespace]]");
    if (namespaces->as_array().empty())
      Fail(*namespaces, "namespace", "at least one [[namespace]] is required");
    if (namespaces->as_array().size() > layout::kMaxNamespaces)
      Fail(*namespaces, "namespace", "at most 32 namespaces");
    std::set<std::string> ns_names;
    for (size_t i = 0; i < namespaces->as_array().size(); ++i) {
      const toml::value& t = namespaces->as_array()[i];
      const TableReader r(&t, path, "namespace", "namespace[" + std::to_string(i) + "]");
      NamespaceConfig n;
      n.name = r.String("name");
      if (!ValidName(n.name)) Fail(r.Get("name"), r.Label("name"), "must be 1-63 of [a-z0-9_]");
      if (!ns_names.insert(n.name).second)
        Fail(r.Get("name"), r.Label("name"), "\"" + n.name + "\" is defined twice");
      n.key_kind = r.Kind("kind");
      n.max_key_len = static_cast<uint32_t>(r.Integer("max_key_len", 1, layout::kMaxKeyLen));
      n.source = r.String("source");
      if (n.source.empty()) n.source = c.sources.front().name;
      const auto it = std::find_if(c.sources.begin(), c.sources.end(),
                                   [&](const SourceConfig& s) { return s.name == n.source; });
      if (it == c.sources.end())
        Fail(r.Get("source"), r.Label("source"), "no [[source]] is named \"" + n.source + "\"");
      n.source_index = static_cast<size_t>(it - c.sources.begin());
      n.query = r.String("query");
      {
        const auto loc = r.Get("query").location();
        n.query_location = loc.file_name() + ":" + std::to_string(loc.line());
      }
      if (n.query.find("$1") == std::string::npos)
        Fail(r.Get("query"), r.Label("query"), "must use $1 for the key");
      n.tenant_column = r.String("tenant_column");
      if (n.tenant_column.empty())
        Fail(r.Get("tenant_column"), r.Label("tenant_column"), "must not be empty");
      n.fields = r.StringList("fields");
      if (n.fields.size() > layout::kMaxFields) Fail(r.Get("fields"), r.Label("fields"), "at most 30 fields");
      std::set<std::string> seen{n.tenant_column};
      for (const auto& f : n.fields)
        if (f.empty() || f.size() > 63 || !seen.insert(f).second)
          Fail(r.Get("fields"), r.Label("fields"),
               "\"" + f + "\" is empty, too long, repeated or the tenant column");
      c.namespaces.push_back(std::move(n));
    }
  } catch (const toml::exception& e) {
    throw TomlError(e);
  }
  return c;
}

namespace {

// What differs between two definitions of one namespace, "" if nothing.
std::string NamespaceDiff(const NamespaceConfig& x, const NamespaceConfig& y) {
  std::string what;
  auto check = [&](bool same, const char* key) {
    if (!same) what += (what.empty() ? "" : ", ") + std::string(key);
  };
  check(x.key_kind == y.key_kind, "kind");
  check(x.max_key_len == y.max_key_len, "max_key_len");
  check(x.source == y.source, "source");
  check(x.query == y.query, "query");
  check(x.tenant_column == y.tenant_column, "tenant_column");
  check(x.fields == y.fields, "fields");
  return what;
}

const NamespaceConfig* FindNamespace(const Config& c, const std::string& name) {
  for (const auto& n : c.namespaces)
    if (n.name == name) return &n;
  return nullptr;
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return "[" + out + "]";
}

}  // namespace

std::vector<std::string> RestartRequired(const Config& a, const Config& b) {
  std::vector<std::string> diff;
  auto check = [&](bool same, const char* key) {
    if (!same) diff.push_back(key);
  };
  check(a.cache_path == b.cache_path, "cache.path");
  check(a.capacity == b.capacity, "cache.capacity");
  check(a.slot_bytes == b.slot_bytes, "cache.slot_bytes");
  check(a.cache_mode == b.cache_mode, "cache.mode");
  check(a.cache_group == b.cache_group, "cache.group");
  check(a.control_socket == b.control_socket, "control.socket");
  check(a.control_mode == b.control_mode, "control.mode");
  check(a.sources.size() == b.sources.size(), "source (count)");
  for (size_t i = 0; i < std::min(a.sources.size(), b.sources.size()); ++i) {
    const auto &x = a.sources[i], &y = b.sources[i];
    check(x.name == y.name && x.conninfo == y.conninfo && x.listener_conninfo == y.listener_conninfo &&
              x.channel == y.channel && x.loaders == y.loaders,
          "source (name, conninfo, listener_conninfo, channel or loaders)");
    check(x.redis == y.redis && x.redis_role == y.redis_role && x.redis_channel == y.redis_channel &&
              x.redis_user == y.redis_user && x.redis_password_file == y.redis_password_file &&
              x.redis_password == y.redis_password,
          "source (redis, redis_role, redis_channel, redis_user or redis_password_file)");
  }
  // Namespaces by name, so that the message says which one was added,
  // removed or changed (the cache file's namespace table is fixed at start).
  for (const auto& x : a.namespaces) {
    const NamespaceConfig* y = FindNamespace(b, x.name);
    if (y == nullptr) {
      diff.push_back("namespace " + x.name + " (removed)");
    } else if (const std::string what = NamespaceDiff(x, *y); !what.empty()) {
      diff.push_back("namespace " + x.name + " (" + what + ")");
    }
  }
  for (const auto& y : b.namespaces)
    if (FindNamespace(a, y.name) == nullptr) diff.push_back("namespace " + y.name + " (added)");
  if (diff.empty()) {
    for (size_t i = 0; i < a.namespaces.size(); ++i)
      check(a.namespaces[i].name == b.namespaces[i].name, "namespace (order)");
  }
  std::sort(diff.begin(), diff.end());
  diff.erase(std::unique(diff.begin(), diff.end()), diff.end());
  return diff;
}

std::vector<std::string> ConfigChanges(const Config& a, const Config& b) {
  std::vector<std::string> out;
  auto text = [&](const std::string& key, const std::string& x, const std::string& y) {
    if (x != y) out.push_back(key + ": \"" + x + "\" -> \"" + y + "\"");
  };
  auto number = [&](const std::string& key, auto x, auto y) {
    if (x != y) out.push_back(key + ": " + std::to_string(x) + " -> " + std::to_string(y));
  };
  auto millis = [&](const std::string& key, Millis x, Millis y) {
    if (x != y)
      out.push_back(key + ": " + std::to_string(x.count()) + "ms -> " + std::to_string(y.count()) + "ms");
  };
  text("daemon.log_level", a.log_level, b.log_level);
  text("daemon.prometheus_file", a.prometheus_file, b.prometheus_file);
  millis("daemon.prometheus_interval", a.prometheus_interval, b.prometheus_interval);
  text("cache.path", a.cache_path, b.cache_path);
  number("cache.capacity", a.capacity, b.capacity);
  number("cache.slot_bytes", a.slot_bytes, b.slot_bytes);
  number("cache.mode", a.cache_mode, b.cache_mode);
  text("cache.group", a.cache_group, b.cache_group);
  millis("cache.ttl", a.ttl, b.ttl);
  millis("cache.negative_ttl", a.negative_ttl, b.negative_ttl);
  millis("cache.idle_timeout", a.idle_timeout, b.idle_timeout);
  millis("cache.stale_after", a.stale_after, b.stale_after);
  millis("cache.heartbeat_interval", a.heartbeat_interval, b.heartbeat_interval);
  text("control.socket", a.control_socket, b.control_socket);
  number("control.mode", a.control_mode, b.control_mode);
  if (a.allowed_groups != b.allowed_groups)
    out.push_back("control.allowed_groups: " + Join(a.allowed_groups) + " -> " + Join(b.allowed_groups));
  number("control.max_clients", a.max_clients, b.max_clients);
  for (size_t i = 0; i < std::min(a.sources.size(), b.sources.size()); ++i) {
    const auto &x = a.sources[i], &y = b.sources[i];
    const std::string s = "source " + y.name + ".";
    text(s + "name", x.name, y.name);
    text(s + "conninfo", RedactConninfo(x.conninfo), RedactConninfo(y.conninfo));
    text(s + "listener_conninfo", RedactConninfo(x.listener_conninfo), RedactConninfo(y.listener_conninfo));
    text(s + "channel", x.channel, y.channel);
    number(s + "loaders", x.loaders, y.loaders);
    number(s + "queue_bound", x.queue_bound, y.queue_bound);
    millis(s + "query_timeout", x.query_timeout, y.query_timeout);
    millis(s + "reconnect_min", x.reconnect_min, y.reconnect_min);
    millis(s + "reconnect_max", x.reconnect_max, y.reconnect_max);
    millis(s + "log_retention", x.log_retention, y.log_retention);
  }
  number("source (count)", a.sources.size(), b.sources.size());
  for (const auto& y : b.namespaces) {
    const NamespaceConfig* x = FindNamespace(a, y.name);
    const std::string n = "namespace " + y.name;
    if (x == nullptr) {
      out.push_back(n + ": added");
      continue;
    }
    if (x->query != y.query) out.push_back(n + ".query: changed (" + y.query_location + ")");
    text(n + ".tenant_column", x->tenant_column, y.tenant_column);
    if (x->fields != y.fields) out.push_back(n + ".fields: " + Join(x->fields) + " -> " + Join(y.fields));
    text(n + ".source", x->source, y.source);
    number(n + ".kind", x->key_kind, y.key_kind);
    number(n + ".max_key_len", x->max_key_len, y.max_key_len);
  }
  for (const auto& x : a.namespaces)
    if (FindNamespace(b, x.name) == nullptr) out.push_back("namespace " + x.name + ": removed");
  return out;
}

std::vector<NamespaceConfig> ChangedQueries(const Config& a, const Config& b) {
  std::vector<NamespaceConfig> out;
  for (const auto& y : b.namespaces) {
    const NamespaceConfig* x = FindNamespace(a, y.name);
    if (x == nullptr || x->query != y.query || x->tenant_column != y.tenant_column || x->fields != y.fields ||
        x->source != y.source)
      out.push_back(y);
  }
  return out;
}

}  // namespace tenantcache
