// libFuzzer target: the config loader (toml11 + validation). A broken config
// file must end in a ConfigError with a message, never a crash, a hang or any
// other exception.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

#include "config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  try {
    const tenantcache::Config c = tenantcache::ParseConfig(in, "fuzz.toml");
    if (c.sources.empty() || c.namespaces.empty()) std::abort();
  } catch (const tenantcache::ConfigError& e) {
    if (e.what()[0] == '\0') std::abort();
  }
  return 0;
}
