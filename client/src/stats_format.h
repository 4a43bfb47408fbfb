// The daemon's statistics are a flat JSON object of numbers and booleans;
// these helpers read it and render the Prometheus text exposition format,
// for tenantcachectl and for the daemon's textfile-collector output.
#ifndef TENANTCACHE_STATS_FORMAT_H_
#define TENANTCACHE_STATS_FORMAT_H_

#include <cstdint>
#include <map>
#include <string>

namespace tenantcache {

// Key -> raw value text ("12", "0.5", "true").
std::map<std::string, std::string> ParseFlatJson(const std::string& json);

// One "# TYPE" line and one sample per key, named tenantcache_<key>;
// booleans become 1/0; level-like values are gauges, the rest counters.
std::string PrometheusText(const std::string& json);

// A size for people: bytes below 1 KiB, else the largest binary unit (KiB,
// MiB, GiB, TiB) that keeps the number at least 1, with one decimal below 10
// ("812 bytes", "484 KiB", "1.5 MiB", "97 MiB").
std::string FormatBytes(uint64_t bytes);

}  // namespace tenantcache

#endif  // TENANTCACHE_STATS_FORMAT_H_
