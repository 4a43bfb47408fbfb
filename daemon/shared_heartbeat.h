// Shared heartbeats (DESIGN "Fleets"): one heartbeat NOTIFY proves order to
// every daemon that receives it, so a fleet on one database sends a couple a
// second whatever its size, instead of one per daemon per interval.
//
// Why a heartbeat someone else sent proves something to me:
//  * The sender takes a snapshot S (txid_current_snapshot(), in a first
//    statement), then NOTIFYs "1 h 2 <S> <mac>" in a later transaction H.
//    Every transaction visible in S committed before H, so its notifications
//    precede H's in the queue: whoever receives H has received them.
//  * Each daemon probes every interval: it notes its clock T0, then takes a
//    snapshot P (the same tick query; it costs no NOTIFY). A transaction
//    committed before T0 is visible in P. When a heartbeat arrives whose S
//    covers P (every transaction visible in P is visible in S), every change
//    committed before T0 has been received and applied: T0 is proven. The
//    heartbeat's S is also a sync point to replay the log from.
//  * Any role may LISTEN and NOTIFY on the channel, so a heartbeat is signed:
//    an HMAC-SHA256 over the channel and S with the key in
//    tenantcache.heartbeat_key, which only the installer and the daemon roles
//    can read (schema version 6). A forged S is rejected. A replayed genuine
//    heartbeat is harmless: its S is what it was, older than any probe taken
//    after the original was sent, and the original preceded the copy.
//  * Who sends: the holders of two leader slots (session advisory locks on
//    the heartbeat connection, taken by the tick query when free), every
//    interval, and any daemon that has received no verified heartbeat for a
//    random 1.25 to 1.75 intervals (a leader gone, the slots held by a role
//    that never sends). Two slots: one leader's death, or its backend hung
//    with the lock held, leaves the other sending.
//  * A daemon whose own listener is deaf receives no heartbeat, its own or
//    anyone's: nothing proves its probes, its readers fail closed at
//    stale_after as before, and it reconnects after stale_after - interval.
//  * Old daemons (format "1 h <token>") ignore these heartbeats (no token of
//    theirs) and keep sending their own; new daemons ignore theirs (they
//    cannot verify them). Both kinds share the channel during an upgrade.
#ifndef TENANTCACHE_DAEMON_SHARED_HEARTBEAT_H_
#define TENANTCACHE_DAEMON_SHARED_HEARTBEAT_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace tenantcache {

// A txid_snapshot ("xmin:xmax:xip,..."), 64-bit transaction ids.
struct TxidSnapshot {
  uint64_t xmin = 0, xmax = 0;
  std::vector<uint64_t> xip;  // ascending

  static std::optional<TxidSnapshot> Parse(std::string_view text);
  // Every transaction visible in `earlier` is visible in this snapshot.
  bool Covers(const TxidSnapshot& earlier) const;
};

// The database's heartbeat key: tenantcache.heartbeat_key.key in hex, as
// kHeartbeatKeyQuery reads it (a leading "\x", bytea's own output, is
// dropped, so the column read as is gives the same key).
class HeartbeatKey {
 public:
  explicit HeartbeatKey(std::string hex);
  // 32 hex digits: the first 128 bits of HMAC-SHA256(key, channel, snapshot).
  std::string Mac(std::string_view channel, std::string_view snapshot) const;

 private:
  std::string raw_;
};

// The NOTIFY payload of a shared heartbeat proving `snapshot` on `channel`.
// A snapshot too long for a payload (NOTIFY takes under 8000 bytes) is sent
// as "xmin:xmin:", which claims less (only what committed before xmin) and
// is as true.
std::string SharedHeartbeatPayload(const HeartbeatKey& key, std::string_view channel,
                                   std::string_view snapshot);

// The value of a "1 h" message ("2 <snapshot> <mac>") is a shared heartbeat.
bool IsSharedHeartbeat(std::string_view value);

// Reads the key (whatever the session's bytea_output).
extern const char* const kHeartbeatKeyQuery;

// The tick query of a daemon in shared mode. $1: the leader slot its session
// holds ("0": none, then it tries to take a free one), $2: the channel.
// Returns its snapshot (the probe) and the slot it holds (0, 1 or 2).
extern const char* const kSharedTickQuery;

// One source's shared-heartbeat state: probes waiting for proof, the leader
// slot, when to send without one. Pure logic; the listener runs the queries.
class SharedHeartbeats {
 public:
  using Clock = std::chrono::steady_clock;
  SharedHeartbeats(std::string channel, uint64_t seed) : channel_(std::move(channel)), rng_(seed) {}

  // The key read at catch-up (nullopt: shared heartbeats off).
  void SetKey(std::optional<HeartbeatKey> key) { key_ = std::move(key); }
  bool enabled() const { return key_.has_value(); }
  // A new listener connection: earlier probes prove nothing on it.
  void Reset() { probes_.clear(); }

  // The parameters of kSharedTickQuery for a heartbeat connection whose
  // backend is `backend_pid` (a slot is held by a session, not a daemon).
  std::vector<std::optional<std::string>> TickParams(int backend_pid) const;
  // The tick query answered: records the probe taken at `probe_ns`
  // (CLOCK_MONOTONIC, before the query was sent) and returns the payload to
  // NOTIFY, or "" when this daemon does not send this tick: it sends when it
  // holds a slot, or when no verified heartbeat arrived since
  // `last_heartbeat` for longer than its fallback wait.
  std::string Ticked(uint64_t probe_ns, const std::string& snapshot, int slot, int backend_pid,
                     Clock::time_point now, Clock::time_point last_heartbeat,
                     std::chrono::milliseconds interval);

  struct Proof {
    uint64_t proven_ns;    // 0: no probe covered yet
    std::string snapshot;  // the heartbeat's, a sync point
  };
  // A "1 h" message whose value IsSharedHeartbeat: the proof, or nullopt with
  // `why` when it does not verify (forged, or signed with another key).
  std::optional<Proof> Received(std::string_view value, std::string* why);

  int slot() const { return slot_; }

 private:
  std::string channel_;
  std::optional<HeartbeatKey> key_;
  struct Probe {
    uint64_t ns;
    TxidSnapshot snapshot;
  };
  std::deque<Probe> probes_;
  int slot_ = 0, slot_pid_ = 0;
  double fallback_factor_ = 1.5;  // of the interval; redrawn per heartbeat
  std::mt19937_64 rng_;
};

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_SHARED_HEARTBEAT_H_
