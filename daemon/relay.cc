#include "relay.h"

#include <charconv>

#include "uv_handle.h"

namespace tenantcache {
namespace {

constexpr size_t kMaxSessions = 64;

// What a signature covers: the format, the channel, the session, the number
// and the payloads, NUL-separated. Only the last field may hold a NUL (a
// batch's separators): the channel is the daemon's own setting, and a
// decoded session is hex digits and a number decimal ones, so no two
// messages sign the same text (a session carrying a NUL could otherwise
// move a boundary: "S\0N p1" signing what "S N p1\0…" did).
std::string Signed(char format, std::string_view channel, std::string_view session, uint64_t seq,
                   std::string_view payloads) {
  std::string m = "tenantcache relay ";
  m += format;
  m += '\0';
  m += channel;
  m += '\0';
  m += session;
  m += '\0';
  m += std::to_string(seq);
  m += '\0';
  m += payloads;
  return m;
}

// A session id as a relay makes one (RandomHex): hex digits, at most 32.
bool IsSessionId(std::string_view s) {
  return !s.empty() && s.size() <= 32 && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
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
                          uint64_t seq, const std::vector<std::string>& payloads) {
  const char format = payloads.size() == 1 ? '1' : '2';
  std::string joined;
  for (size_t i = 0; i < payloads.size(); ++i) {
    if (i > 0) joined += '\0';
    joined += payloads[i];
  }
  std::string out(1, format);
  out += ' ';
  out += session;
  out += ' ';
  out += std::to_string(seq);
  out += ' ';
  out += key.Sign(Signed(format, channel, session, seq, joined));
  out += ' ';
  out += joined;
  return out;
}

std::optional<Relayed> DecodeRelayed(const HeartbeatKey& key, std::string_view channel, std::string_view text,
                                     std::string* why) {
  std::string_view rest = text;
  const std::string_view format = Field(rest);
  if (format != "1" && format != "2") {
    *why = "unknown relay format";
    return std::nullopt;
  }
  Relayed m;
  m.session = std::string(Field(rest));
  const std::string_view seq = Field(rest);
  const std::string_view mac = Field(rest);
  if (!IsSessionId(m.session) || seq.empty() || mac.empty()) {
    *why = "malformed relayed message";
    return std::nullopt;
  }
  const auto [end, ec] = std::from_chars(seq.data(), seq.data() + seq.size(), m.seq);
  if (ec != std::errc() || end != seq.data() + seq.size()) {
    *why = "bad sequence number";
    return std::nullopt;
  }
  if (!key.Verify(Signed(format[0], channel, m.session, m.seq, rest), mac)) {
    *why = "bad signature";
    return std::nullopt;
  }
  if (format == "1") {
    m.payloads.emplace_back(rest);
    return m;
  }
  for (;;) {
    const size_t nul = rest.find('\0');
    m.payloads.emplace_back(rest.substr(0, nul));
    if (nul == std::string_view::npos) return m;
    rest.remove_prefix(nul + 1);
  }
}

RelayBatch::RelayBatch(uv_loop_t* loop, Publish publish)
    : check_(new uv_check_t), publish_(std::move(publish)) {
  uv_check_init(loop, check_);
  check_->data = this;
}

RelayBatch::~RelayBatch() {
  uv_check_stop(check_);
  check_->data = nullptr;
  CloseAndDelete(check_);
}

void RelayBatch::Add(std::string_view payload) {
  if (!payloads_.empty() && (bytes_ + payload.size() > kMaxBytes || payloads_.size() >= kMaxCount)) Flush();
  if (payloads_.empty())
    uv_check_start(check_, [](uv_check_t* c) { static_cast<RelayBatch*>(c->data)->Flush(); });
  payloads_.emplace_back(payload);
  bytes_ += payload.size() + 1;
}

void RelayBatch::Flush() {
  uv_check_stop(check_);
  if (payloads_.empty()) return;
  std::vector<std::string> payloads = std::move(payloads_);
  payloads_.clear();
  bytes_ = 0;
  publish_(payloads);
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
