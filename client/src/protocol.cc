#include "protocol.h"

namespace tenantcache::protocol {
namespace {

void Put16(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v & 0xFF));
  out->push_back(static_cast<char>(v >> 8));
}
void Put32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
uint16_t Get16(std::string_view s, size_t at) {
  return static_cast<uint16_t>(static_cast<unsigned char>(s[at]) |
                               (static_cast<unsigned char>(s[at + 1]) << 8));
}
uint32_t Get32(std::string_view s, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[at + static_cast<size_t>(i)]);
  return v;
}

}  // namespace

void AppendFrame(std::string* out, uint8_t op, int16_t status, uint32_t request_id,
                 std::string_view payload) {
  Put32(out, static_cast<uint32_t>(8 + payload.size()));
  out->push_back(static_cast<char>(kVersion));
  out->push_back(static_cast<char>(op));
  Put16(out, static_cast<uint16_t>(status));
  Put32(out, request_id);
  out->append(payload);
}

Parse ParseFrame(std::string_view buf, size_t max_len, Frame* frame, size_t* consumed, const char** error) {
  if (buf.size() < 4) return Parse::kNeedMore;
  const uint32_t len = Get32(buf, 0);
  if (len < 8) {
    *error = "frame shorter than its header";
    return Parse::kBad;
  }
  if (size_t{len} + 4 > max_len) {
    *error = "frame too long";
    return Parse::kBad;
  }
  if (buf.size() < 4 + size_t{1}) return Parse::kNeedMore;
  if (static_cast<uint8_t>(buf[4]) != kVersion) {
    *error = "unknown protocol version";
    return Parse::kBad;
  }
  if (buf.size() < 4 + size_t{len}) return Parse::kNeedMore;
  frame->op = static_cast<uint8_t>(buf[5]);
  frame->status = static_cast<int16_t>(Get16(buf, 6));
  frame->request_id = Get32(buf, 8);
  frame->payload = buf.substr(kHeaderSize, len - 8);
  *consumed = 4 + size_t{len};
  return Parse::kFrame;
}

std::string KeyPayload(std::string_view ns, std::string_view key) {
  std::string p;
  p.push_back(static_cast<char>(ns.size()));
  p.append(ns);
  Put16(&p, static_cast<uint16_t>(key.size()));
  p.append(key);
  return p;
}

bool ParseKeyPayload(std::string_view p, std::string_view* ns, std::string_view* key) {
  if (p.empty()) return false;
  const size_t ns_len = static_cast<unsigned char>(p[0]);
  if (p.size() < 1 + ns_len + 2) return false;
  *ns = p.substr(1, ns_len);
  const size_t key_len = Get16(p, 1 + ns_len);
  if (p.size() != 1 + ns_len + 2 + key_len) return false;
  *key = p.substr(1 + ns_len + 2, key_len);
  return true;
}

std::string TenantPayload(std::string_view tenant) {
  std::string p;
  Put16(&p, static_cast<uint16_t>(tenant.size()));
  p.append(tenant);
  return p;
}

bool ParseTenantPayload(std::string_view p, std::string_view* tenant) {
  if (p.size() < 2) return false;
  const size_t len = Get16(p, 0);
  if (p.size() != 2 + len || len == 0) return false;
  *tenant = p.substr(2);
  return true;
}

std::string EncodeValue(uint16_t key_len, uint16_t tenant_len, uint16_t field_count, std::string_view data) {
  std::string p;
  Put16(&p, key_len);
  Put16(&p, tenant_len);
  Put16(&p, field_count);
  Put16(&p, 0);
  Put32(&p, static_cast<uint32_t>(data.size()));
  p.append(data);
  return p;
}

bool ParseValue(std::string_view p, ValuePayload* out) {
  if (p.size() < 12) return false;
  out->key_len = Get16(p, 0);
  out->tenant_len = Get16(p, 2);
  out->field_count = Get16(p, 4);
  const uint32_t len = Get32(p, 8);
  if (p.size() != 12 + size_t{len}) return false;
  out->data = p.substr(12);
  return true;
}

std::string ReportPayload(const Report& r) {
  std::string p;
  Put32(&p, r.pid);
  for (uint64_t v : {r.handle, r.hits, r.negative_hits, r.misses, r.unavailable}) {
    Put32(&p, static_cast<uint32_t>(v));
    Put32(&p, static_cast<uint32_t>(v >> 32));
  }
  return p;
}

bool ParseReport(std::string_view p, Report* out) {
  if (p.size() != 4 + 5 * 8) return false;
  out->pid = Get32(p, 0);
  uint64_t* fields[] = {&out->handle, &out->hits, &out->negative_hits, &out->misses, &out->unavailable};
  for (size_t i = 0; i < 5; ++i) *fields[i] = Get32(p, 4 + 8 * i) | (uint64_t{Get32(p, 8 + 8 * i)} << 32);
  return true;
}

}  // namespace tenantcache::protocol
