// systemd integration (Type=notify): READY, RELOADING, STOPPING, STATUS and
// watchdog pings through libsystemd's sd_notify. Compiles to no-ops without
// libsystemd (TC_WITH_SYSTEMD=OFF), and does nothing when the daemon is not
// started by systemd (no NOTIFY_SOCKET).
#ifndef TENANTCACHE_DAEMON_SYSTEMD_H_
#define TENANTCACHE_DAEMON_SYSTEMD_H_

#include <cstdint>
#include <string>

namespace tenantcache::systemd {

void Ready(const std::string& status);
void Reloading();
void Stopping();
void Status(const std::string& status);
void WatchdogPing();
// The watchdog interval systemd asked for, in microseconds (0: none).
uint64_t WatchdogUsec();

}  // namespace tenantcache::systemd

#endif  // TENANTCACHE_DAEMON_SYSTEMD_H_
