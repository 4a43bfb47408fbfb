#include "stats_format.h"

#include <cstdio>
#include <iterator>
#include <set>

namespace tenantcache {

std::map<std::string, std::string> ParseFlatJson(const std::string& json) {
  std::map<std::string, std::string> out;
  size_t i = 0;
  while ((i = json.find('"', i)) != std::string::npos) {
    const size_t end = json.find('"', i + 1);
    if (end == std::string::npos) break;
    const std::string key = json.substr(i + 1, end - i - 1);
    size_t v = json.find(':', end);
    if (v == std::string::npos) break;
    ++v;
    const size_t stop = json.find_first_of(",}", v);
    out[key] = json.substr(v, stop == std::string::npos ? std::string::npos : stop - v);
    i = stop == std::string::npos ? json.size() : stop;
  }
  return out;
}

std::string PrometheusText(const std::string& json) {
  static const std::set<std::string> kGauges = {"synced",
                                                "epoch",
                                                "entries",
                                                "slots",
                                                "capacity",
                                                "file_bytes",
                                                "huge_page_bytes",
                                                "hit_rate",
                                                "pending_fills",
                                                "broken_namespaces",
                                                "listeners_behind_pooler",
                                                "partitions_without_truncate_trigger",
                                                "unseen_before_update_triggers",
                                                "notification_queue_usage",
                                                "reporting_clients",
                                                "control_clients",
                                                "control_max_clients",
                                                "log_prune_age_seconds",
                                                "standby_loaders",
                                                "replica_lag_bytes",
                                                "replica_lag_seconds"};
  std::string out;
  for (const auto& [k, v] : ParseFlatJson(json)) {
    const std::string value = v == "true" ? "1" : v == "false" ? "0" : v;
    out.append("# TYPE tenantcache_").append(k).append(kGauges.count(k) != 0 ? " gauge\n" : " counter\n");
    out.append("tenantcache_").append(k).append(" ").append(value).append("\n");
  }
  return out;
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " bytes";
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 10 ? "%.1f %s" : "%.0f %s", v, kUnits[u]);
  return buf;
}

}  // namespace tenantcache
