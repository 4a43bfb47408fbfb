// libFuzzer target: the real ControlServer with its real state. Each input
// builds a Daemon (its cache writer on a real cache file, its loader pools
// with their coalescing and leases, its statistics) on a fresh libuv loop, a
// ControlServer on a real unix socket, and one client connected to it. The
// input is the byte stream that client sends: its first byte chooses the
// chunk size, and each chunk is written and processed by the loop before the
// next, so frames arrive split at every boundary. The client reads what the
// daemon answers, then closes; the loop must end with every handle closed.
//
// The sources point at an unreachable database and are never started:
// lookups that reach a loader pool stay pending (coalesced per key, revoked
// by invalidations) until the daemon stops and answers them unavailable. The
// command rate limits are small, so that refusals are exercised too.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>

#include "cache_writer.h"
#include "config.h"
#include "control.h"
#include "daemon.h"
#include "protocol.h"
#include "tenantcache/tenantcache.h"

namespace {

namespace tc = tenantcache;
namespace protocol = tenantcache::protocol;

void Check(bool ok) {
  if (!ok) std::abort();
}

struct Setup {
  tc::Config config;
  tc::CacheOptions options;
};

const Setup& TheSetup() {
  static const Setup* setup = [] {
    spdlog::set_level(spdlog::level::off);
    char dir[] = "/tmp/tc-fuzz-control-XXXXXX";
    Check(mkdtemp(dir) != nullptr);
    const std::string d = dir;
    std::istringstream text(
        "[cache]\npath = \"" + d + "/cache\"\ncapacity = 64\n\n[control]\nsocket = \"" + d +
        "/ctl.sock\"\n\n"
        "[[source]]\nname = \"main\"\nconninfo = \"host=" +
        d +
        "/nowhere port=1\"\nqueue_bound = 16\n\n"
        "[[namespace]]\nname = \"user\"\nkind = \"uuid\"\nquery = \"SELECT $1 AS t, 'v' AS v\"\n"
        "tenant_column = \"t\"\nfields = [\"v\"]\n\n"
        "[[namespace]]\nname = \"host\"\nkind = \"host\"\nquery = \"SELECT $1 AS t, 1 AS v\"\n"
        "tenant_column = \"t\"\nfields = [\"v\"]\n\n"
        "[[namespace]]\nname = \"label\"\nkind = \"text\"\nmax_key_len = 16\n"
        "query = \"SELECT $1 AS t, 1 AS v\"\ntenant_column = \"t\"\nfields = [\"v\"]\n");
    auto* s = new Setup;
    s->config = tc::ParseConfig(text, d + "/tenantcached.toml");
    s->options.path = s->config.cache_path;
    s->options.capacity = s->config.capacity;
    s->options.control_socket = s->config.control_socket;
    for (const auto& n : s->config.namespaces)
      s->options.namespaces.push_back(tc::NamespaceSpec{n.name, n.key_kind, n.max_key_len, n.fields});
    return s;
  }();
  return *setup;
}

// Reads what the daemon sent; every answer must be a well-formed frame.
// Returns false once the daemon closed the connection.
bool Drain(int fd, std::string* in) {
  char buf[16 * 1024];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return false;
    if (n < 0) break;
    in->append(buf, static_cast<size_t>(n));
  }
  for (;;) {
    protocol::Frame f;
    size_t used = 0;
    const char* err = nullptr;
    const auto p = protocol::ParseFrame(*in, protocol::kMaxResponse, &f, &used, &err);
    Check(p != protocol::Parse::kBad);
    if (p == protocol::Parse::kNeedMore) break;
    Check(f.op >= protocol::kLookup && f.op <= protocol::kStats);
    Check(f.status <= TC_MISS && f.status >= TC_E_DAEMON);
    in->erase(0, used);
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Setup& setup = TheSetup();
  if (size == 0) return 0;
  const size_t chunk = 1 + data[0] % 64;
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);

  uv_loop_t loop;
  Check(uv_loop_init(&loop) == 0);
  {
    auto daemon = std::make_unique<tc::Daemon>(&loop, setup.config, tc::CacheWriter::Open(setup.options));
    tc::ControlLimits limits;
    limits.flush = {2, 1};
    limits.invalidate_tenant = {3, 1};
    limits.invalidate_key = {4, 1};
    tc::ControlServer control(daemon.get(), limits);
    control.Start();

    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", setup.config.control_socket.c_str());
    Check(fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    // The daemon accepts, then reads each chunk as it comes.
    uv_run(&loop, UV_RUN_NOWAIT);
    std::string answers;
    bool open = true;
    for (size_t at = 0; at < stream.size() && open; at += chunk) {
      const std::string_view part = stream.substr(at, chunk);
      if (send(fd, part.data(), part.size(), MSG_NOSIGNAL | MSG_DONTWAIT) !=
          static_cast<ssize_t>(part.size()))
        break;  // closed by the daemon (a malformed request), or its buffer is full
      uv_run(&loop, UV_RUN_NOWAIT);
      open = Drain(fd, &answers);
    }
    // End of input: the daemon sees EOF and closes the connection; what it
    // answered meanwhile is read. Bounded: the daemon closes at once.
    shutdown(fd, SHUT_WR);
    for (int i = 0; open && i < 1000; ++i) {
      uv_run(&loop, UV_RUN_NOWAIT);
      open = Drain(fd, &answers);
    }
    Check(!open);
    Check(control.clients() == 0);
    close(fd);
    control.Stop();
    daemon->Stop();
    daemon.reset();
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  Check(uv_loop_close(&loop) == 0);
  return 0;
}
