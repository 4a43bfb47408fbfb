#include "relay.h"

#include <charconv>

namespace tenantcache {
namespace {

constexpr size_t kMaxSessions = 64;

std::string Signed(std::string_view channel, std::string_view session, uint64_t seq,
                   std::string_view payload) {
  std::string m = "tenantcache relay 1";
  m += '\0';
  m += channel;
  m += '\0';
  m += session;
  m += '\0';
  m += std::to_string(seq);
  m += '\0';
  m += payload;
  return m;
}

std::string_view Field(std::string_view& rest) {
  const size_t sp = rest.find(' ');
  if (sp == std::string_view::npos) {
    const std::string_view all = rest;
    rest = {};
    return all;
  }
  const std::string_view f = rest.substr(0, sp);
  rest.remove_prefix(sp + 1);
  return f;
}

}  // namespace

std::string EncodeRelayed(const HeartbeatKey& key, std::string_view channel, std::string_view session,
                          uint64_t seq, std::string_view payload) {
  std::string out = "1 ";
  out += session;
  out += ' ';
  out += std::to_string(seq);
  out += ' ';
  out += key.Sign(Signed(channel, session, seq, payload));
  out += ' ';
  out += payload;
  return out;
}

std::optional<Relayed> DecodeRelayed(const HeartbeatKey& key, std::string_view channel, std::string_view text,
                                     std::string* why) {
  std::string_view rest = text;
  if (Field(rest) != "1") {
    *why = "unknown relay format";
    return std::nullopt;
  }
  Relayed m;
  m.session = std::string(Field(rest));
  const std::string_view seq = Field(rest);
  const std::string_view mac = Field(rest);
  if (m.session.empty() || m.session.size() > 32 || seq.empty() || mac.empty()) {
    *why = "malformed relayed message";
    return std::nullopt;
  }
  const auto [end, ec] = std::from_chars(seq.data(), seq.data() + seq.size(), m.seq);
  if (ec != std::errc() || end != seq.data() + seq.size()) {
    *why = "bad sequence number";
    return std::nullopt;
  }
  if (!key.Verify(Signed(channel, m.session, m.seq, rest), mac)) {
    *why = "bad signature";
    return std::nullopt;
  }
  m.payload = std::string(rest);
  return m;
}

RelaySessions::Verdict RelaySessions::Accept(const Relayed& m) {
  auto it = sessions_.find(m.session);
  if (it != sessions_.end()) {
    Session& s = it->second;
    if (m.seq < s.next) return Verdict::kDuplicate;
    if (m.seq == s.next) {
      ++s.next;
      return s.joined ? Verdict::kJoined : Verdict::kNotJoined;
    }
    // A number skipped: what it held is lost to this subscriber. The session
    // goes on, unjoined, until a replay joins it again.
    s = Session{m.seq + 1, ++seen_, false};
    return Verdict::kGap;
  }
  if (sessions_.size() >= kMaxSessions) {
    // Forget the session seen longest ago that proves nothing (a relay's
    // earlier session: it never continues).
    auto oldest = sessions_.end();
    for (auto s = sessions_.begin(); s != sessions_.end(); ++s)
      if (!s->second.joined && (oldest == sessions_.end() || s->second.seen_at < oldest->second.seen_at))
        oldest = s;
    if (oldest == sessions_.end()) return Verdict::kNotJoined;  // all joined: more relays than this caps
    sessions_.erase(oldest);
  }
  sessions_.emplace(m.session, Session{m.seq + 1, ++seen_, false});
  return Verdict::kNotJoined;
}

void RelaySessions::Join(uint64_t mark) {
  for (auto& [id, s] : sessions_)
    if (s.seen_at <= mark) s.joined = true;
}

size_t RelaySessions::joined_count() const {
  size_t n = 0;
  for (const auto& [id, s] : sessions_) n += s.joined ? 1 : 0;
  return n;
}

}  // namespace tenantcache
