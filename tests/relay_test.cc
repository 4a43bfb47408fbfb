// Relaying through Redis (daemon/relay.h) with a real redis-server, real
// relays and subscribers (the daemon binary) on one database: a subscriber
// serves and sees every change without LISTENing, fails closed within the
// bound when its relay dies, Redis restarts or stops answering, catches up
// from the invalidation log when the stream comes back, stays synced
// through one of two relays restarting, and rejects what it cannot verify.
#include "relay.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "shared_heartbeat.h"
#include "support/daemon_process.h"
#include "support/fleet_test.h"
#include "support/pg_cluster.h"
#include "support/redis_server.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class RelayTest : public FleetTest {
 protected:
  struct Member {
    TempDir dir;
    std::unique_ptr<DaemonProcess> daemon;
  };

  // A relay or subscriber; `keys` adds to its [[source]] table.
  Member& Add(const std::string& role, bool wait_ready = true, const std::string& keys = "") {
    members_.push_back(std::make_unique<Member>());
    Member& m = *members_.back();
    m.daemon = std::make_unique<DaemonProcess>(
        m.dir.path(),
        FleetConfig(m.dir.path(), Conninfo(), "",
                    "redis = \"" + redis_.address() + "\"\nredis_role = \"" + role + "\"\n" + keys));
    if (wait_ready) {
      EXPECT_TRUE(m.daemon->WaitReady()) << m.daemon->Log();
    }
    return m;
  }
  static std::string Stat(const Member& m, const char* key) {
    const auto stats = DaemonStats(*m.daemon);
    return stats.count(key) != 0 ? stats.at(key) : "<absent>";
  }
  static bool Has(const Member& m, const std::string& text) {
    return m.daemon->Log().find(text) != std::string::npos;
  }
  // The cache of `m`, for reads.
  tc_cache* Open(const Member& m) {
    tc_cache* c = nullptr;
    EXPECT_EQ(tc_cache_open(m.daemon->cache_path().c_str(), &c), 0);
    opened_.push_back(c);
    return c;
  }
  static int Get(tc_cache* c, const std::string& key, std::string* role = nullptr) {
    tc_ns ns = 0;
    tc_namespace(c, "user", &ns);
    tc_value v;
    const int st = tc_cache_get(c, ns, key.data(), key.size(), &v);
    if (st == TC_FOUND && role != nullptr) *role = FieldOf(v, "role");
    return st;
  }
  static int Lookup(tc_cache* c, const std::string& key, std::string* role = nullptr) {
    tc_ns ns = 0;
    tc_namespace(c, "user", &ns);
    tc_value v;
    const int st = tc_cache_lookup(c, ns, key.data(), key.size(), 5000, &v);
    if (st == TC_FOUND && role != nullptr) *role = FieldOf(v, "role");
    return st;
  }
  void SetRole(int user, const std::string& role) {
    admin_->Exec("UPDATE fleet.user_accounts SET role = '" + role + "' WHERE id = '" + UserId(user) + "'");
  }

  void TearDown() override {
    for (tc_cache* c : opened_) tc_cache_close(c);
    if (HasFailure()) {
      for (const auto& m : members_)
        std::fprintf(stderr, "--- daemon ---\n%s\n", Tail(m->daemon->Log()).c_str());
      std::fprintf(stderr, "--- redis ---\n%s\n", Tail(redis_.Log()).c_str());
    }
    members_.clear();
    FleetTest::TearDown();
  }

  RedisServer redis_;
  std::vector<std::unique_ptr<Member>> members_;
  std::vector<tc_cache*> opened_;
};

TEST_F(RelayTest, ASubscriberServesAndSeesEveryChangeThroughTheRelayWithoutListening) {
  Member& relay = Add("relay");
  Member& sub = Add("subscribe");
  tc_cache* c = Open(sub);
  std::string role;
  ASSERT_EQ(Lookup(c, UserId(1), &role), TC_FOUND);
  SetRole(1, role == "guest" ? "crew" : "guest");
  const std::string changed = role == "guest" ? "crew" : "guest";
  ASSERT_TRUE(WaitFor([&] { return Get(c, UserId(1)) == TC_MISS; }))
      << "the change never reached the subscriber";
  ASSERT_EQ(Lookup(c, UserId(1), &role), TC_FOUND);
  EXPECT_EQ(role, changed);
  // A tenant message too.
  ASSERT_EQ(Lookup(c, UserId(2)), TC_FOUND);
  admin_->Exec(
      "SELECT tenantcache.invalidate_tenant((SELECT yacht_id::text FROM fleet.user_accounts WHERE id = '" +
      UserId(2) + "'))");
  ASSERT_TRUE(WaitFor([&] { return Get(c, UserId(2)) == TC_MISS; }));

  EXPECT_EQ(Stat(sub, "subscriber_sources"), "1");
  EXPECT_EQ(Stat(sub, "heartbeats_sent"), "0") << "a subscriber never NOTIFYs";
  EXPECT_NE(Stat(sub, "joined_relay_sessions"), "0");
  EXPECT_NE(Stat(relay, "relayed_published"), "0");
  EXPECT_EQ(Stat(sub, "relayed_rejected"), "0");
  EXPECT_TRUE(Has(sub, "subscribed to Redis " + redis_.address() + " channel tenantcache"));
  EXPECT_TRUE(Has(relay, "relaying to Redis " + redis_.address() + " channel tenantcache"));
  EXPECT_NE(Stat(sub, "relayed_received"), "0");
  const std::string status =
      RunCommand(std::string(TC_CTL_BIN) + " --cache " + sub.daemon->cache_path() + " status").output;
  EXPECT_NE(status.find("redis           subscriber, subscribed, 1 joined relay session(s)"),
            std::string::npos)
      << status;
}

// A burst (one transaction's notifications, delivered to the relay at once)
// reaches Redis in a few messages, not one per notification, and the
// subscriber applies every notification in them: the invalidations that
// come last in the burst too.
TEST_F(RelayTest, ABurstIsPublishedInBatchesAndTheSubscriberAppliesEveryNotification) {
  Member& relay = Add("relay");
  Member& sub = Add("subscribe");
  tc_cache* c = Open(sub);
  constexpr int kUsers = 40, kPadding = 2000;
  for (int u = 1; u <= kUsers; ++u) ASSERT_EQ(Lookup(c, UserId(u)), TC_FOUND);
  const auto stat = [](const Member& m, const char* key) { return std::stoull(Stat(m, key)); };
  const uint64_t published = stat(relay, "relayed_published"), relayed = stat(relay, "relayed_notifications");
  const uint64_t received = stat(sub, "notifications");
  // Distinct payloads (PostgreSQL folds identical ones within a
  // transaction): heartbeat tokens no daemon sent, which change nothing.
  std::string burst = "BEGIN; SELECT pg_notify('tenantcache', '1 h burst-' || i) FROM generate_series(1, " +
                      std::to_string(kPadding) + ") i;";
  for (int u = 1; u <= kUsers; ++u) burst += " SELECT tenantcache.invalidate('user', '" + UserId(u) + "');";
  admin_->Exec(burst + " COMMIT");
  ASSERT_TRUE(WaitFor([&] {
    for (int u = 1; u <= kUsers; ++u)
      if (Get(c, UserId(u)) != TC_MISS) return false;
    return true;
  })) << "an invalidation at the end of the burst never reached the subscriber";
  const uint64_t notes = stat(relay, "relayed_notifications") - relayed;
  const uint64_t messages = stat(relay, "relayed_published") - published;
  EXPECT_GE(notes, static_cast<uint64_t>(kPadding + kUsers));
  EXPECT_LE(messages * 4, notes) << messages << " messages for " << notes << " notifications";
  EXPECT_GE(stat(sub, "notifications") - received, static_cast<uint64_t>(kPadding + kUsers));
  EXPECT_EQ(Stat(sub, "relayed_rejected"), "0");
  EXPECT_EQ(Stat(sub, "relay_gaps"), "0");
  EXPECT_EQ(Stat(sub, "synced"), "true");
}

// Reads through `c` until `until` holds; the time from `since` to the first
// read that found the cache unavailable (or nullopt).
std::optional<Clock::duration> FirstUnavailable(tc_cache* c, const std::string& key, Clock::time_point since,
                                                const std::function<bool()>& until) {
  tc_ns ns = 0;
  tc_namespace(c, "user", &ns);
  tc_value v;
  const auto deadline = Clock::now() + 15s;
  std::optional<Clock::duration> first;
  while (Clock::now() < deadline) {
    if (!first && tc_cache_get(c, ns, key.data(), key.size(), &v) == TC_E_UNAVAILABLE)
      first = Clock::now() - since;
    if (first && until()) break;
  }
  return first;
}

TEST_F(RelayTest, ARelayKilledFailsTheSubscriberClosedWithinTheBoundAndANewRelayCatchesItUp) {
  Member& relay = Add("relay");
  Member& sub = Add("subscribe");
  tc_cache* c = Open(sub);
  ASSERT_EQ(Lookup(c, UserId(1)), TC_FOUND);
  relay.daemon->Signal(SIGKILL);
  ASSERT_TRUE(relay.daemon->Wait().has_value());
  const auto killed = Clock::now();
  const auto first = FirstUnavailable(c, UserId(1), killed, [] { return true; });
  ASSERT_TRUE(first.has_value()) << "still served with no relay";
  EXPECT_LT(*first, 2s + 100ms) << "served past stale_after (2s) after the relay died";
  // A change while no relay runs: nothing carries it to the subscriber but
  // the log it replays once a relay is back.
  std::string role;
  ASSERT_EQ(Lookup(c, UserId(3), &role), TC_E_UNAVAILABLE);
  const std::string before =
      admin_->Scalar("SELECT role FROM fleet.user_accounts WHERE id = '" + UserId(1) + "'");
  const std::string after = before == "guest" ? "crew" : "guest";
  SetRole(1, after);
  Add("relay");
  ASSERT_TRUE(WaitFor([&] { return Get(c, UserId(1)) != TC_E_UNAVAILABLE; }, 15s)) << "never synced again";
  ASSERT_EQ(Lookup(c, UserId(1), &role), TC_FOUND);
  EXPECT_EQ(role, after) << "the change made while the stream was down was served stale";
}

// Redis is killed while the relay publishes (writes keep it busy): its
// connection is reset, which the relay must notice to publish again.
TEST_F(RelayTest, ARedisRestartFailsTheSubscriberClosedAndItCatchesUpFromTheLog) {
  Member& relay = Add("relay");
  Member& sub = Add("subscribe");
  tc_cache* c = Open(sub);
  ASSERT_EQ(Lookup(c, UserId(1)), TC_FOUND);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    PgConn w(Conninfo());
    for (int i = 0; !stop; ++i)
      w.Exec("UPDATE fleet.user_accounts SET role = '" + std::string(i % 2 ? "crew" : "guest") +
             "' WHERE id = '" + UserId(40) + "'");
  });
  ASSERT_TRUE(WaitFor([&] { return std::stoull(Stat(relay, "relayed_published")) > 200; }));
  redis_.Stop();
  const auto stopped = Clock::now();
  const std::string before =
      admin_->Scalar("SELECT role FROM fleet.user_accounts WHERE id = '" + UserId(1) + "'");
  const std::string after = before == "guest" ? "crew" : "guest";
  SetRole(1, after);
  const auto first = FirstUnavailable(c, UserId(1), stopped, [] { return true; });
  ASSERT_TRUE(first.has_value());
  EXPECT_LT(*first, 2s + 100ms);
  redis_.Start();
  const bool synced = WaitFor([&] { return Get(c, UserId(1)) != TC_E_UNAVAILABLE; }, 20s);
  stop = true;
  writer.join();
  ASSERT_TRUE(synced) << "never synced again";
  std::string role;
  ASSERT_EQ(Lookup(c, UserId(1), &role), TC_FOUND);
  EXPECT_EQ(role, after);
  EXPECT_NE(Stat(sub, "reconnects"), "0");
  EXPECT_EQ(Stat(relay, "relay_sessions"), "2") << "the relay began a new session on the new Redis";
}

// Redis stops answering (SIGSTOP) with every connection open: nothing
// arrives, nothing is proven, the subscriber fails closed within the bound.
TEST_F(RelayTest, ARedisThatStopsAnsweringFailsTheSubscriberClosedWithinTheBound) {
  Member& relay = Add("relay");
  Member& sub = Add("subscribe");
  tc_cache* c = Open(sub);
  ASSERT_EQ(Lookup(c, UserId(1)), TC_FOUND);
  redis_.Pause();
  const auto paused = Clock::now();
  const auto first = FirstUnavailable(c, UserId(1), paused, [] { return true; });
  // The relay gives its connection up once a PUBLISH has waited longer than
  // stale_after (2 s here), rather than buffering into it.
  const bool relay_gave_up = WaitFor([&] { return Has(relay, "Redis answered no PUBLISH for"); }, 3s);
  redis_.Resume();
  ASSERT_TRUE(first.has_value());
  EXPECT_LT(*first, 2s + 100ms);
  EXPECT_TRUE(relay_gave_up) << Tail(relay.daemon->Log());
  ASSERT_TRUE(WaitFor([&] { return Get(c, UserId(1)) != TC_E_UNAVAILABLE; }, 20s)) << "never synced again";
  (void)sub;
}

TEST_F(RelayTest, TwoRelaysKeepTheSubscriberSyncedWhileOneIsKilledAndReplaced) {
  Member& first_relay = Add("relay");
  Add("relay");
  Member& sub = Add("subscribe");
  ASSERT_TRUE(WaitFor([&] { return Stat(sub, "joined_relay_sessions") == "2"; }, 10s))
      << Stat(sub, "joined_relay_sessions");
  tc_cache* c = Open(sub);
  ASSERT_EQ(Lookup(c, UserId(1)), TC_FOUND);
  first_relay.daemon->Signal(SIGKILL);
  ASSERT_TRUE(first_relay.daemon->Wait().has_value());
  const auto killed = Clock::now();
  int unavailable = 0, reads = 0;
  std::string role;
  while (Clock::now() - killed < 3s) {
    ++reads;
    if (Get(c, UserId(1)) == TC_E_UNAVAILABLE) ++unavailable;
  }
  EXPECT_EQ(unavailable, 0) << "of " << reads << " reads while one of two relays was dead";
  // Changes still arrive, through the other relay.
  ASSERT_EQ(Lookup(c, UserId(2), &role), TC_FOUND);
  SetRole(2, role == "guest" ? "crew" : "guest");
  ASSERT_TRUE(WaitFor([&] { return Get(c, UserId(2)) == TC_MISS; }));
  // A replacement's session is joined without the subscriber going unsynced.
  Add("relay");
  ASSERT_TRUE(WaitFor([&] { return Stat(sub, "joined_relay_sessions") == "3"; }, 10s))
      << Stat(sub, "joined_relay_sessions");
  EXPECT_EQ(Stat(sub, "reconnects"), "0");
}

// Anyone who can PUBLISH on the Redis channel: forged messages (a heartbeat
// claiming everything far ahead, a flush) are rejected, counted and logged,
// and the subscriber goes on as before.
TEST_F(RelayTest, MessagesThatDoNotVerifyAreRejected) {
  Add("relay");
  Member& sub = Add("subscribe");
  tc_cache* c = Open(sub);
  ASSERT_EQ(Lookup(c, UserId(1)), TC_FOUND);
  const std::string flushes = Stat(sub, "flushes");
  for (const char* forged :
       {"'1 0123456789abcdef 1 00000000000000000000000000000000 1 h 2 99999999999:99999999999: "
        "00000000000000000000000000000000'",
        "'1 0123456789abcdef 2 00000000000000000000000000000000 1 f -'", "'garbage'"})
    redis_.Cli(std::string("PUBLISH tenantcache ") + forged);
  ASSERT_TRUE(WaitFor([&] { return Stat(sub, "relayed_rejected") == "3"; })) << Stat(sub, "relayed_rejected");
  EXPECT_TRUE(Has(sub, "that does not verify (bad signature): whoever can PUBLISH there is not a relay"));
  EXPECT_EQ(Stat(sub, "flushes"), flushes);
  EXPECT_EQ(Get(c, UserId(1)), TC_FOUND);
}

// A Redis that requires AUTH: a relay authenticating as an ACL user, a
// subscriber as the default user, each with its password in a file. A wrong
// password or none is named in the log (never the password itself), and
// that subscriber never serves.
TEST_F(RelayTest, PasswordsAndAclUsersAuthenticateAndAWrongOneIsNamed) {
  redis_.Cli("ACL SETUSER tcrelay on '>relay-secret-pw' '~*' '&*' '+@all'");  // quoted: a shell runs it
  redis_.Cli("CONFIG SET requirepass default-secret-pw");
  TempDir secrets;
  const auto secret = [&](const std::string& name, const std::string& password) {
    std::ofstream(secrets.File(name)) << password << "\n";
    chmod(secrets.File(name).c_str(), 0600);
    return "redis_password_file = \"" + secrets.File(name) + "\"\n";
  };
  Member& relay = Add("relay", true, "redis_user = \"tcrelay\"\n" + secret("relay", "relay-secret-pw"));
  Member& sub = Add("subscribe", true, secret("default", "default-secret-pw"));
  tc_cache* c = Open(sub);
  std::string role;
  ASSERT_EQ(Lookup(c, UserId(1), &role), TC_FOUND);
  const std::string next = role == "guest" ? "crew" : "guest";
  SetRole(1, next);
  ASSERT_TRUE(WaitFor([&] { return Lookup(c, UserId(1), &role) == TC_FOUND && role == next; }))
      << "a change through an authenticated relay";
  EXPECT_NE(Stat(relay, "relayed_published"), "0");

  Member& wrong = Add("subscribe", false, secret("wrong", "wrong-secret-4711"));
  Member& none = Add("subscribe", false);
  ASSERT_TRUE(WaitFor([&] { return Has(wrong, "Redis refused AUTH: WRONGPASS"); }, 10s))
      << Tail(wrong.daemon->Log());
  EXPECT_TRUE(Has(wrong, "check redis_user and redis_password_file"));
  EXPECT_FALSE(Has(wrong, "wrong-secret-4711")) << "the password reached the log";
  ASSERT_TRUE(WaitFor([&] { return Has(none, "NOAUTH"); }, 10s)) << Tail(none.daemon->Log());
  EXPECT_TRUE(Has(none, "Redis requires a password: set redis_password_file"));
  for (Member* m : {&wrong, &none}) {
    tc_cache* mc = Open(*m);
    EXPECT_EQ(Lookup(mc, UserId(2)), TC_E_UNAVAILABLE) << "a subscriber that cannot authenticate served";
  }
  for (const Member* m : {&relay, &sub}) EXPECT_FALSE(Has(*m, "secret-pw")) << "a password reached the log";
}

// Whoever can PUBLISH on the channel sees genuine batches, and any database
// role can choose a payload in one (a NOTIFY of its own). Cutting a batch
// at other boundaries signs the same text: a session that carries a NUL
// takes the number, a decimal first payload stands as the number. Such a
// message is refused as malformed, never taken as a session of its own.
TEST(RelayMessages, ABatchCutAtOtherBoundariesDoesNotVerify) {
  const HeartbeatKey key("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
  const std::vector<std::string> payloads = {"12345", "1 k - user someone", "1 h token"};
  const std::string genuine = EncodeRelayed(key, "tenantcache", "0123456789abcdef", 7, payloads);
  std::string why;
  const auto m = DecodeRelayed(key, "tenantcache", genuine, &why);
  ASSERT_TRUE(m.has_value()) << why;
  EXPECT_EQ(m->payloads, payloads);
  // "2 S N MAC p1\0p2\0p3" recut as "2 S\0N p1 MAC p2\0p3".
  const size_t mac_at = std::string("2 0123456789abcdef 7 ").size();
  const std::string mac = genuine.substr(mac_at, genuine.find(' ', mac_at) - mac_at);
  const std::string recut = std::string("2 0123456789abcdef") + '\0' + "7 12345 " + mac +
                            " 1 k - user someone" + '\0' + "1 h token";
  EXPECT_FALSE(DecodeRelayed(key, "tenantcache", recut, &why).has_value());
  EXPECT_EQ(why, "malformed relayed message");
}

TEST(RelayConfig, ARelayOrSubscriberMisconfiguredIsNamed) {
  TempDir dir;
  const auto check = [&](const std::string& source) {
    std::ofstream(dir.File("t.toml")) << FleetConfig(dir.path(), "dbname=x", "", source);
    return RunDaemonCommand("--check-config --config " + dir.File("t.toml")).output;
  };
  EXPECT_NE(
      check("redis_role = \"relay\"\n").find("source[0].redis_role: needs redis, the Redis server's address"),
      std::string::npos);
  EXPECT_NE(check("redis = \"127.0.0.1:6379\"\n").find("source[0].redis: is set but redis_role is not"),
            std::string::npos);
  EXPECT_NE(check("redis = \"redis.internal:6379\"\nredis_role = \"relay\"\n")
                .find("is not one: the daemon does "
                      "not resolve host names"),
            std::string::npos);
  EXPECT_NE(check("redis = \"127.0.0.1:6379\"\nredis_role = \"publisher\"\n")
                .find("must be \"relay\", \"subscribe\" or \"\""),
            std::string::npos);
  const std::string relay = "redis = \"127.0.0.1:6379\"\nredis_role = \"relay\"\n";
  EXPECT_NE(check(relay + "redis_password_file = \"" + dir.File("absent") + "\"\n")
                .find("source[0].redis_password_file: cannot read " + dir.File("absent") +
                      ": No such file or directory"),
            std::string::npos);
  std::ofstream(dir.File("empty")) << "\n";
  EXPECT_NE(check(relay + "redis_password_file = \"" + dir.File("empty") + "\"\n")
                .find("holds no password on its first line"),
            std::string::npos);
  EXPECT_NE(check(relay + "redis_user = \"tcrelay\"\n")
                .find("source[0].redis_user: needs redis_password_file, the user's password"),
            std::string::npos);
  EXPECT_NE(check("redis_password_file = \"" + dir.File("empty") + "\"\n")
                .find("source[0].redis_password_file: needs redis, the Redis server's address"),
            std::string::npos);
}

}  // namespace
}  // namespace tenantcache::test
