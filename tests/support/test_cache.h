// Helpers shared by the cache tests: a private temporary directory and the
// namespaces of the example fleet schema.
#ifndef TENANTCACHE_TESTS_SUPPORT_TEST_CACHE_H_
#define TENANTCACHE_TESTS_SUPPORT_TEST_CACHE_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "cache_writer.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::test {

// A fresh directory under $TC_TEST_DIR, else /dev/shm (else /tmp), removed
// with its contents.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// user (uuid: tenant_code, tenant_url, role), tenant (uuid: code, slug, host,
// url), tenant_by_slug (slug), tenant_by_host (host), label (text <= 32).
CacheOptions FleetOptions(const std::string& path, uint64_t capacity = 1000);

// A writer that is synced and has a fresh heartbeat.
std::unique_ptr<CacheWriter> OpenSynced(const CacheOptions& options);

// A lowercase UUID made from n.
std::string Uuid(uint64_t n);

// Runs a shell command line; its exit code (-1 if it did not exit) and its
// combined stdout and stderr.
struct CommandResult {
  int exit_code;
  std::string output;
};
CommandResult RunCommand(const std::string& command_line);

// The resident memory of process `pid` in KiB (VmRSS), 0 if unknown.
size_t ResidentKb(pid_t pid);

// Field `name` of an answer: "<null>" for SQL NULL, "<no field>" when the
// namespace has no such field.
std::string FieldOf(const tc_value& v, const char* name);

// Whether `haystack` holds `needle`, and how many times (overlapping).
bool Contains(const std::string& haystack, const std::string& needle);
size_t Count(const std::string& haystack, const std::string& needle);

// Polls `cond` until it holds or `timeout` passes; returns its last result.
bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace tenantcache::test

#endif  // TENANTCACHE_TESTS_SUPPORT_TEST_CACHE_H_
