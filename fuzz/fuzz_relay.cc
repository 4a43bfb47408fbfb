// libFuzzer target: what reaches a daemon from those it does not trust with
// the bound. A Redis subscriber decodes every message published on its
// channel (whoever can reach that Redis), and every daemon parses shared
// heartbeats any database role can NOTIFY. The first byte picks what the rest
// is:
//   0: a message as Redis delivers it: decoding never fails unsafely, and
//      what verifies is what a relay signed;
//   1: the fields of a genuine message (session and sequence, one per line,
//      then its payloads separated by NULs, as no NOTIFY payload holds one):
//      it decodes to exactly those fields, any one byte changed no longer
//      verifies, and a second delivery is a duplicate;
//   2: a txid_snapshot: what parses is ordered as PostgreSQL prints it, a
//      heartbeat signed over it verifies and proves a probe it covers, and
//      the input sent as a heartbeat's value is never taken as proof.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "relay.h"
#include "shared_heartbeat.h"

namespace {

using tenantcache::HeartbeatKey;

void Check(bool ok) {
  if (!ok) std::abort();
}

constexpr std::string_view kChannel = "tenantcache";

const HeartbeatKey& Key() {
  static const HeartbeatKey key("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
  return key;
}

// The next line of `rest` (all of it when there is no newline).
std::string_view Line(std::string_view& rest) {
  const size_t nl = rest.find('\n');
  const std::string_view line = rest.substr(0, nl);
  rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
  return line;
}

void Delivered(const std::string& text) {
  std::string why;
  const auto m = tenantcache::DecodeRelayed(Key(), kChannel, text, &why);
  if (!m) {
    Check(!why.empty());
    return;
  }
  // Verified: its fields are what a relay signed, as a relay encodes them.
  Check(!m->session.empty() && m->session.size() <= 32);
  std::string again;
  Check(tenantcache::DecodeRelayed(
            Key(), kChannel, tenantcache::EncodeRelayed(Key(), kChannel, m->session, m->seq, m->payloads),
            &again)
            .has_value());
}

void Genuine(std::string_view input) {
  std::string_view rest = input;
  const std::string session(Line(rest));
  const std::string_view seq_text = Line(rest);
  uint64_t seq = 0;
  for (const char c : seq_text.substr(0, 8)) seq = seq * 251 + static_cast<unsigned char>(c);
  std::vector<std::string> payloads;
  for (;;) {
    const size_t nul = rest.find('\0');
    payloads.emplace_back(rest.substr(0, nul));
    if (nul == std::string_view::npos) break;
    rest.remove_prefix(nul + 1);
  }
  // A relay's session is 16 hex digits: anything else is not one.
  if (session.empty() || session.size() > 32 ||
      session.find_first_not_of("0123456789abcdef") != std::string::npos)
    return;
  const std::string text = tenantcache::EncodeRelayed(Key(), kChannel, session, seq, payloads);
  std::string why;
  const auto m = tenantcache::DecodeRelayed(Key(), kChannel, text, &why);
  Check(m.has_value() && m->session == session && m->seq == seq && m->payloads == payloads);
  // Another channel's relay signed something else.
  Check(!tenantcache::DecodeRelayed(Key(), "tenantcache2", text, &why).has_value());
  // One byte changed anywhere no longer verifies.
  const size_t at = (seq + payloads.size() + payloads.back().size()) % text.size();
  std::string tampered = text;
  tampered[at] = static_cast<char>(tampered[at] ^ 0x20);
  Check(!tenantcache::DecodeRelayed(Key(), kChannel, tampered, &why).has_value());
  // A batch cut at other boundaries (the session taking the number after a
  // NUL, the first payload standing as the number) signs the same text,
  // and must not verify.
  if (payloads.size() >= 2) {
    std::string_view fields = text;
    for (int i = 0; i < 3; ++i) fields.remove_prefix(fields.find(' ') + 1);
    const std::string_view mac = fields.substr(0, fields.find(' '));
    std::string recut =
        "2 " + session + '\0' + std::to_string(seq) + ' ' + payloads[0] + ' ' + std::string(mac) + ' ';
    for (size_t i = 1; i < payloads.size(); ++i) recut += (i > 1 ? std::string(1, '\0') : "") + payloads[i];
    Check(!tenantcache::DecodeRelayed(Key(), kChannel, recut, &why).has_value());
  }
  tenantcache::RelaySessions sessions;
  Check(sessions.Accept(*m) == tenantcache::RelaySessions::Verdict::kNotJoined);
  Check(sessions.Accept(*m) == tenantcache::RelaySessions::Verdict::kDuplicate);
}

void Snapshot(const std::string& text) {
  tenantcache::SharedHeartbeats hb(std::string(kChannel), 1);
  hb.SetKey(Key());
  std::string why;
  // The input as a heartbeat's value: nobody without the key makes proof.
  if (tenantcache::IsSharedHeartbeat(text)) Check(!hb.Received(text, &why).has_value());
  const auto s = tenantcache::TxidSnapshot::Parse(text);
  if (!s) return;
  Check(s->xmin <= s->xmax);
  for (size_t i = 0; i < s->xip.size(); ++i) {
    Check(s->xip[i] >= s->xmin && s->xip[i] < s->xmax);
    Check(i == 0 || s->xip[i - 1] < s->xip[i]);
  }
  Check(s->Covers(*s));
  // Signed over it, as a leader sends it ("1 h " + value): it verifies, and
  // proves a probe that took this very snapshot unless the snapshot was too
  // long and the payload claims only what committed before xmin.
  const std::string payload = tenantcache::SharedHeartbeatPayload(Key(), kChannel, text);
  Check(payload.rfind("1 h ", 0) == 0);
  const std::string value = payload.substr(4);
  Check(tenantcache::IsSharedHeartbeat(value));
  hb.Probed(7, text);
  const auto proof = hb.Received(value, &why);
  Check(proof.has_value());
  if (proof->snapshot == text) Check(proof->proven_ns == 7);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // A heap copy of exactly the rest, so ASan sees any read past the end.
  const std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      Delivered(input);
      break;
    case 1:
      Genuine(input);
      break;
    default:
      Snapshot(input);
      break;
  }
  return 0;
}
