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

void EntryField(const EntryView& e, uint32_t index, const char** text, size_t* len) {
  const char* p = e.values + ValueOffset(e.lens, index);
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
