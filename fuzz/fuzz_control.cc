// libFuzzer target: the control-socket protocol (client/src/protocol.h) on
// both sides. The input is a byte stream as the daemon reads it from one
// client: frames are extracted the way ControlServer does, each request
// payload is parsed for its operation and lookup keys go through the key
// normalisers, as the daemon's Lookup does. Every frame payload is also
// decoded as a lookup answer, the way the client library decodes the
// daemon's (a value's fields must stay inside the answer). Accepted frames
// must re-encode to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "cache_layout.h"
#include "entry.h"
#include "keys.h"
#include "protocol.h"

namespace {

namespace protocol = tenantcache::protocol;

void Check(bool ok) {
  if (!ok) std::abort();
}

void Request(const protocol::Frame& f) {
  switch (f.op) {
    case protocol::kLookup:
    case protocol::kInvalidate: {
      std::string_view ns, key;
      if (!protocol::ParseKeyPayload(f.payload, &ns, &key)) return;
      Check(protocol::KeyPayload(ns, key) == f.payload);
      char out[tenantcache::layout::kMaxKeyLen];
      for (uint32_t kind = tenantcache::layout::kUuid; kind <= tenantcache::layout::kText; ++kind)
        (void)tenantcache::NormalizeKey(kind, 0, key.data(), key.size(), out);
      return;
    }
    case protocol::kInvalidateTenant: {
      std::string_view tenant;
      if (protocol::ParseTenantPayload(f.payload, &tenant))
        Check(protocol::TenantPayload(tenant) == f.payload);
      return;
    }
    case protocol::kReport: {
      protocol::Report r;
      if (protocol::ParseReport(f.payload, &r)) Check(protocol::ReportPayload(r) == f.payload);
      return;
    }
    default:
      return;
  }
}

void Answer(std::string_view payload) {
  protocol::ValuePayload v;
  if (!protocol::ParseValue(payload, &v)) return;
  const auto* base = reinterpret_cast<const unsigned char*>(v.data.data());
  tenantcache::EntryView e;
  if (!tenantcache::DecodeEntry(base, v.data.size(), v.key_len, v.tenant_len, v.field_count, &e)) return;
  const char* end = v.data.data() + v.data.size();
  Check(e.key >= v.data.data() && e.key + e.key_len < end && e.key[e.key_len] == '\0');
  Check(e.tenant >= v.data.data() && e.tenant + e.tenant_len < end && e.tenant[e.tenant_len] == '\0');
  for (uint32_t i = 0; i < e.field_count; ++i) {
    const char* text = nullptr;
    size_t len = 0;
    tenantcache::EntryField(e, i, &text, &len);
    // The hit path's check of one value (FindValue) agrees with the walk.
    size_t off = 0;
    uint16_t flen = 0;
    Check(tenantcache::FindValue(base, v.data.size(), tenantcache::LensAt(v.key_len, v.tenant_len),
                                 e.field_count, i, &off, &flen));
    Check(text == nullptr ? flen == tenantcache::layout::kNullField
                          : (flen == len && off == static_cast<size_t>(text - v.data.data())));
    if (text == nullptr) continue;  // NULL
    Check(text >= v.data.data() && text + len < end && text[len] == '\0');
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string stream(reinterpret_cast<const char*>(data), size);
  size_t used = 0;
  for (;;) {
    protocol::Frame f;
    size_t n = 0;
    const char* err = nullptr;
    const auto p =
        protocol::ParseFrame(std::string_view(stream).substr(used), protocol::kMaxRequest, &f, &n, &err);
    if (p == protocol::Parse::kNeedMore) break;
    if (p == protocol::Parse::kBad) {
      Check(err != nullptr && err[0] != '\0');
      break;
    }
    Check(n >= protocol::kHeaderSize && n <= protocol::kMaxRequest && used + n <= stream.size());
    std::string again;
    protocol::AppendFrame(&again, f.op, f.status, f.request_id, f.payload);
    Check(again == std::string_view(stream).substr(used, n));
    Request(f);
    Answer(f.payload);
    used += n;
  }
  return 0;
}
