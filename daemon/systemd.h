// systemd integration (Type=notify): READY, RELOADING, STOPPING, STATUS and
// watchdog pings through libsystemd's sd_notify, sent from a thread of their
// own so that a receiver that does not read can never block the event loop.
// Compiles to no-ops without libsystemd (TC_WITH_SYSTEMD=OFF), and does
// nothing when the daemon is not started by systemd (no NOTIFY_SOCKET).
#ifndef TENANTCACHE_DAEMON_SYSTEMD_H_
#define TENANTCACHE_DAEMON_SYSTEMD_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace tenantcache::systemd {

void Ready(const std::string& status);
void Reloading();
void Stopping();
void Status(const std::string& status);
void WatchdogPing();
// Before exit: waits up to `timeout` for the queued messages to be sent.
void Finish(std::chrono::milliseconds timeout);
// The watchdog interval systemd asked for, in microseconds (0: none).
uint64_t WatchdogUsec();

}  // namespace tenantcache::systemd

#endif  // TENANTCACHE_DAEMON_SYSTEMD_H_
