// Host names of a conninfo are resolved off the daemon's event loop
// (daemon/resolver.h), against the real PostgreSQL over TCP and TLS and the
// real daemon: a name reaches the server; TLS verify-full still checks the
// certificate against the name (and refuses another name for the same
// address); a name that does not resolve is named in the log; and while a
// lookup hangs, the daemon keeps answering its control socket.
//
// The binary runs in a mount namespace of its own (it needs root, as the
// tests have in CI) with its own /etc/hosts and /etc/resolv.conf bind-mounted
// over the machine's: the names below exist only there, and the name server
// is a small UDP responder of the test that answers "no such name" after a
// delay the test sets. Nothing of the machine's configuration changes.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "support/daemon_process.h"
#include "support/fleet_test.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A DNS server for the test's names, answering every query after delay():
// names that begin with "found-" have the address 127.0.0.1 (A) and no IPv6
// address; any other is NXDOMAIN ("no such name"). outstanding() counts the
// queries not yet answered.
class SlowDns {
 public:
  explicit SlowDns(const std::string& address) {
    fd_ = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(53);
    inet_pton(AF_INET, address.c_str(), &sa.sin_addr);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
      throw std::runtime_error("cannot bind " + address + ":53: " + std::strerror(errno));
    thread_ = std::thread([this] { Serve(); });
  }
  ~SlowDns() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  void set_delay(std::chrono::milliseconds d) { delay_ = d.count(); }
  int outstanding() const { return outstanding_.load(); }

 private:
  struct Query {
    Clock::time_point due;
    std::string packet;
    sockaddr_in from;
  };
  void Serve() {
    std::deque<Query> queue;
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) == 1) {
        char buf[512];
        sockaddr_in from{};
        socklen_t len = sizeof from;
        const ssize_t n = recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
        if (n >= 12) {
          queue.push_back(
              {Clock::now() + std::chrono::milliseconds(delay_.load()), std::string(buf, n), from});
          ++outstanding_;
        }
      }
      while (!queue.empty() && queue.front().due <= Clock::now()) {
        const std::string r = Answer(queue.front().packet);
        if (!r.empty())
          sendto(fd_, r.data(), r.size(), 0, reinterpret_cast<const sockaddr*>(&queue.front().from),
                 sizeof queue.front().from);
        queue.pop_front();
        --outstanding_;
      }
    }
  }
  // The same id and question, QR, RD and RA set, then the answer.
  static std::string Answer(const std::string& query) {
    size_t end = 12;  // the question's name: labels up to a zero length
    while (end < query.size() && query[end] != 0) end += 1 + static_cast<unsigned char>(query[end]);
    if (end + 5 > query.size()) return {};
    const std::string name = query.substr(13, std::min<size_t>(6, end - 13));
    const bool a = query[end + 1] == 0 && query[end + 2] == 1;
    std::string r = query.substr(0, end + 5);  // header and question (no EDNS record)
    r[2] = static_cast<char>(0x81);
    r[3] = static_cast<char>(name == "found-" ? 0x80 : 0x83);
    r[6] = r[7] = r[8] = r[9] = r[10] = r[11] = 0;
    if (name == "found-" && a) {
      r[7] = 1;
      // Name (pointer to the question's), A, IN, TTL 0, 4 bytes: 127.0.0.1.
      r += std::string("\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04\x7f\x00\x00\x01", 16);
    }
    return r;
  }

  int fd_ = -1;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> delay_{0};
  std::atomic<int> outstanding_{0};
};

constexpr const char* kWrongName = "wrong-name.tenantcache.test";

class ResolveTest : public FleetTest {
 protected:
  static void SetUpTestSuite() {
    // The names of this test only, in a mount namespace of this process.
    if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      skip_ = std::string("needs root for a mount namespace: ") + std::strerror(errno);
      return;
    }
    etc_ = std::make_unique<TempDir>();
    // A loopback address of its own for the name server (port 53).
    const std::string dns = "127.0.0." + std::to_string(2 + getpid() % 250);
    std::ofstream(etc_->File("hosts")) << "127.0.0.1 localhost\n127.0.0.1 " << kWrongName << "\n";
    std::ofstream(etc_->File("resolv.conf")) << "nameserver " << dns << "\noptions timeout:30 attempts:1\n";
    if (mount(etc_->File("hosts").c_str(), "/etc/hosts", nullptr, MS_BIND, nullptr) != 0 ||
        mount(etc_->File("resolv.conf").c_str(), "/etc/resolv.conf", nullptr, MS_BIND, nullptr) != 0) {
      skip_ = std::string("cannot bind-mount /etc/hosts and /etc/resolv.conf: ") + std::strerror(errno);
      return;
    }
    dns_ = std::make_unique<SlowDns>(dns);
    // A certificate for "localhost" only, its own root.
    const std::string crt = etc_->File("server.crt"), key = etc_->File("server.key");
    const auto made = RunCommand(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
        "-addext subjectAltName=DNS:localhost -keyout " +
        key + " -out " + crt + " 2>&1");
    ASSERT_EQ(made.exit_code, 0) << made.output;
    if (geteuid() == 0) {
      ASSERT_EQ(RunCommand("chown postgres " + crt + " " + key).exit_code, 0);
    }
    chmod(key.c_str(), 0600);
    chmod(etc_->path().c_str(), 0755);
    // The shared cluster listens on 127.0.0.1 too, with TLS.
    PgConn admin(SharedCluster().Conninfo());
    admin.Exec("ALTER SYSTEM SET listen_addresses = '127.0.0.1'");
    admin.Exec("ALTER SYSTEM SET ssl = on");
    admin.Exec("ALTER SYSTEM SET ssl_cert_file = '" + crt + "'");
    admin.Exec("ALTER SYSTEM SET ssl_key_file = '" + key + "'");
    SharedCluster().Restart();
  }
  static void TearDownTestSuite() {
    dns_.reset();
    umount("/etc/resolv.conf");
    umount("/etc/hosts");
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    FleetTest::SetUp();
    dns_->set_delay(0ms);
  }
  // Over TCP to `host`, with `extra` conninfo settings.
  std::string TcpConninfo(const std::string& host, const std::string& extra) const {
    return "host=" + host + " port=" + std::to_string(SharedCluster().port()) + " dbname=" + db_ +
           " user=postgres connect_timeout=10 " + extra;
  }
  std::string RootCert() const { return etc_->File("server.crt"); }
  void Start(const std::string& conninfo, const std::string& source = "") {
    daemon_ = std::make_unique<DaemonProcess>(dir_.path(), FleetConfig(dir_.path(), conninfo, "", source));
  }
  bool LogShows(const std::string& what, std::chrono::milliseconds timeout = 15s) {
    return WaitFor([&] { return Contains(daemon_->Log(), what); }, timeout);
  }
  int LookupUser(int n) {
    if (cache_ == nullptr && tc_cache_open(daemon_->cache_path().c_str(), &cache_) != 0)
      return TC_E_UNAVAILABLE;
    tc_ns ns = 0;
    tc_namespace(cache_, "user", &ns);
    tc_value v;
    const std::string key = UserId(n);
    return tc_cache_lookup(cache_, ns, key.data(), key.size(), 5000, &v);
  }

  static std::string skip_;
  static std::unique_ptr<TempDir> etc_;
  static std::unique_ptr<SlowDns> dns_;
};

std::string ResolveTest::skip_;
std::unique_ptr<TempDir> ResolveTest::etc_;
std::unique_ptr<SlowDns> ResolveTest::dns_;

// host=localhost: resolved by the daemon (its log says to what), and every
// connection of the daemon reaches PostgreSQL over TCP from 127.0.0.1.
TEST_F(ResolveTest, AHostNameReachesPostgresOverTcp) {
  Start(TcpConninfo("localhost", "sslmode=disable"));
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  ASSERT_EQ(LookupUser(1), TC_FOUND);
  EXPECT_TRUE(Contains(daemon_->Log(), "resolved host name \"localhost\" to 127.0.0.1")) << daemon_->Log();
  // The listener, the heartbeat and at least the loader that filled.
  EXPECT_EQ(
      admin_->Scalar("SELECT count(*) FILTER (WHERE client_addr = '127.0.0.1') = count(*) AND count(*) >= 3 "
                     "FROM pg_stat_activity WHERE application_name LIKE 'tenantcached %'"),
      "t");
}

// verify-full with the name: libpq gets the address, and still checks the
// certificate against "localhost" (the certificate has no IP address, so a
// check against 127.0.0.1 would fail). The same address under another name
// is refused, and the log says why.
TEST_F(ResolveTest, TlsVerifyFullChecksTheNameAndRefusesAnotherOne) {
  Start(TcpConninfo("localhost", "sslmode=verify-full sslrootcert=" + RootCert()));
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  ASSERT_EQ(LookupUser(1), TC_FOUND);
  EXPECT_EQ(admin_->Scalar(
                "SELECT count(*) FILTER (WHERE s.ssl) = count(*) AND count(*) >= 3 FROM pg_stat_activity a "
                "JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE 'tenantcached %'"),
            "t");
  tc_cache_close(cache_);
  cache_ = nullptr;
  daemon_.reset();

  Start(TcpConninfo(kWrongName, "sslmode=verify-full sslrootcert=" + RootCert()));
  EXPECT_TRUE(LogShows(std::string("resolved host name \"") + kWrongName + "\" to 127.0.0.1"))
      << daemon_->Log();
  EXPECT_TRUE(LogShows(std::string("server certificate for \"localhost\" does not match host name \"") +
                       kWrongName + "\""))
      << daemon_->Log();
  // The first daemon's sessions end; none of this one's ever start.
  EXPECT_TRUE(WaitFor([&] {
    return admin_->Scalar(
               "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'tenantcached %'") == "0";
  }));
}

// A name the name server does not know: the log names it and says why.
TEST_F(ResolveTest, AnUnresolvableNameIsNamedInTheLog) {
  Start(TcpConninfo("nowhere.tenantcache.test", "sslmode=disable"));
  EXPECT_TRUE(
      LogShows("listener not connected (cannot resolve host name \"nowhere.tenantcache.test\": unknown node "
               "or service)"))
      << daemon_->Log();
}

// The loaders' and heartbeat's host name takes 4 s to (fail to) resolve,
// again at every retry; the listener connects through the unix socket. While
// lookups are outstanding, the daemon answers every control request at once
// (a lookup inside the loop would hold each for seconds).
TEST_F(ResolveTest, TheLoopStaysResponsiveWhileAResolutionHangs) {
  dns_->set_delay(4s);
  Start(TcpConninfo("slow.tenantcache.test", "sslmode=disable"),
        "listener_conninfo = \"" + SharedCluster().Conninfo(db_) + "\"\n");
  // The control socket is up (after the start's query check, which waits
  // for its own lookup), and the loaders' and heartbeat's lookups go on.
  ASSERT_TRUE(WaitFor([&] { return !DaemonStats(*daemon_).empty(); }, 20s)) << daemon_->Log();
  ASSERT_TRUE(WaitFor([&] { return dns_->outstanding() > 0; })) << daemon_->Log();
  const auto window = Clock::now();
  Clock::duration slowest{};
  int answered = 0;
  while (Clock::now() - window < 3s) {
    const auto sent = Clock::now();
    const auto stats = DaemonStats(*daemon_);
    slowest = std::max(slowest, Clock::now() - sent);
    if (!stats.empty()) ++answered;
    std::this_thread::sleep_for(50ms);  // request pacing, not synchronisation
  }
  EXPECT_GT(dns_->outstanding(), 0) << "no lookup was outstanding all along: the test proves nothing";
  EXPECT_GT(answered, 20);
  EXPECT_LT(slowest, 500ms) << "a control request waited "
                            << std::chrono::duration_cast<std::chrono::milliseconds>(slowest).count()
                            << " ms";
  EXPECT_TRUE(LogShows("cannot resolve host name \"slow.tenantcache.test\": unknown node or service", 20s))
      << daemon_->Log();
}

// Every lookup takes 1 s, longer than a heartbeat tick (200 ms), and then
// succeeds: the connections come up all the same (a lookup under way is let
// finish, not started over at every tick), and lookups are served.
TEST_F(ResolveTest, ALookupSlowerThanAHeartbeatTickStillConnects) {
  dns_->set_delay(1s);
  Start(TcpConninfo("found-slowly.tenantcache.test", "sslmode=disable"));
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();
  EXPECT_TRUE(Contains(daemon_->Log(), "resolved host name \"found-slowly.tenantcache.test\" to 127.0.0.1"))
      << daemon_->Log();
  ASSERT_EQ(LookupUser(1), TC_FOUND);
  // The heartbeat connection is up and its heartbeats come back: the cache
  // stays available well past stale_after (2 s).
  const uint64_t start = std::stoull(DaemonStats(*daemon_).at("heartbeats_received"));
  ASSERT_TRUE(WaitFor([&] {
    const auto stats = DaemonStats(*daemon_);
    return std::stoull(stats.at("heartbeats_received")) >= start + 15;
  })) << daemon_->Log();
  tc_info info;
  tc_cache_info(cache_, &info);
  EXPECT_EQ(info.available, 1);
}

}  // namespace
}  // namespace tenantcache::test
