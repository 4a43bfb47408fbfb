// Host names of a conninfo, resolved off the event loop.
//
// libpq resolves the host names of a conninfo with a blocking getaddrinfo()
// inside PQconnectStart/PQconnectPoll: on the daemon's one loop thread, a
// slow DNS server would stop invalidations, fills, heartbeats and the control
// socket together. So a connection is started in two steps:
//  1. ResolveConninfo parses the conninfo as libpq would (PQconninfoParse;
//     the PG* environment variables fill what it leaves unset, through
//     PQconndefaults), and resolves every host name of `host` (a
//     comma-separated list: names, IP addresses, unix socket directories)
//     with uv_getaddrinfo on libuv's thread pool, all at once.
//  2. The connection is started with those parameters and `hostaddr` set,
//     aligned with `host`: libpq then connects to the addresses without
//     resolving anything, and still uses `host` for what needs the name
//     (TLS verify-full checks the server certificate against it, SNI,
//     .pgpass).
//
// A name with several addresses becomes several host/hostaddr pairs (the
// same name, one address each, in the resolver's order, at most
// kMaxAddresses), so libpq tries each in turn as it would have. A per-host
// `port` list is expanded alongside. Left to libpq as given: a conninfo that
// already sets hostaddr (or PGHOSTADDR), one naming a service
// (service/PGSERVICE: the service file may set the host), and one whose port
// list does not match its host list (libpq reports that). A name that does
// not resolve is a clear error naming it; in a list, it is skipped (as libpq
// skips a host it cannot reach) with a warning, and only when no entry is
// left does the connection fail.
#ifndef TENANTCACHE_DAEMON_RESOLVER_H_
#define TENANTCACHE_DAEMON_RESOLVER_H_

#include <uv.h>

#include <functional>
#include <string>
#include <vector>

namespace tenantcache {

// Connection parameters for PQconnectStartParams. A conninfo left to libpq
// as given is the value of "dbname", with expand_dbname set.
struct ConnParams {
  std::vector<std::string> keys, values;
  bool expand_dbname = false;
};

class Resolution;

// Resolves the host names of `conninfo`; `done` gets the parameters, or an
// error message ("" on success). `what` names the connection in warnings.
// When nothing needs resolving (or the conninfo does not parse), `done` runs
// before this returns, and the result is nullptr; otherwise `done` runs
// later on the loop thread, and the result may be given to
// CancelResolution until then.
Resolution* ResolveConninfo(uv_loop_t* loop, const std::string& conninfo, const std::string& what,
                            std::function<void(ConnParams params, const std::string& error)> done);

// `done` will not run. A lookup already running on the thread pool cannot be
// stopped: its memory is freed when it returns (the loop waits for it).
void CancelResolution(Resolution* resolution);

// Addresses used per host name at most.
constexpr size_t kMaxAddresses = 16;

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_RESOLVER_H_
