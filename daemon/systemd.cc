#include "systemd.h"

#if defined(TC_HAVE_SYSTEMD)
#include <systemd/sd-daemon.h>
#endif

namespace tenantcache::systemd {

#if defined(TC_HAVE_SYSTEMD)
namespace {
void Notify(const std::string& state) { sd_notify(0, state.c_str()); }
}  // namespace

void Ready(const std::string& status) { Notify("READY=1\nSTATUS=" + status); }
void Reloading() { Notify("RELOADING=1"); }
void Stopping() { Notify("STOPPING=1\nSTATUS=stopping"); }
void Status(const std::string& status) { Notify("STATUS=" + status); }
void WatchdogPing() { Notify("WATCHDOG=1"); }
uint64_t WatchdogUsec() {
  uint64_t usec = 0;
  return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}
#else
void Ready(const std::string&) {}
void Reloading() {}
void Stopping() {}
void Status(const std::string&) {}
void WatchdogPing() {}
uint64_t WatchdogUsec() { return 0; }
#endif

}  // namespace tenantcache::systemd
