// The control-socket protocol between clients (libtenantcache,
// tenantcachectl) and tenantcached, version 1. Little-endian frames:
//
//   u32 length        bytes after this field (8 + payload)
//   u8  version       1
//   u8  op            Op
//   i16 status        responses: a TC_* status; requests: 0
//   u32 request_id    echoed in the response
//   payload
//
// Requests:  kLookup / kInvalidate: u8 ns_len, ns, u16 key_len, key (as given:
//            the daemon validates it); kInvalidateTenant: u16 len, id;
//            kFlush, kStats: empty; kReport (never answered): a client
//            process's cumulative read counters (ReportPayload).
// Responses: kLookup with TC_FOUND: u16 key_len, u16 tenant_len, u16
//            field_count, u16 0, u32 data_len, data (the slot data layout of
//            entry.h); kStats: JSON text; any other: empty or a message.
// A request longer than kMaxRequest, of another version or malformed closes
// the connection; nothing else is affected.
#ifndef TENANTCACHE_PROTOCOL_H_
#define TENANTCACHE_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tenantcache::protocol {

inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kHeaderSize = 12;
inline constexpr size_t kMaxRequest = 1024;
inline constexpr size_t kMaxResponse = 1 << 20;

enum Op : uint8_t {
  kLookup = 1,
  kInvalidate = 2,
  kInvalidateTenant = 3,
  kFlush = 4,
  kStats = 5,
  kReport = 6
};

struct Frame {
  uint8_t op = 0;
  int16_t status = 0;
  uint32_t request_id = 0;
  std::string_view payload;
};

// Appends one frame to `out`.
void AppendFrame(std::string* out, uint8_t op, int16_t status, uint32_t request_id, std::string_view payload);

enum class Parse { kFrame, kNeedMore, kBad };

// Extracts the first frame of `buf` (at most `max_len` bytes long) into
// `frame` (viewing `buf`), and its total size into `consumed`.
Parse ParseFrame(std::string_view buf, size_t max_len, Frame* frame, size_t* consumed, const char** error);

// Request payloads.
std::string KeyPayload(std::string_view ns, std::string_view key);
bool ParseKeyPayload(std::string_view p, std::string_view* ns, std::string_view* key);
std::string TenantPayload(std::string_view tenant);
bool ParseTenantPayload(std::string_view p, std::string_view* tenant);

// A found value.
struct ValuePayload {
  uint16_t key_len = 0, tenant_len = 0, field_count = 0;
  std::string_view data;
};
std::string EncodeValue(uint16_t key_len, uint16_t tenant_len, uint16_t field_count, std::string_view data);
bool ParseValue(std::string_view p, ValuePayload* out);

// A client's read counters: pid, handle id, hits, negative hits, misses,
// unavailable (cumulative since the handle was opened).
struct Report {
  uint32_t pid = 0;
  uint64_t handle = 0, hits = 0, negative_hits = 0, misses = 0, unavailable = 0;
};
std::string ReportPayload(const Report& r);
bool ParseReport(std::string_view p, Report* out);

}  // namespace tenantcache::protocol

#endif  // TENANTCACHE_PROTOCOL_H_
