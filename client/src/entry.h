// The data area of a slot: how an entry's key, tenant id and fields are laid
// out, shared by the writer (EncodeEntry) and the readers (DecodeEntry).
//
//   [key][NUL][tenant][NUL][field_count x uint16 length][value NUL]...
//
// A length of layout::kNullField marks SQL NULL and has no bytes (and no NUL).
// Every string is NUL-terminated so C callers can use it as is.
#ifndef TENANTCACHE_ENTRY_H_
#define TENANTCACHE_ENTRY_H_

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "cache_layout.h"

namespace tenantcache {

struct EntryView {
  const char* key;
  size_t key_len;
  const char* tenant;
  size_t tenant_len;
  uint32_t field_count;
  const unsigned char* lens;  // field_count little-endian uint16, unaligned
  const char* values;         // the first value's bytes
};

// Bytes EncodeEntry needs, or 0 when a length does not fit the format.
size_t EncodedSize(std::string_view key, std::string_view tenant,
                   const std::vector<std::optional<std::string_view>>& fields);

// Writes the entry into `out` (EncodedSize bytes). Returns the size written.
size_t EncodeEntry(std::string_view key, std::string_view tenant,
                   const std::vector<std::optional<std::string_view>>& fields, unsigned char* out);

// Length `index` (layout::kNullField for NULL) of an entry's lengths, which
// are little-endian 16-bit words at `lens`.
inline uint16_t LoadLen(const unsigned char* lens, size_t index) {
  if constexpr (std::endian::native == std::endian::little) {
    uint16_t len;
    std::memcpy(&len, lens + 2 * index, sizeof len);
    return len;
  }
  return static_cast<uint16_t>(lens[2 * index] | (lens[2 * index + 1] << 8));
}

// Where an entry's lengths start: after the key and the tenant id and their NULs.
inline size_t LensAt(size_t key_len, size_t tenant_len) { return key_len + 1 + tenant_len + 1; }

// Whether an entry's lengths (`field_count` of them, after the key and the
// tenant id) lie inside `data_len`.
inline bool EntryLensFit(size_t data_len, size_t key_len, size_t tenant_len, uint32_t field_count) {
  return field_count <= layout::kMaxFields &&
         LensAt(key_len, tenant_len) + 2 * size_t{field_count} <= data_len;
}

// The hit path's check of an entry in a slot: its key and tenant id end in
// their NULs and its lengths lie inside `data_len` (EntryLensFit). Each value is checked
// where it is read (FindValue), so that a hit pays only for the fields it
// reads. Inline: it runs on every hit.
inline bool EntryHeadFits(const unsigned char* data, size_t data_len, size_t key_len, size_t tenant_len,
                          uint32_t field_count) {
  static_assert(layout::kMaxDataSize < layout::kNullField);
  if (!EntryLensFit(data_len, key_len, tenant_len, field_count)) return false;
  // Every string must end in its NUL: callers hand them to C as they are.
  return data[key_len] == 0 && data[key_len + 1 + tenant_len] == 0;
}

// How far value `index` starts past the first value: the lengths before it
// (NULL values take no bytes), each value followed by its NUL.
inline size_t ValueOffset(const unsigned char* lens, uint32_t index) {
  size_t at = 0;
  for (uint32_t i = 0; i < index; ++i) {
    const uint16_t l = LoadLen(lens, i);
    if (l != layout::kNullField) at += size_t{l} + 1;
  }
  return at;
}

// Value `index` (< field_count) of an entry whose head fits (EntryHeadFits):
// its offset in `data` (*off) and its length (*len), or *len =
// layout::kNullField for SQL NULL. False when the value or its NUL lies past
// `data_len` or the NUL is missing. Reads nothing past `data_len`.
inline bool FindValue(const unsigned char* data, size_t data_len, size_t lens_at, uint32_t field_count,
                      uint32_t index, size_t* off, uint16_t* len) {
  const unsigned char* lens = data + lens_at;
  const size_t at = lens_at + 2 * size_t{field_count} + ValueOffset(lens, index);
  *len = LoadLen(lens, index);
  *off = at;
  return *len == layout::kNullField || (at + *len < data_len && data[at + *len] == 0);
}

// Parses `data_len` bytes written by EncodeEntry: the head as EntryHeadFits,
// and every value in one pass. False if they are inconsistent with the
// lengths recorded in the slot's metadata or a string lacks its terminating
// NUL; `out` is set only when true.
inline bool DecodeEntry(const unsigned char* data, size_t data_len, size_t key_len, size_t tenant_len,
                        uint32_t field_count, EntryView* out) {
  if (!EntryHeadFits(data, data_len, key_len, tenant_len, field_count)) return false;
  // Each value's NUL is read only once the lengths before it are known to
  // fit, so nothing past data_len is read.
  const unsigned char* lens = data + LensAt(key_len, tenant_len);
  size_t end = LensAt(key_len, tenant_len) + 2 * size_t{field_count};
  for (uint32_t i = 0; i < field_count; ++i) {
    const uint16_t len = LoadLen(lens, i);
    if (len == layout::kNullField) continue;
    end += size_t{len} + 1;
    if (end > data_len || data[end - 1] != 0) return false;
  }
  if (end != data_len) return false;
  out->key = reinterpret_cast<const char*>(data);
  out->key_len = key_len;
  out->tenant = reinterpret_cast<const char*>(data + key_len + 1);
  out->tenant_len = tenant_len;
  out->field_count = field_count;
  out->lens = lens;
  out->values = reinterpret_cast<const char*>(lens + 2 * size_t{field_count});
  return true;
}

// Field `index` (< field_count) of a decoded entry; `*text` is nullptr for NULL.
void EntryField(const EntryView& e, uint32_t index, const char** text, size_t* len);

// Field `index`'s length (layout::kNullField for NULL) from the view's lengths.
inline uint16_t FieldLen(const EntryView& e, size_t index) { return LoadLen(e.lens, index); }

}  // namespace tenantcache

#endif  // TENANTCACHE_ENTRY_H_
