#include "support/test_cache.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

namespace tenantcache::test {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/tenantcache-test-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

CacheOptions FleetOptions(const std::string& path, uint64_t capacity) {
  CacheOptions o;
  o.path = path;
  o.capacity = capacity;
  o.control_socket = path + ".sock";
  o.namespaces = {
      {"user", layout::kUuid, 0, {"tenant_code", "tenant_url", "role"}},
      {"tenant", layout::kUuid, 0, {"code", "slug", "host", "url"}},
      {"tenant_by_slug", layout::kSlug, 0, {"id", "code"}},
      {"tenant_by_host", layout::kHost, 0, {"id", "code"}},
      {"label", layout::kText, 32, {"value"}},
  };
  return o;
}

std::unique_ptr<CacheWriter> OpenSynced(const CacheOptions& options) {
  auto w = CacheWriter::Open(options);
  w->Heartbeat();
  w->SetSynced(true);
  return w;
}

std::string Uuid(uint64_t n) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%08llx-0000-4000-8000-%012llx",
                static_cast<unsigned long long>((n >> 16) & 0xFFFFFFFFull),
                static_cast<unsigned long long>(n & 0xFFFFFFFFFFFFull));
  return buf;
}

CommandResult RunCommand(const std::string& command_line) {
  CommandResult r{-1, ""};
  FILE* p = popen((command_line + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[512];
  while (fgets(buf, sizeof buf, p) != nullptr) r.output += buf;
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string FieldOf(const tc_value& v, const char* name) {
  const char* text = nullptr;
  size_t len = 0;
  if (tc_value_get(&v, name, &text, &len) != 0) return "<no field>";
  return text == nullptr ? "<null>" : std::string(text, len);
}

bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return cond();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

size_t ResidentKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  return 0;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t i = haystack.find(needle); i != std::string::npos; i = haystack.find(needle, i + 1)) ++n;
  return n;
}

}  // namespace tenantcache::test
