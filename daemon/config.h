// tenantcached's configuration: a TOML file whose every key is declared once,
// in kConfigKeys (name, type, default, reloadable, documentation). The sample
// config and the README's reference list exactly these keys.
//
//   [daemon]        log_level
//   [cache]         the cache file and entry lifetimes
//   [control]       the control socket
//   [[source]]      one per database: conninfo, channel, loaders, ...
//   [[namespace]]   one per lookup: name, key kind, source, query, tenant column
//
// LoadConfig throws ConfigError naming the file, the line and the key.
#ifndef TENANTCACHE_DAEMON_CONFIG_H_
#define TENANTCACHE_DAEMON_CONFIG_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tenantcache {

using Millis = std::chrono::milliseconds;

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class KeyType { kString, kInteger, kDuration, kMode, kStringList, kKeyKind };

// One configuration key. `table` is "daemon", "cache", "control", "source"
// or "namespace" (the last two are arrays of tables).
struct ConfigKey {
  const char* table;
  const char* name;
  KeyType type;
  const char* default_value;  // as written in TOML; nullptr: required
  bool reloadable;
  const char* doc;
};

extern const std::vector<ConfigKey> kConfigKeys;

struct SourceConfig {
  std::string name;
  std::string conninfo;           // loaders (and the listener unless set)
  std::string listener_conninfo;  // "" = conninfo
  std::string channel;
  int loaders = 2;
  int queue_bound = 10000;
  Millis query_timeout{2000};
  Millis reconnect_min{100};
  Millis reconnect_max{10000};
  // Invalidation log rows this daemon asks the database to keep (0: it does
  // not prune); see tenantcache.daemon_prune_log in sql/install.sql.
  Millis log_retention{std::chrono::hours(6)};
  // Relaying through Redis (daemon/relay.h): the server ("IP:PORT" or
  // "unix:PATH"), this daemon's role (redis_role "relay", "subscribe", "":
  // none), and the pub/sub channel.
  enum class RedisRole { kNone, kRelay, kSubscribe };
  std::string redis;
  RedisRole redis_role = RedisRole::kNone;
  std::string redis_channel;
  // AUTH on every Redis connection when redis_password_file is set: the
  // password (the file's first line; never logged) and the ACL user ("":
  // Redis's default user).
  std::string redis_user;
  std::string redis_password_file;
  std::string redis_password;
};

struct NamespaceConfig {
  std::string name;
  uint32_t key_kind = 0;  // layout::KeyKind
  uint32_t max_key_len = 0;
  std::string source;  // resolved: always names a source
  size_t source_index = 0;
  std::string query;
  std::string query_location;  // "FILE:LINE" of `query`, for messages about it
  std::string tenant_column;
  std::vector<std::string> fields;
};

struct Config {
  std::string path;  // the file it was loaded from
  std::string log_level = "info";
  std::string prometheus_file;
  Millis prometheus_interval{15000};

  std::string cache_path;
  uint64_t capacity = 0;
  uint32_t slot_bytes = 0;
  mode_t cache_mode = 0640;
  std::string cache_group;
  Millis ttl{0}, negative_ttl{0}, idle_timeout{0}, stale_after{0}, heartbeat_interval{0};

  std::string control_socket;
  mode_t control_mode = 0660;
  std::vector<std::string> allowed_groups;
  int max_clients = 1024;

  std::vector<SourceConfig> sources;
  std::vector<NamespaceConfig> namespaces;
};

// Parses and validates `path`. Throws ConfigError.
Config LoadConfig(const std::string& path);

// Parses and validates config text; `path` names it in messages and becomes
// Config::path. Throws ConfigError.
Config ParseConfig(std::istream& text, const std::string& path);

// The id of group `name`, which key `key` of `c` names; throws ConfigError
// "FILE: KEY: no group named ..." when this host has no such group.
gid_t ResolveGroup(const Config& c, const std::string& key, const std::string& name);

// What can be checked of `c` on this host without starting: the groups it
// names exist and its conninfo strings parse. One message per problem, each
// naming the file and the key. The daemon refuses to start (and a reload is
// refused) on any of them; --check-config prints them.
std::vector<std::string> CheckHost(const Config& c);

// "150ms", "5s", "10m", "1h", "1d" -> milliseconds; nullopt if malformed.
std::optional<Millis> ParseDuration(std::string_view s);

// Conninfo with any password replaced by "********", for logs.
std::string RedactConninfo(const std::string& conninfo);

// Which keys differ between two configs that a reload cannot apply; empty if
// the new config can replace the old one in place. A namespace is named with
// what changed in it: "namespace member (query, fields)".
std::vector<std::string> RestartRequired(const Config& running, const Config& loaded);

// Every key whose value differs between two configs, as "key: old -> new"
// (conninfo redacted, queries shown as "changed"), for the reload's debug log.
std::vector<std::string> ConfigChanges(const Config& running, const Config& loaded);

// The namespaces of `loaded` whose query, tenant column, fields or source
// differ from (or are not in) `running`: what a reload must check against the
// database before it accepts the file.
std::vector<NamespaceConfig> ChangedQueries(const Config& running, const Config& loaded);

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_CONFIG_H_
