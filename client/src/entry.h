// The data area of a slot: how an entry's key, tenant id and fields are laid
// out, shared by the writer (EncodeEntry) and the readers (DecodeEntry).
//
//   [key][NUL][tenant][NUL][field_count x uint16 length][value NUL]...
//
// A length of layout::kNullField marks SQL NULL and has no bytes (and no NUL).
// Every string is NUL-terminated so C callers can use it as is.
#ifndef TENANTCACHE_ENTRY_H_
#define TENANTCACHE_ENTRY_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace tenantcache {

struct EntryView {
  const char* key = nullptr;
  size_t key_len = 0;
  const char* tenant = nullptr;
  size_t tenant_len = 0;
  uint32_t field_count = 0;
  const unsigned char* lens = nullptr;  // field_count little-endian uint16, unaligned
  const char* values = nullptr;         // the first value's bytes
  // Where each of the first kIndexedFields values starts, from `key` (set
  // by DecodeEntry; layout::kNullField for NULL), so that a field is found
  // without walking the lengths.
  static constexpr uint32_t kIndexedFields = 20;
  uint16_t value_off[kIndexedFields];  // entries past field_count unset
};

// Bytes EncodeEntry needs, or 0 when a length does not fit the format.
size_t EncodedSize(std::string_view key, std::string_view tenant,
                   const std::vector<std::optional<std::string_view>>& fields);

// Writes the entry into `out` (EncodedSize bytes). Returns the size written.
size_t EncodeEntry(std::string_view key, std::string_view tenant,
                   const std::vector<std::optional<std::string_view>>& fields, unsigned char* out);

// Parses `data_len` bytes written by EncodeEntry. False if they are
// inconsistent with the lengths recorded in the slot's metadata or a string
// lacks its terminating NUL.
bool DecodeEntry(const unsigned char* data, size_t data_len, size_t key_len, size_t tenant_len,
                 uint32_t field_count, EntryView* out);

// Field `index` (< field_count) of a decoded entry; `*text` is nullptr for NULL.
void EntryField(const EntryView& e, uint32_t index, const char** text, size_t* len);

// Field `index`'s length (layout::kNullField for NULL) from the view's lengths.
inline uint16_t FieldLen(const EntryView& e, size_t index) {
  return static_cast<uint16_t>(e.lens[2 * index] | (e.lens[2 * index + 1] << 8));
}

}  // namespace tenantcache

#endif  // TENANTCACHE_ENTRY_H_
