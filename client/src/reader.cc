#include "reader.h"

#include <cstring>
#include <string_view>

#include "keys.h"

namespace tenantcache {

const uint64_t kCoarseResolutionNs = [] {
  timespec ts{};
  clock_getres(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}();

using layout::FileHeader;
using layout::NamespaceDesc;

namespace {

bool Terminated(const char* s, size_t cap) { return std::memchr(s, '\0', cap) != nullptr; }

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

const char* ValidateLayout(const void* base, size_t size) {
  if (size < sizeof(FileHeader)) return "file is shorter than a cache header";
  const auto* h = static_cast<const FileHeader*>(base);
  if (std::memcmp(h->magic, layout::kMagic, sizeof h->magic) != 0)
    return "not a tenantcache file (bad magic)";
  if (h->layout_version != layout::kLayoutVersion) return "unknown cache layout version";
  if (h->header_size != sizeof(FileHeader) || h->fingerprint != layout::Fingerprint())
    return "cache layout fingerprint does not match this build";
  if (h->file_size != size) return "file size does not match its header (truncated?)";
  if (h->slot_size < layout::kMinSlotSize || h->slot_size > layout::kMaxSlotSize ||
      h->slot_size % layout::kCacheLine != 0)
    return "slot size out of range";
  if (h->slots_per_bucket != layout::kSlotsPerBucket) return "unexpected bucket associativity";
  if (h->namespace_count > layout::kMaxNamespaces) return "too many namespaces";
  if (h->namespaces_offset != layout::NamespacesOffset() ||
      h->tenant_gens_offset != layout::TenantGensOffset())
    return "unexpected table offsets";
  const uint64_t gens = h->tenant_gen_count;
  if (gens == 0 || (gens & (gens - 1)) != 0 || gens > (uint64_t{1} << 32))
    return "tenant generation table size is not a power of two";
  uint64_t gen_bytes, slot_count, slot_bytes;
  if (MulOverflows(gens, 8, &gen_bytes) || h->bucket_count > (uint64_t{1} << 40) ||
      MulOverflows(h->bucket_count, layout::kSlotsPerBucket, &slot_count) ||
      MulOverflows(slot_count, h->slot_size, &slot_bytes))
    return "table sizes overflow";
  if (h->bucket_count == 0 || h->tags_offset != h->tenant_gens_offset + gen_bytes ||
      h->slots_offset != h->tags_offset + layout::TagTableBytes(h->bucket_count))
    return "unexpected table offsets";
  if (h->slots_offset + slot_bytes != size) return "slot area does not match the file size";
  const auto* ns =
      reinterpret_cast<const NamespaceDesc*>(static_cast<const unsigned char*>(base) + h->namespaces_offset);
  for (uint32_t i = 0; i < h->namespace_count; ++i) {
    if (!Terminated(ns[i].name, layout::kNameMax) || ns[i].name[0] == '\0')
      return "namespace name is not terminated";
    if (KeyKindName(ns[i].key_kind) == std::string_view("unknown")) return "unknown key kind";
    if (ns[i].field_count > layout::kMaxFields) return "namespace has too many fields";
    for (uint32_t f = 0; f < ns[i].field_count; ++f)
      if (!Terminated(ns[i].field_names[f], layout::kNameMax)) return "field name is not terminated";
  }
  if (!Terminated(h->control_socket, sizeof h->control_socket))
    return "control socket path is not terminated";
  return nullptr;
}

}  // namespace tenantcache
