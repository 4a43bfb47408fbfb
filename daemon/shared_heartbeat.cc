#include "shared_heartbeat.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <charconv>

namespace tenantcache {
namespace {

constexpr size_t kMacHexDigits = 32;
// NOTIFY refuses payloads of 8000 bytes or more; the rest is "1 h 2 ", two
// spaces and the MAC.
constexpr size_t kMaxSnapshotText = 7900;
constexpr int kMaxProbes = 64;

bool ParseTxid(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

// Splits off the text up to `sep` (all of it when absent).
std::string_view Next(std::string_view& rest, char sep) {
  const size_t at = rest.find(sep);
  const std::string_view field = rest.substr(0, at);
  rest = at == std::string_view::npos ? std::string_view() : rest.substr(at + 1);
  return field;
}

}  // namespace

std::optional<TxidSnapshot> TxidSnapshot::Parse(std::string_view text) {
  std::string_view rest = text;
  const size_t colons = static_cast<size_t>(std::count(text.begin(), text.end(), ':'));
  if (colons != 2 || text.back() == ',') return std::nullopt;
  TxidSnapshot s;
  if (!ParseTxid(Next(rest, ':'), &s.xmin) || !ParseTxid(Next(rest, ':'), &s.xmax) || s.xmin > s.xmax)
    return std::nullopt;
  while (!rest.empty()) {
    uint64_t x = 0;
    // In progress: xmin <= x < xmax, ascending, no repeats (as PostgreSQL
    // prints them).
    if (!ParseTxid(Next(rest, ','), &x) || x < s.xmin || x >= s.xmax || (!s.xip.empty() && x <= s.xip.back()))
      return std::nullopt;
    s.xip.push_back(x);
  }
  return s;
}

bool TxidSnapshot::Covers(const TxidSnapshot& earlier) const {
  // Visible in `earlier`: below its xmax and not in its xip. Each such id is
  // below this xmax, so it is visible here unless in progress here; an id in
  // progress here that was visible there cannot be (it finished already).
  if (earlier.xmax > xmax) return false;
  for (const uint64_t x : xip) {
    if (x >= earlier.xmax) break;
    if (!std::binary_search(earlier.xip.begin(), earlier.xip.end(), x)) return false;
  }
  return true;
}

HeartbeatKey::HeartbeatKey(std::string hex) : raw_(std::move(hex)) {
  if (raw_.rfind("\\x", 0) == 0) raw_.erase(0, 2);
}

std::string HeartbeatKey::Mac(std::string_view channel, std::string_view snapshot) const {
  // Channel and snapshot separated by a byte neither contains: one message
  // cannot be read as another.
  std::string message = "tenantcache heartbeat 2";
  message += '\0';
  message += channel;
  message += '\0';
  message += snapshot;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), raw_.data(), static_cast<int>(raw_.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &len) == nullptr ||
      len * 2 < kMacHexDigits)
    return {};  // an empty MAC never verifies
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < kMacHexDigits / 2; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

std::string SharedHeartbeatPayload(const HeartbeatKey& key, std::string_view channel,
                                   std::string_view snapshot) {
  std::string claim(snapshot);
  if (claim.size() > kMaxSnapshotText) {
    const std::string xmin(snapshot.substr(0, snapshot.find(':')));
    claim = xmin + ":" + xmin + ":";
  }
  return "1 h 2 " + claim + " " + key.Mac(channel, claim);
}

bool IsSharedHeartbeat(std::string_view value) { return value.size() > 2 && value.substr(0, 2) == "2 "; }

const char* const kHeartbeatKeyQuery = "SELECT encode(key, 'hex') FROM tenantcache.heartbeat_key";

const char* const kSharedTickQuery =
    "SELECT txid_current_snapshot()::text, CASE "
    "WHEN $1::int > 0 THEN $1::int "
    "WHEN pg_try_advisory_lock(hashtextextended('tenantcache heartbeat ' || $2 || ' 1', 0)) THEN 1 "
    "WHEN pg_try_advisory_lock(hashtextextended('tenantcache heartbeat ' || $2 || ' 2', 0)) THEN 2 "
    "ELSE 0 END";

std::vector<std::optional<std::string>> SharedHeartbeats::TickParams(int backend_pid) const {
  return {std::to_string(slot_pid_ == backend_pid ? slot_ : 0), channel_};
}

std::string SharedHeartbeats::Ticked(uint64_t probe_ns, const std::string& snapshot, int slot,
                                     int backend_pid, Clock::time_point now, Clock::time_point last_heartbeat,
                                     std::chrono::milliseconds interval) {
  slot_ = slot;
  slot_pid_ = backend_pid;
  std::optional<TxidSnapshot> parsed = TxidSnapshot::Parse(snapshot);
  if (!key_ || !parsed) return {};
  probes_.push_back(Probe{probe_ns, std::move(*parsed)});
  while (probes_.size() > kMaxProbes) probes_.pop_front();
  const auto quiet = std::chrono::duration<double, std::milli>(now - last_heartbeat).count();
  if (slot_ == 0 && quiet < fallback_factor_ * static_cast<double>(interval.count())) return {};
  return SharedHeartbeatPayload(*key_, channel_, snapshot);
}

std::optional<SharedHeartbeats::Proof> SharedHeartbeats::Received(std::string_view value, std::string* why) {
  std::string_view rest = value.substr(2);
  const std::string_view snapshot = Next(rest, ' ');
  const std::string_view mac = rest;
  if (!key_) {
    *why = "no heartbeat key";
    return std::nullopt;
  }
  const std::optional<TxidSnapshot> claimed = TxidSnapshot::Parse(snapshot);
  if (!claimed) {
    *why = "not a snapshot";
    return std::nullopt;
  }
  const std::string expected = key_->Mac(channel_, snapshot);
  if (mac.size() != kMacHexDigits || expected.size() != kMacHexDigits ||
      CRYPTO_memcmp(mac.data(), expected.data(), kMacHexDigits) != 0) {
    *why = "bad signature";
    return std::nullopt;
  }
  fallback_factor_ = std::uniform_real_distribution<double>(1.25, 1.75)(rng_);
  Proof proof{0, std::string(snapshot)};
  // Probes are in the order taken; the newest one covered proves the most.
  while (!probes_.empty() && claimed->Covers(probes_.front().snapshot)) {
    proof.proven_ns = probes_.front().ns;
    probes_.pop_front();
  }
  return proof;
}

}  // namespace tenantcache
