#include "entry.h"

#include <cstring>

#include "cache_layout.h"

namespace tenantcache {
size_t EncodedSize(std::string_view key, std::string_view tenant,
                   const std::vector<std::optional<std::string_view>>& fields) {
  if (key.size() > layout::kMaxKeyLen || tenant.size() >= layout::kNullField ||
      fields.size() > layout::kMaxFields)
    return 0;
  size_t n = key.size() + 1 + tenant.size() + 1 + 2 * fields.size();
  for (const auto& f : fields) {
    if (!f) continue;
    if (f->size() >= layout::kNullField) return 0;
    n += f->size() + 1;
  }
  return n;
}

size_t EncodeEntry(std::string_view key, std::string_view tenant,
                   const std::vector<std::optional<std::string_view>>& fields, unsigned char* out) {
  unsigned char* p = out;
  auto put = [&p](std::string_view s) {
    if (!s.empty()) std::memcpy(p, s.data(), s.size());
    p += s.size();
    *p++ = 0;
  };
  put(key);
  put(tenant);
  for (const auto& f : fields) {
    const uint16_t len = f ? static_cast<uint16_t>(f->size()) : layout::kNullField;
    *p++ = static_cast<unsigned char>(len & 0xFF);
    *p++ = static_cast<unsigned char>(len >> 8);
  }
  for (const auto& f : fields)
    if (f) put(*f);
  return static_cast<size_t>(p - out);
}

bool DecodeEntry(const unsigned char* data, size_t data_len, size_t key_len, size_t tenant_len,
                 uint32_t field_count, EntryView* out) {
  static_assert(layout::kMaxDataSize < layout::kNullField);
  if (field_count > layout::kMaxFields) return false;
  const size_t head = key_len + 1 + tenant_len + 1 + 2 * size_t{field_count};
  if (head > data_len) return false;
  // Every string must end in its NUL: callers hand them to C as they are.
  if (data[key_len] != 0 || data[key_len + 1 + tenant_len] != 0) return false;
  // One pass: each value's NUL is read only once the lengths before it are
  // known to fit, so nothing past data_len is read.
  const unsigned char* lens = data + key_len + 1 + tenant_len + 1;
  size_t end = head;
  for (uint32_t i = 0; i < field_count; ++i) {
    const uint16_t len = static_cast<uint16_t>(lens[2 * i] | (lens[2 * i + 1] << 8));
    if (i < EntryView::kIndexedFields)
      out->value_off[i] = len == layout::kNullField ? layout::kNullField : static_cast<uint16_t>(end);
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

void EntryField(const EntryView& e, uint32_t index, const char** text, size_t* len) {
  const char* p = e.values;
  for (uint32_t i = 0; i < index; ++i) {
    const uint16_t l = FieldLen(e, i);
    if (l != layout::kNullField) p += size_t{l} + 1;
  }
  const uint16_t l = FieldLen(e, index);
  if (l == layout::kNullField) {
    *text = nullptr;
    *len = 0;
  } else {
    *text = p;
    *len = l;
  }
}

}  // namespace tenantcache
