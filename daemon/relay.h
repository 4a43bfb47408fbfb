// Relaying a source's notifications through Redis pub/sub (DESIGN "Fleets"):
// a few daemons (relays) LISTEN on PostgreSQL and publish every message they
// receive, heartbeats included and in order, to a Redis channel; the others
// (subscribers) read that channel instead of LISTENing, so the primary wakes
// a few listeners for each NOTIFY, not one per host. Loaders, probes and the
// log replay still go to PostgreSQL.
//
// Why a subscriber keeps the bound:
//  * A relay numbers what it publishes within a session: one LISTEN
//    connection and one Redis connection (a new session id, 64 random bits,
//    whenever either is new). Every message is signed with the database's
//    heartbeat key (shared_heartbeat.h), so Redis and whoever can publish on
//    it are trusted with availability only: a forged or altered message is
//    rejected, a replayed one is out of sequence.
//  * A subscriber joins a session by replaying the invalidation log from
//    PostgreSQL after it has seen a message of that session: what committed
//    before the replay's snapshot the replay covers, what committed after it
//    reached the relay's LISTEN (open since before that message) and comes
//    next in the session. So a shared heartbeat relayed in a joined session
//    proves to the subscriber what it proves to the relay; heartbeats of a
//    session not joined prove nothing.
//  * A gap in a session's numbers, or the session ending (a relay's restart
//    or reconnect, a Redis failover), leaves that session; with no joined
//    session left, the subscriber is unsynced at once and catches up again.
//    A subscriber that hears nothing proves nothing: its readers fail closed
//    at stale_after, as with a deaf listener. Two relays: the second's
//    session keeps the subscriber proven while the first restarts; their
//    duplicate messages invalidate twice, which is harmless, and each session
//    is ordered on its own, which is all a proof needs.
//  * What one read of the relay's LISTEN connection brings is published as
//    one message (RelayBatch), in the order received: under a burst Redis
//    fans out one message per read, not one per notification, to every
//    subscriber. A batch is numbered, signed and lost or kept as a whole, so
//    the rules above hold for it as for a single notification.
#ifndef TENANTCACHE_DAEMON_RELAY_H_
#define TENANTCACHE_DAEMON_RELAY_H_

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "redis_link.h"
#include "shared_heartbeat.h"

namespace tenantcache {

// "1 <session> <seq> <signature> <payload>" for one notification, and
// "2 <session> <seq> <signature> <payload>\0<payload>..." for several (a
// NOTIFY payload holds no NUL). A subscriber older than format 2 rejects a
// batch and then sees its session skip a number: it fails closed and
// replays, so subscribers are upgraded before relays.
std::string EncodeRelayed(const HeartbeatKey& key, std::string_view channel, std::string_view session,
                          uint64_t seq, const std::vector<std::string>& payloads);
struct Relayed {
  std::string session;
  uint64_t seq = 0;
  std::vector<std::string> payloads;  // in the order the relay received them
};
// The message, or nullopt with why (malformed, or the signature is wrong).
std::optional<Relayed> DecodeRelayed(const HeartbeatKey& key, std::string_view channel, std::string_view text,
                                     std::string* why);

// The notifications a relay has received and not yet published: Add() each
// as it arrives; once the loop has run the reads that were ready (a libuv
// check handle, so a notification alone waits for no timer), or when the
// batch is full, `publish` gets them all.
class RelayBatch {
 public:
  using Publish = std::function<void(const std::vector<std::string>& payloads)>;
  RelayBatch(uv_loop_t* loop, Publish publish);
  ~RelayBatch();
  RelayBatch(const RelayBatch&) = delete;
  RelayBatch& operator=(const RelayBatch&) = delete;

  void Add(std::string_view payload);
  // Publishes what was gathered now (before its session ends).
  void Flush();

  // Redis delivers a message whole: a batch stays well under its limits and
  // a subscriber's input buffer.
  static constexpr size_t kMaxBytes = 64 * 1024;
  static constexpr size_t kMaxCount = 512;

 private:
  uv_check_t* check_;
  Publish publish_;
  std::vector<std::string> payloads_;
  size_t bytes_ = 0;
};

// The sessions a subscriber has seen and joined.
class RelaySessions {
 public:
  enum class Verdict { kJoined, kNotJoined, kGap, kDuplicate };
  // A verified message: whether its payload proves (kJoined), counts only as
  // an invalidation (kNotJoined), ends its session (kGap: a number skipped),
  // or was seen before (kDuplicate: ignore it).
  Verdict Accept(const Relayed& m);
  // Marks the sessions seen so far; Join(mark) joins those once the replay
  // that began after the mark has been applied.
  uint64_t Mark() const { return seen_; }
  void Join(uint64_t mark);
  void Clear() { sessions_.clear(); }
  bool any_joined() const { return joined_count() > 0; }
  size_t joined_count() const;

 private:
  struct Session {
    uint64_t next = 0;
    uint64_t seen_at = 0;  // the value of seen_ when first seen
    bool joined = false;
  };
  std::map<std::string, Session> sessions_;
  uint64_t seen_ = 0;
};

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_RELAY_H_
