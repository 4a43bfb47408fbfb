// Shared heartbeats (daemon/shared_heartbeat.h): the proof a heartbeat
// carries, checked on its own; then fleets of real daemons on one database:
// a couple of heartbeats an interval whatever the fleet's size, a killed
// leader replaced without any daemon losing its sync, a role that takes the
// leader slots unable to silence the fleet, daemons that cannot share (an
// older schema's behaviour, or no grant on the key) side by side with those
// that do.
#include "shared_heartbeat.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/daemon_process.h"
#include "support/fleet_test.h"
#include "support/pg_cluster.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache::test {
namespace {

using namespace std::chrono_literals;

TxidSnapshot Snap(const char* text) {
  const auto s = TxidSnapshot::Parse(text);
  EXPECT_TRUE(s.has_value()) << text;
  return s.value_or(TxidSnapshot{});
}

TEST(TxidSnapshot, ParsesWhatPostgresPrintsAndNothingElse) {
  const TxidSnapshot s = Snap("100:105:100,102");
  EXPECT_EQ(s.xmin, 100u);
  EXPECT_EQ(s.xmax, 105u);
  EXPECT_EQ(s.xip, (std::vector<uint64_t>{100, 102}));
  EXPECT_TRUE(TxidSnapshot::Parse("7:7:").has_value());
  for (const char* bad : {"", "1:2", "1:2:3:", "2:1:", "1:5:0", "1:5:5", "1:5:3,2", "1:5:3,3",
                          "a:5:", "1:5:3,", "1:99999999999999999999999:", "-1:5:"})
    EXPECT_FALSE(TxidSnapshot::Parse(bad).has_value()) << bad;
}

TEST(TxidSnapshot, ALaterSnapshotCoversAnEarlierOneDespiteALongTransaction) {
  // 100 runs for long: both see it in progress; 101-103 finished between.
  EXPECT_TRUE(Snap("100:110:100,105").Covers(Snap("100:104:100,101,103")));
  // Taken before: 103 was visible to the probe and is in progress here.
  EXPECT_FALSE(Snap("100:104:100,103").Covers(Snap("100:106:100")));
  // A probe that saw more than the heartbeat's snapshot (xmax beyond it).
  EXPECT_FALSE(Snap("100:104:100").Covers(Snap("100:106:100")));
  // What an oversized snapshot is reduced to claims only what precedes xmin.
  EXPECT_TRUE(Snap("104:104:").Covers(Snap("90:104:100,101")));
  EXPECT_FALSE(Snap("104:104:").Covers(Snap("90:105:100")));
}

TEST(SharedHeartbeats, OnlyASignedSnapshotProvesAndItProvesTheProbesItCovers) {
  SharedHeartbeats hb("tenantcache", 1);
  hb.SetKey(HeartbeatKey("\\x00112233445566778899aabbccddeeff"));
  const auto now = SharedHeartbeats::Clock::now();
  // Two probes; a follower (no slot) heard a heartbeat just now: sends nothing.
  EXPECT_EQ(hb.Ticked(1000, "100:104:100", 0, 42, now, now, 200ms), "");
  EXPECT_EQ(hb.Ticked(2000, "100:108:100", 0, 42, now, now, 200ms), "");
  // A leader's heartbeat over a snapshot between the two probes.
  const HeartbeatKey key("00112233445566778899aabbccddeeff");  // the same key, without bytea's "\x"
  const std::string genuine = SharedHeartbeatPayload(key, "tenantcache", "100:105:100");
  ASSERT_EQ(genuine.rfind("1 h 2 100:105:100 ", 0), 0u) << genuine;
  const std::string value = genuine.substr(4);
  ASSERT_TRUE(IsSharedHeartbeat(value));

  std::string why;
  // The same signature over a snapshot claiming more; another channel's; another key's.
  const std::string mac = value.substr(value.rfind(' ') + 1);
  EXPECT_FALSE(hb.Received("2 100:200:100 " + mac, &why));
  EXPECT_EQ(why, "bad signature");
  EXPECT_FALSE(hb.Received(SharedHeartbeatPayload(key, "other", "100:105:100").substr(4), &why));
  EXPECT_FALSE(
      hb.Received(SharedHeartbeatPayload(HeartbeatKey("ff"), "tenantcache", "100:105:100").substr(4), &why));
  EXPECT_FALSE(hb.Received("2 100:105:100", &why));
  EXPECT_FALSE(hb.Received("2 garbage " + mac, &why));

  const auto proof = hb.Received(value, &why);
  ASSERT_TRUE(proof.has_value()) << why;
  EXPECT_EQ(proof->proven_ns, 1000u);  // the first probe only
  EXPECT_EQ(proof->snapshot, "100:105:100");
  // Replayed, it proves nothing more.
  const auto replay = hb.Received(value, &why);
  ASSERT_TRUE(replay.has_value());
  EXPECT_EQ(replay->proven_ns, 0u);
  // A later one proves the second probe.
  const auto later = hb.Received(SharedHeartbeatPayload(key, "tenantcache", "101:109:").substr(4), &why);
  ASSERT_TRUE(later.has_value());
  EXPECT_EQ(later->proven_ns, 2000u);
}

TEST(SharedHeartbeats, ALeaderSendsEveryTickAFollowerOnlyWhenItHeardNoneForAWhile) {
  SharedHeartbeats hb("tenantcache", 2);
  hb.SetKey(HeartbeatKey("abcd"));
  const auto now = SharedHeartbeats::Clock::now();
  EXPECT_NE(hb.Ticked(1, "1:1:", 1, 42, now, now, 200ms), "");  // holds slot 1
  EXPECT_EQ(hb.TickParams(42), (std::vector<std::optional<std::string>>{"1", "tenantcache"}));
  // Another backend (the heartbeat connection was replaced): the slot went with the old session.
  EXPECT_EQ(hb.TickParams(43), (std::vector<std::optional<std::string>>{"0", "tenantcache"}));
  EXPECT_EQ(hb.Ticked(2, "1:1:", 0, 43, now, now - 240ms, 200ms), "");  // under 1.25 intervals
  EXPECT_NE(hb.Ticked(3, "1:1:", 0, 43, now, now - 360ms, 200ms), "");  // over 1.75
  // An oversized snapshot is sent as what precedes its xmin.
  std::string big = "1000:900000:";
  for (int x = 1000; x < 3000; ++x) big += (x > 1000 ? "," : "") + std::to_string(x);
  const std::string payload = SharedHeartbeatPayload(HeartbeatKey("abcd"), "tenantcache", big);
  EXPECT_LT(payload.size(), 8000u);
  EXPECT_EQ(payload.rfind("1 h 2 1000:1000: ", 0), 0u);
}

// N daemons on one database, each with its own directory.
class SharedHeartbeatFleetTest : public FleetTest {
 protected:
  struct Member {
    TempDir dir;
    std::unique_ptr<DaemonProcess> daemon;
  };

  // Starts a daemon; `stale_after` replaces the fleet config's 2s.
  Member& Add(const std::string& stale_after = "2s", const std::string& conninfo = "") {
    members_.push_back(std::make_unique<Member>());
    Member& m = *members_.back();
    std::string config = FleetConfig(m.dir.path(), conninfo.empty() ? Conninfo() : conninfo);
    const std::string from = "stale_after = \"2s\"";
    config.replace(config.find(from), from.size(), "stale_after = \"" + stale_after + "\"");
    m.daemon = std::make_unique<DaemonProcess>(m.dir.path(), config);
    EXPECT_TRUE(m.daemon->WaitReady()) << m.daemon->Log();
    return m;
  }

  static uint64_t Stat(const Member& m, const char* key) {
    const auto stats = DaemonStats(*m.daemon);
    return stats.count(key) != 0 ? std::stoull(stats.at(key)) : UINT64_MAX;
  }
  uint64_t Sum(const char* key) const {
    uint64_t sum = 0;
    for (const auto& m : members_) sum += Stat(*m, key);
    return sum;
  }
  // Heartbeats on the channel within `window`: shared ones and own tokens.
  struct Counted {
    size_t shared = 0, own = 0;
  };
  Counted CountHeartbeats(std::chrono::milliseconds window) {
    PgListener spy(Conninfo(), "tenantcache");
    Counted c;
    for (const auto& p : spy.Drain(window)) {
      if (p.rfind("1 h 2 ", 0) == 0)
        ++c.shared;
      else if (p.rfind("1 h ", 0) == 0)
        ++c.own;
    }
    return c;
  }
  void TearDown() override {
    if (HasFailure())
      for (const auto& m : members_)
        std::fprintf(stderr, "--- daemon ---\n%s\n", Tail(m->daemon->Log()).c_str());
    members_.clear();
    FleetTest::TearDown();
  }

  std::vector<std::unique_ptr<Member>> members_;
};

TEST_F(SharedHeartbeatFleetTest, AFleetSendsTwoHeartbeatsAnIntervalWhateverItsSize) {
  for (int i = 0; i < 6; ++i) Add();
  // 2 s: 10 intervals of 200 ms. Six daemons each sending their own would be 60.
  const Counted c = CountHeartbeats(2s);
  EXPECT_EQ(c.own, 0u);
  EXPECT_GE(c.shared, 8u) << "the leaders send every interval";
  EXPECT_LE(c.shared, 24u) << "two leaders, one heartbeat an interval each (and a fallback now and then)";
  EXPECT_TRUE(WaitFor([&] { return Sum("heartbeat_leader_slots") == 2; }));
  for (const auto& m : members_) {
    EXPECT_EQ(Stat(*m, "shared_heartbeat_sources"), 1u);
    EXPECT_GE(Stat(*m, "heartbeats_received"), 8u) << "every daemon hears the leaders";
    EXPECT_EQ(Stat(*m, "reconnects"), 0u);
    EXPECT_EQ(Stat(*m, "heartbeats_rejected"), 0u);
    EXPECT_NE(m->daemon->Log().find("heartbeats: shared with the other daemons"), std::string::npos);
  }
  // Followers send (next to) nothing.
  size_t silent = 0;
  for (const auto& m : members_) silent += Stat(*m, "heartbeats_sent") <= 2 ? 1 : 0;
  EXPECT_GE(silent, 3u);
}

// Reads a cached user through `m`'s file in a thread until stopped; counts
// the reads that found the cache unavailable.
class Reader {
 public:
  explicit Reader(const std::string& path) {
    thread_ = std::thread([this, path] {
      tc_cache* c = nullptr;
      if (tc_cache_open(path.c_str(), &c) != 0) return;
      tc_ns ns = 0;
      tc_namespace(c, "user", &ns);
      const std::string key = UserId(1);
      tc_value v;
      tc_cache_lookup(c, ns, key.data(), key.size(), 5000, &v);
      while (!stop_) {
        const int st = tc_cache_get(c, ns, key.data(), key.size(), &v);
        ++reads_;
        if (st == TC_E_UNAVAILABLE) ++unavailable_;
        std::this_thread::sleep_for(1ms);  // a reader's pace, not a synchronisation
      }
      tc_cache_close(c);
    });
  }
  ~Reader() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int reads() const { return reads_; }
  int unavailable() const { return unavailable_; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> reads_{0}, unavailable_{0};
  std::thread thread_;
};

TEST_F(SharedHeartbeatFleetTest, AKilledLeaderIsReplacedAndNoDaemonLosesItsSync) {
  for (int i = 0; i < 4; ++i) Add();
  ASSERT_TRUE(WaitFor([&] { return Sum("heartbeat_leader_slots") == 2; }));
  Member* leader = nullptr;
  for (const auto& m : members_)
    if (Stat(*m, "heartbeat_leader_slots") == 1) leader = m.get();
  ASSERT_NE(leader, nullptr);
  std::vector<std::unique_ptr<Reader>> readers;
  for (const auto& m : members_)
    if (m.get() != leader) readers.push_back(std::make_unique<Reader>(m->daemon->cache_path()));
  ASSERT_TRUE(WaitFor([&] {
    for (const auto& r : readers)
      if (r->reads() < 100) return false;
    return true;
  }));

  leader->daemon->Signal(SIGKILL);
  ASSERT_TRUE(leader->daemon->Wait().has_value());
  // Its session ends with it, and with the session its slot; another takes it.
  auto others_hold = [&] {
    uint64_t slots = 0;
    for (const auto& m : members_)
      if (m.get() != leader) slots += Stat(*m, "heartbeat_leader_slots");
    return slots;
  };
  ASSERT_TRUE(WaitFor([&] { return others_hold() == 2; }, 10s));
  // A few more intervals with the new leader.
  const Counted c = CountHeartbeats(1s);
  EXPECT_GE(c.shared, 4u);
  for (auto& r : readers) {
    r->Stop();
    EXPECT_EQ(r->unavailable(), 0) << "of " << r->reads() << " reads";
  }
  for (const auto& m : members_) {
    if (m.get() != leader) {
      EXPECT_EQ(Stat(*m, "reconnects"), 0u);
    }
  }
}

// A daemon whose own probes stop (its heartbeat connection's backend
// stopped) while the others' heartbeats keep arriving: nothing proves its
// cache current, so its readers fail closed within the bound, and it starts
// its connections afresh and serves again while that backend stays stopped.
TEST_F(SharedHeartbeatFleetTest, ADaemonWhoseProbesStopFailsClosedAndRecoversWhileHeartbeatsStillArrive) {
  Member& a = Add();
  // Its heartbeat connection connects beside the listener: wait for it.
  std::string pid;
  ASSERT_TRUE(WaitFor([&] {
    const auto rows = admin_->Exec(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = "
        "'tenantcached heartbeat main'");
    if (rows.size() != 1) return false;
    pid = rows[0][0];
    return true;
  }));
  Add();
  Add();
  tc_cache* c = nullptr;
  ASSERT_EQ(tc_cache_open(a.daemon->cache_path().c_str(), &c), 0);
  tc_ns ns = 0;
  ASSERT_EQ(tc_namespace(c, "user", &ns), 0);
  const std::string key = UserId(1);
  tc_value v;
  ASSERT_EQ(tc_cache_lookup(c, ns, key.data(), key.size(), 5000, &v), TC_FOUND);

  ASSERT_EQ(kill(std::stoi(pid), SIGSTOP), 0);
  const auto stopped = std::chrono::steady_clock::now();
  struct Resume {
    int pid;
    ~Resume() { kill(pid, SIGCONT); }
  } resume{std::stoi(pid)};
  ASSERT_TRUE(
      WaitFor([&] { return tc_cache_get(c, ns, key.data(), key.size(), &v) == TC_E_UNAVAILABLE; }, 10s));
  // The last probe proven was at most a few intervals old when the backend stopped.
  EXPECT_LT(std::chrono::steady_clock::now() - stopped, 2s + 100ms) << "served past the bound";
  ASSERT_TRUE(WaitFor([&] { return tc_cache_get(c, ns, key.data(), key.size(), &v) == TC_FOUND; }, 15s))
      << "never served again";
  EXPECT_NE(a.daemon->Log().find("although heartbeats arrive: they are older than this daemon's probes"),
            std::string::npos);
  tc_cache_close(c);
}

// The leader slots are session advisory locks any role can take. A role
// that takes both and never sends leaves the daemons to send by themselves:
// they stay synced, and still send far fewer than one each an interval.
TEST_F(SharedHeartbeatFleetTest, ARoleHoldingTheLeaderSlotsCannotSilenceTheFleet) {
  admin_->Exec("DO $$ BEGIN CREATE ROLE mallory LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  PgConn mallory(SharedCluster().Conninfo(db_, "mallory"));
  for (const char* slot : {"1", "2"})
    ASSERT_EQ(
        mallory.Scalar(std::string("SELECT pg_try_advisory_lock(hashtextextended('tenantcache heartbeat "
                                   "tenantcache ") +
                       slot + "', 0))"),
        "t");
  for (int i = 0; i < 5; ++i) Add();
  Reader reader(members_[0]->daemon->cache_path());
  const Counted c = CountHeartbeats(3s);
  reader.Stop();
  EXPECT_EQ(Sum("heartbeat_leader_slots"), 0u);
  EXPECT_GE(c.shared, 5u) << "the daemons send when they hear none";
  EXPECT_LT(c.shared, 5u * 15) << "five daemons sending their own would be 75 in 3 s";
  EXPECT_EQ(reader.unavailable(), 0) << "of " << reader.reads() << " reads";
  for (const auto& m : members_) EXPECT_EQ(Stat(*m, "reconnects"), 0u);
}

// Daemons that cannot share side by side with those that do: one whose
// bound is too short for shared heartbeats (it sends its own, as a daemon of
// an older version does, which ignores "1 h 2" heartbeats as it does any
// token not its own), and one whose role may not read the key (told how to
// grant it). Nobody flushes, rejects or reconnects for the others' sake.
TEST_F(SharedHeartbeatFleetTest, DaemonsThatSendTheirOwnHeartbeatsLiveBesideThoseThatShare) {
  admin_->Exec(
      "DO $$ BEGIN CREATE ROLE tc_nokey LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; "
      "SELECT tenantcache.grant_daemon('tc_nokey'); GRANT USAGE ON SCHEMA fleet TO tc_nokey; "
      "GRANT SELECT ON ALL TABLES IN SCHEMA fleet TO tc_nokey; "
      "REVOKE SELECT ON tenantcache.heartbeat_key FROM tc_nokey");
  Add();
  Add();
  Member& short_bound = Add("700ms");
  Member& no_key = Add("2s", SharedCluster().Conninfo(db_, "tc_nokey"));
  EXPECT_NE(short_bound.daemon->Log().find(
                "heartbeats: this daemon's own, every 200 ms (shared heartbeats need cache.stale_after of at "
                "least 4 x cache.heartbeat_interval)"),
            std::string::npos)
      << short_bound.daemon->Log();
  EXPECT_NE(
      no_key.daemon->Log().find("may not read tenantcache.heartbeat_key, so it cannot share heartbeats"),
      std::string::npos);
  EXPECT_NE(no_key.daemon->Log().find("SELECT tenantcache.grant_daemon('tc_nokey')"), std::string::npos);
  EXPECT_EQ(Stat(short_bound, "shared_heartbeat_sources"), 0u);
  EXPECT_EQ(Stat(no_key, "shared_heartbeat_sources"), 0u);
  // What tenantcachectl status says of each.
  const auto status = [](const Member& m) {
    return RunCommand(std::string(TC_CTL_BIN) + " --cache " + m.daemon->cache_path() + " status").output;
  };
  EXPECT_NE(
      status(no_key).find("heartbeats      this daemon's own, one NOTIFY per interval: the daemon log says "
                          "why not shared"),
      std::string::npos)
      << status(no_key);
  ASSERT_TRUE(WaitFor([&] { return Sum("heartbeat_leader_slots") == 2; }));
  size_t leading = 0, following = 0;
  for (const auto& m : members_) {
    const std::string s = status(*m);
    leading += s.find("heartbeats      shared, this daemon is a leader (sent ") != std::string::npos ? 1 : 0;
    following += s.find("heartbeats      shared, this daemon follows (sent ") != std::string::npos ? 1 : 0;
  }
  EXPECT_EQ(leading, 2u);
  EXPECT_EQ(following, 0u) << "two sharing daemons, both leaders";

  const Counted c = CountHeartbeats(2s);
  EXPECT_GE(c.own, 2u * 8) << "two daemons send their own every interval";
  EXPECT_GE(c.shared, 8u);
  for (const auto& m : members_) {
    EXPECT_EQ(Stat(*m, "reconnects"), 0u);
    EXPECT_EQ(Stat(*m, "malformed_notifications"), 0u);
    EXPECT_EQ(Stat(*m, "heartbeats_rejected"), 0u);
    EXPECT_EQ(Stat(*m, "flushes"), 1u) << "only the first connection's";
  }
  // Only the installer and the daemon roles read the key.
  admin_->Exec("DO $$ BEGIN CREATE ROLE mallory LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  PgConn mallory(SharedCluster().Conninfo(db_, "mallory"));
  EXPECT_NE(mallory.ExecError("SELECT key FROM tenantcache.heartbeat_key").find("permission denied"),
            std::string::npos);
}

}  // namespace
}  // namespace tenantcache::test
