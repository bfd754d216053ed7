#include "storage/key_schema.h"

#include <xxhash.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/coding.h"
#include "storage/internal/strings.h"

namespace deltaserve::storage {
namespace {

using common::ByteReader;
using common::ByteWriter;

constexpr std::string_view kMetaMagic = "DSTM";
constexpr std::string_view kUsageMagic = "DSTU";
constexpr uint16_t kMetaVersion = 1;              // a task without side files
constexpr uint16_t kMetaVersionSideFiles = 2;     // with side files
constexpr uint16_t kMetaVersionContentHash = 3;   // side files (maybe none) + container hash
constexpr uint16_t kUsageVersion = 1;
// A rank above this is not a tensor we could have written (codec shapes are small).
constexpr uint8_t kMaxRank = 16;

uint64_t Checksum(std::string_view bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

// Appends the checksum of everything in `out` so far.
void Seal(std::string* out) {
  uint64_t sum = Checksum(*out);
  ByteWriter(out).U64(sum);
}

// Verifies magic, version and trailing checksum; on success `body` is the value
// without the checksum, positioned after magic and version.
absl::Status Unseal(std::string_view value, std::string_view magic, uint16_t min_version,
                    uint16_t max_version, std::string_view what, std::string_view* body,
                    uint16_t* version = nullptr) {
  if (value.size() < magic.size() + 2 + 8) {
    return absl::DataLossError(absl::StrCat(Av(what), ": value truncated (", value.size(), " bytes)"));
  }
  std::string_view payload = value.substr(0, value.size() - 8);
  ByteReader tail(value.substr(value.size() - 8));
  uint64_t stored = 0;
  tail.U64(&stored);
  if (stored != Checksum(payload)) {
    return absl::DataLossError(absl::StrCat(Av(what), ": checksum mismatch"));
  }
  if (payload.substr(0, magic.size()) != magic) {
    return absl::DataLossError(absl::StrCat(Av(what), ": bad magic"));
  }
  ByteReader r(payload.substr(magic.size()));
  uint16_t v = 0;
  r.U16(&v);
  if (v < min_version || v > max_version) {
    return absl::DataLossError(absl::StrCat(Av(what), ": unsupported version ", v));
  }
  if (version != nullptr) *version = v;
  *body = payload.substr(magic.size() + 2);
  return absl::OkStatus();
}

std::string Join(std::string_view a, std::string_view b, std::string_view c) {
  return absl::StrCat(Av(a), Av(b), "/", Av(c));
}

}  // namespace

std::string TaskMetaKey(std::string_view tenant, std::string_view task) {
  return Join("t/", tenant, task);
}
std::string TaskMetaPrefix(std::string_view tenant) { return absl::StrCat("t/", Av(tenant), "/"); }
std::string UsageKey(std::string_view tenant) { return absl::StrCat(kUsagePrefix, Av(tenant)); }
std::string HeaderKey(std::string_view tenant, std::string_view task) {
  return Join("h/", tenant, task);
}
std::string RecordKey(std::string_view tenant, std::string_view task, uint64_t index) {
  std::string key = absl::StrCat(Join("r/", tenant, task), "/");
  for (int i = 7; i >= 0; --i) key.push_back(static_cast<char>((index >> (8 * i)) & 0xff));
  return key;
}
std::string SideFileKey(std::string_view tenant, std::string_view task, std::string_view name) {
  return absl::StrCat(Join("f/", tenant, task), "/", Av(name));
}
std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  end.back() = static_cast<char>(static_cast<uint8_t>(end.back()) + 1);
  return end;
}

std::string EncodeTaskMeta(const TaskInfo& info) {
  std::string out;
  ByteWriter w(&out);
  w.Bytes(kMetaMagic);
  const uint16_t version = info.container_xxh3_64.has_value() ? kMetaVersionContentHash
                           : info.side_files.empty()           ? kMetaVersion
                                                               : kMetaVersionSideFiles;
  w.U16(version);
  w.I64(info.created_unix);
  w.Bytes(std::string_view(reinterpret_cast<const char*>(info.base_hash.data()),
                           info.base_hash.size()));
  w.U64(info.header_bytes);
  w.U64(info.total_bytes);
  w.U64(info.weights);
  w.U32(static_cast<uint32_t>(info.metadata.size()));
  for (const auto& [k, v] : info.metadata) {
    w.Str(k);
    w.Str(v);
  }
  w.U32(static_cast<uint32_t>(info.tensors.size()));
  for (const TensorEntry& t : info.tensors) {
    w.Str(t.name);
    w.U8(static_cast<uint8_t>(t.dtype));
    w.U8(static_cast<uint8_t>(t.encoding));
    w.U8(static_cast<uint8_t>(t.shape.size()));
    for (int64_t d : t.shape) w.I64(d);
    w.U64(t.record_bytes);
  }
  if (version >= kMetaVersionSideFiles) {
    w.U32(static_cast<uint32_t>(info.side_files.size()));
    for (const SideFileEntry& f : info.side_files) {
      w.Str(f.name);
      w.U64(f.bytes);
      w.U64(f.xxh3_64);
    }
  }
  if (version >= kMetaVersionContentHash) w.U64(*info.container_xxh3_64);
  Seal(&out);
  return out;
}

absl::StatusOr<TaskInfo> DecodeTaskMeta(std::string_view value, std::string_view tenant,
                                        std::string_view task) {
  const std::string what = absl::StrCat("task meta of tenant '", Av(tenant), "' task '", Av(task), "'");
  std::string_view body;
  uint16_t version = 0;
  if (absl::Status s = Unseal(value, kMetaMagic, kMetaVersion, kMetaVersionContentHash, what,
                              &body, &version);
      !s.ok()) {
    return s;
  }
  auto truncated = [&] { return absl::DataLossError(absl::StrCat(Av(what), ": truncated")); };
  TaskInfo info;
  info.tenant = std::string(tenant);
  info.task = std::string(task);
  ByteReader r(body);
  std::string_view hash;
  uint32_t n_meta = 0, n_tensors = 0;
  if (!r.I64(&info.created_unix) || !r.Bytes(info.base_hash.size(), &hash) ||
      !r.U64(&info.header_bytes) || !r.U64(&info.total_bytes) || !r.U64(&info.weights) ||
      !r.U32(&n_meta)) {
    return truncated();
  }
  std::memcpy(info.base_hash.data(), hash.data(), hash.size());
  for (uint32_t i = 0; i < n_meta; ++i) {
    std::string k, v;
    if (!r.Str(&k) || !r.Str(&v)) return truncated();
    info.metadata.emplace(std::move(k), std::move(v));
  }
  if (!r.U32(&n_tensors)) return truncated();
  for (uint32_t i = 0; i < n_tensors; ++i) {
    // Each tensor takes at least 4 + 1 + 1 + 1 + 8 bytes: a lying count fails here
    // instead of reserving memory.
    if (r.remaining() < 15) return truncated();
    TensorEntry t;
    uint8_t dtype = 0, encoding = 0, rank = 0;
    if (!r.Str(&t.name) || !r.U8(&dtype) || !r.U8(&encoding) || !r.U8(&rank)) {
      return truncated();
    }
    if (dtype > static_cast<uint8_t>(codec::kLastDType) ||
        encoding > static_cast<uint8_t>(codec::kLastEncoding) || rank > kMaxRank) {
      return absl::DataLossError(absl::StrCat(Av(what), ": tensor ", i, " has dtype ", int{dtype},
                                              ", encoding ", int{encoding}, ", rank ", int{rank}));
    }
    t.dtype = static_cast<codec::DType>(dtype);
    t.encoding = static_cast<codec::Encoding>(encoding);
    t.shape.resize(rank);
    for (int64_t& d : t.shape) {
      if (!r.I64(&d)) return truncated();
    }
    if (!r.U64(&t.record_bytes)) return truncated();
    info.tensors.push_back(std::move(t));
  }
  if (version >= kMetaVersionSideFiles) {
    uint32_t n_files = 0;
    if (!r.U32(&n_files)) return truncated();
    for (uint32_t i = 0; i < n_files; ++i) {
      if (r.remaining() < 20) return truncated();  // 4 + 8 + 8 bytes at least
      SideFileEntry f;
      if (!r.Str(&f.name) || !r.U64(&f.bytes) || !r.U64(&f.xxh3_64)) return truncated();
      info.side_files.push_back(std::move(f));
    }
  }
  if (version >= kMetaVersionContentHash) {
    uint64_t hash = 0;
    if (!r.U64(&hash)) return truncated();
    info.container_xxh3_64 = hash;
  }
  if (r.remaining() != 0) {
    return absl::DataLossError(absl::StrCat(Av(what), ": ", r.remaining(), " trailing bytes"));
  }
  info.bits_per_weight =
      info.weights == 0 ? 0.0 : 8.0 * static_cast<double>(info.total_bytes) / info.weights;
  return info;
}

std::string EncodeUsage(const TenantUsage& usage) {
  std::string out;
  ByteWriter w(&out);
  w.Bytes(kUsageMagic);
  w.U16(kUsageVersion);
  w.U64(usage.bytes);
  w.U64(usage.tasks);
  Seal(&out);
  return out;
}

absl::StatusOr<TenantUsage> DecodeUsage(std::string_view value, std::string_view tenant) {
  const std::string what = absl::StrCat("usage of tenant '", Av(tenant), "'");
  std::string_view body;
  if (absl::Status s = Unseal(value, kUsageMagic, kUsageVersion, kUsageVersion, what, &body);
      !s.ok()) {
    return s;
  }
  ByteReader r(body);
  TenantUsage usage;
  if (!r.U64(&usage.bytes) || !r.U64(&usage.tasks) || r.remaining() != 0) {
    return absl::DataLossError(absl::StrCat(Av(what), ": bad length ", value.size()));
  }
  return usage;
}

}  // namespace deltaserve::storage
