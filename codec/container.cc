// Container (".dds") serialization and validation. The byte layout is specified in
// codec/FORMAT.md; keep the two in step.
#include "codec/container.h"

#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codec/container_checks.h"
#include "common/coding.h"
#include "common/file.h"
#include "common/json.h"
#include "common/status_macros.h"
#include "common/tmp_files.h"

namespace deltaserve::codec {
namespace {

constexpr uint8_t kMagic[8] = {'D', 'S', 'D', 'E', 'L', 'T', 'A', 0x1A};
constexpr uint8_t kRecordMagic[4] = {'D', 'R', 'e', 'c'};
constexpr uint8_t kTrailerMagic[4] = {'D', 'E', 'n', 'd'};

// Header: magic(8) version(4) header_length(4) base_hash(16) tensor_count(4)
// metadata_count(4) ... checksum(8).
constexpr size_t kMinHeaderSize = 8 + 4 + 4 + 16 + 4 + 4 + 8;
constexpr size_t kMaxHeaderSize = size_t{16} << 20;
// Record: magic(4) length(8) name_length(2) name(>=1) dtype(1) encoding(1) rank(1)
// base_rank(1) shapes(8 each) rows(8) cols(8) payload_length(8) extra_length(8) ...
// checksum(8).
constexpr size_t kRecordFixedSize = 4 + 8 + 2 + 4 + 8 + 8 + 8 + 8 + 8;
constexpr size_t kMinRecordSize = kRecordFixedSize + 1;
constexpr size_t kMaxNameSize = 4096;
constexpr int kMaxRank = 8;
// Element counts above this cannot be a real tensor and would overflow byte counts.
constexpr int64_t kMaxElements = int64_t{1} << 56;

using common::ByteReader;
using common::ByteWriter;
using common::DecodeFixed;

uint64_t Hash64(absl::Span<const uint8_t> b) { return XXH3_64bits(b.data(), b.size()); }

// The checksum a piece (header or record) ends with. REQUIRES: piece.size() >= 8.
uint64_t StoredChecksum(absl::Span<const uint8_t> piece) {
  return DecodeFixed(piece.data() + piece.size() - 8, 8);
}

void AppendChecksum(std::vector<uint8_t>* bytes) {
  uint64_t sum = Hash64(absl::MakeConstSpan(*bytes));
  ByteWriter(bytes).U64(sum);
}

// Trailer: magic(4) record_count(4) total_size(8) checksum(8), where checksum is XXH3-64
// over the first 16 trailer bytes, then the header's checksum, then each record's
// checksum (each as 8 little-endian bytes).
std::vector<uint8_t> MakeTrailer(uint64_t header_checksum,
                                 absl::Span<const uint64_t> record_checksums,
                                 uint64_t bytes_before_trailer) {
  std::vector<uint8_t> t;
  ByteWriter w(&t);
  w.Bytes(kTrailerMagic, 4);
  w.U32(static_cast<uint32_t>(record_checksums.size()));
  w.U64(bytes_before_trailer + kContainerTrailerSize);
  std::vector<uint8_t> chain;
  ByteWriter cw(&chain);
  cw.Bytes(t.data(), t.size());
  cw.U64(header_checksum);
  for (uint64_t c : record_checksums) cw.U64(c);
  w.U64(Hash64(chain));
  return t;
}

// Printable form of a tensor name read from untrusted bytes.
std::string SafeName(std::string_view name) {
  std::string out;
  for (char ch : name) {
    const auto c = static_cast<uint8_t>(ch);
    if (c >= 0x20 && c < 0x7f && c != '\'') {
      out.push_back(ch);
    } else {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    }
  }
  return out;
}

std::string_view AsChars(absl::Span<const uint8_t> b) {
  return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
}

// "tensor 'name'" if the name field of an unverified record is readable, else
// "record (name unreadable)".
std::string RecordLabel(absl::Span<const uint8_t> rec) {
  if (rec.size() < kMinRecordSize) return "record (name unreadable)";
  ByteReader r(rec.subspan(12, rec.size() - 12 - 8));
  uint16_t n = 0;
  absl::Span<const uint8_t> name;
  if (!r.U16(&n) || n == 0 || n > kMaxNameSize || !r.Bytes(n, &name)) {
    return "record (name unreadable)";
  }
  return absl::StrCat("tensor '", SafeName(AsChars(name)), "'");
}

absl::Status CheckShape(const std::vector<int64_t>& shape, const char* what,
                        const std::string& label) {
  if (shape.size() > static_cast<size_t>(kMaxRank)) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": ", what, " has rank ", shape.size(), " > ", kMaxRank));
  }
  auto n = CheckedNumElements(shape);
  if (!n.ok() || *n > kMaxElements) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": invalid ", what, " ", ShapeString(shape)));
  }
  return absl::OkStatus();
}

// Semantic checks shared by the writer and the reader (FORMAT.md, "Record").
absl::Status ValidateRecord(const TensorRecord& r) {
  const std::string label = absl::StrCat("tensor '", SafeName(r.info.name), "'");
  if (r.info.name.empty() || r.info.name.size() > kMaxNameSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": name must be 1..", kMaxNameSize, " bytes, is ", r.info.name.size()));
  }
  if (static_cast<uint8_t>(r.info.dtype) > static_cast<uint8_t>(kLastDType)) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": unknown dtype ", static_cast<int>(r.info.dtype)));
  }
  if (static_cast<uint8_t>(r.encoding) > static_cast<uint8_t>(kLastEncoding)) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": unknown encoding ", static_cast<int>(r.encoding)));
  }
  DS_RETURN_IF_ERROR(CheckShape(r.info.shape, "shape", label));
  DS_RETURN_IF_ERROR(CheckShape(r.base_shape, "base shape", label));
  const int64_t n = NumElements(r.info.shape);
  const uint64_t elem = DTypeSize(r.info.dtype);
  const bool has_base = !r.base_shape.empty() || r.encoding != Encoding::kRaw;
  if (has_base) {
    bool ok = r.base_shape.size() == r.info.shape.size();
    for (size_t i = 0; ok && i < r.base_shape.size(); ++i) {
      ok = i == 0 ? r.base_shape[0] <= r.info.shape[0] : r.base_shape[i] == r.info.shape[i];
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": base shape ", ShapeString(r.base_shape), " does not fit shape ",
                       ShapeString(r.info.shape), " (only dim 0 may be smaller)"));
    }
  }
  const int64_t base_n = has_base ? NumElements(r.base_shape) : 0;
  const uint64_t extra_bytes = static_cast<uint64_t>(n - base_n) * elem;
  switch (r.encoding) {
    case Encoding::kUnchanged:
      if (r.base_shape != r.info.shape || !r.payload.empty() || !r.extra_rows.empty() ||
          r.rows != 0 || r.cols != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(label,
                         ": unchanged tensor must have base shape == shape, rows = cols = 0 and "
                         "no payload or extra rows"));
      }
      break;
    case Encoding::kRaw:
      if (r.payload.size() != static_cast<uint64_t>(n) * elem || !r.extra_rows.empty() ||
          r.rows != 0 || r.cols != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            label, ": raw payload is ", r.payload.size(), " bytes, shape ",
            ShapeString(r.info.shape), " ", std::string(DTypeName(r.info.dtype)), " needs ",
            static_cast<uint64_t>(n) * elem, " (and rows = cols = 0, no extra rows)"));
      }
      break;
    case Encoding::kDct:
    case Encoding::kEcq:
      if (!IsCastable(r.info.dtype)) {
        return absl::InvalidArgumentError(absl::StrCat(
            label, ": dtype ", std::string(DTypeName(r.info.dtype)), " cannot be DCT-coded"));
      }
      if (r.rows <= 0 || r.cols <= 0 || r.rows > kMaxElements / r.cols ||
          r.rows * r.cols != base_n) {
        return absl::InvalidArgumentError(absl::StrCat(label, ": DCT view ", r.rows, " x ", r.cols,
                                                       " does not cover base shape ",
                                                       ShapeString(r.base_shape)));
      }
      if (r.payload.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(label, ": empty DCT payload"));
      }
      if (r.extra_rows.size() != extra_bytes) {
        return absl::InvalidArgumentError(
            absl::StrCat(label, ": extra rows are ", r.extra_rows.size(), " bytes, expected ",
                         extra_bytes, " for shape ", ShapeString(r.info.shape), " over base shape ",
                         ShapeString(r.base_shape)));
      }
      break;
  }
  return absl::OkStatus();
}

}  // namespace

bool StartsWithContainerMagic(absl::Span<const uint8_t> bytes) {
  return bytes.size() >= sizeof(kMagic) && std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) == 0;
}

namespace {

absl::Status ParseHeader(absl::Span<const uint8_t> bytes, ContainerHeader* header,
                         size_t* header_size) {
  if (bytes.size() < kMinHeaderSize) {
    return absl::DataLossError(absl::StrCat("container truncated: ", bytes.size(),
                                            " bytes, a header alone needs ", kMinHeaderSize));
  }
  if (!StartsWithContainerMagic(bytes)) {
    return absl::DataLossError("bad magic: not a deltaserve delta container");
  }
  ByteReader r(bytes.subspan(8));
  uint32_t version = 0, size = 0;
  r.U32(&version);
  r.U32(&size);
  if (version != kContainerFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported container format version ", version,
                                                   " (this reader supports ",
                                                   kContainerFormatVersion, ")"));
  }
  if (size < kMinHeaderSize || size > kMaxHeaderSize || size > bytes.size()) {
    return absl::DataLossError(absl::StrCat("header length ", size, " is outside [", kMinHeaderSize,
                                            ", min(", kMaxHeaderSize, ", ", bytes.size(),
                                            " file bytes)]"));
  }
  const auto hb = bytes.subspan(0, size);
  if (Hash64(hb.subspan(0, size - 8)) != StoredChecksum(hb)) {
    return absl::DataLossError("header checksum mismatch");
  }
  ByteReader f(hb.subspan(16, size - 16 - 8));
  absl::Span<const uint8_t> hash;
  uint32_t meta_count = 0;
  f.Bytes(16, &hash);
  f.U32(&header->tensor_count);
  f.U32(&meta_count);
  std::copy(hash.begin(), hash.end(), header->base_hash.begin());
  header->format_version = version;
  header->metadata.clear();
  std::string prev;
  for (uint32_t i = 0; i < meta_count; ++i) {
    uint32_t kl = 0, vl = 0;
    absl::Span<const uint8_t> k, v;
    if (!f.U32(&kl) || !f.Bytes(kl, &k) || !f.U32(&vl) || !f.Bytes(vl, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("header metadata entry ", i, " of ", meta_count, " runs past the header"));
    }
    std::string key(k.begin(), k.end());
    if (i > 0 && key <= prev) {
      return absl::InvalidArgumentError(absl::StrCat("header metadata key '", SafeName(AsChars(k)),
                                                     "' is not in strictly increasing order"));
    }
    header->metadata.emplace(key, std::string(v.begin(), v.end()));
    prev = std::move(key);
  }
  if (f.remaining() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("header has ", f.remaining(), " unexplained bytes after its metadata"));
  }
  DS_ASSIGN_OR_RETURN(header->base_alias, ParseBaseAlias(header->metadata));
  *header_size = size;
  return absl::OkStatus();
}

}  // namespace

std::string BaseHashHex(const BaseHash& hash) {
  std::string out;
  for (uint8_t b : hash) absl::StrAppendFormat(&out, "%02x", b);
  return out;
}

std::string_view EncodingName(Encoding e) {
  switch (e) {
    case Encoding::kUnchanged:
      return "unchanged";
    case Encoding::kRaw:
      return "raw";
    case Encoding::kDct:
      return "dct";
    case Encoding::kEcq:
      return "ecq";
  }
  return "unknown";
}

uint64_t SerializedRecordSize(const TensorRecord& record) {
  return kRecordFixedSize + record.info.name.size() +
         8 * (record.info.shape.size() + record.base_shape.size()) + record.payload.size() +
         record.extra_rows.size();
}

absl::StatusOr<std::vector<uint8_t>> SerializeRecord(const TensorRecord& record) {
  DS_RETURN_IF_ERROR(ValidateRecord(record));
  std::vector<uint8_t> out;
  const size_t total = SerializedRecordSize(record);
  out.reserve(total);
  ByteWriter w(&out);
  w.Bytes(kRecordMagic, 4);
  w.U64(total);
  w.U16(static_cast<uint16_t>(record.info.name.size()));
  w.Bytes(record.info.name.data(), record.info.name.size());
  w.U8(static_cast<uint8_t>(record.info.dtype));
  w.U8(static_cast<uint8_t>(record.encoding));
  w.U8(static_cast<uint8_t>(record.info.shape.size()));
  w.U8(static_cast<uint8_t>(record.base_shape.size()));
  for (int64_t d : record.info.shape) w.I64(d);
  for (int64_t d : record.base_shape) w.I64(d);
  w.I64(record.rows);
  w.I64(record.cols);
  w.U64(record.payload.size());
  w.U64(record.extra_rows.size());
  w.Bytes(record.payload.data(), record.payload.size());
  w.Bytes(record.extra_rows.data(), record.extra_rows.size());
  AppendChecksum(&out);
  return out;
}

absl::StatusOr<TensorRecord> ParseRecord(absl::Span<const uint8_t> bytes) {
  if (bytes.size() < kMinRecordSize) {
    return absl::DataLossError(absl::StrCat("record truncated: ", bytes.size(), " bytes, at least ",
                                            kMinRecordSize, " needed"));
  }
  const std::string label = RecordLabel(bytes);
  if (std::memcmp(bytes.data(), kRecordMagic, 4) != 0) {
    return absl::DataLossError(absl::StrCat(label, ": bad record magic"));
  }
  if (DecodeFixed(bytes.data() + 4, 8) != bytes.size()) {
    return absl::DataLossError(absl::StrCat(label, ": record length field says ",
                                            DecodeFixed(bytes.data() + 4, 8), " bytes, record has ",
                                            bytes.size()));
  }
  if (Hash64(bytes.subspan(0, bytes.size() - 8)) != StoredChecksum(bytes)) {
    return absl::DataLossError(absl::StrCat(label, ": record checksum mismatch"));
  }
  // The checksum holds, so the fields are as written; still check every length so that a
  // buggy or hostile writer cannot make us read out of bounds.
  ByteReader r(bytes.subspan(12, bytes.size() - 12 - 8));
  TensorRecord rec;
  uint16_t name_len = 0;
  uint8_t dtype = 0, encoding = 0, rank = 0, base_rank = 0;
  absl::Span<const uint8_t> name;
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": ", what));
  };
  if (!r.U16(&name_len) || !r.Bytes(name_len, &name) || !r.U8(&dtype) || !r.U8(&encoding) ||
      !r.U8(&rank) || !r.U8(&base_rank)) {
    return bad("record fields run past the record");
  }
  if (dtype > static_cast<uint8_t>(kLastDType)) {
    return bad(absl::StrCat("unknown dtype ", dtype));
  }
  if (encoding > static_cast<uint8_t>(kLastEncoding)) {
    return bad(absl::StrCat("unknown encoding ", encoding));
  }
  if (rank > kMaxRank || base_rank > kMaxRank) {
    return bad(absl::StrCat("rank ", rank, " / base rank ", base_rank, " above ", kMaxRank));
  }
  rec.info.name.assign(name.begin(), name.end());
  rec.info.dtype = static_cast<DType>(dtype);
  rec.encoding = static_cast<Encoding>(encoding);
  rec.info.shape.resize(rank);
  rec.base_shape.resize(base_rank);
  bool ok = true;
  for (auto& d : rec.info.shape) ok = ok && r.I64(&d);
  for (auto& d : rec.base_shape) ok = ok && r.I64(&d);
  uint64_t payload_len = 0, extra_len = 0;
  ok = ok && r.I64(&rec.rows) && r.I64(&rec.cols) && r.U64(&payload_len) && r.U64(&extra_len);
  if (!ok) return bad("record fields run past the record");
  if (payload_len > r.remaining() || extra_len != r.remaining() - payload_len) {
    return bad(absl::StrCat("payload length ", payload_len, " + extra rows length ", extra_len,
                            " != ", r.remaining(), " bytes left in the record"));
  }
  r.Bytes(payload_len, &rec.payload);
  r.Bytes(extra_len, &rec.extra_rows);
  DS_RETURN_IF_ERROR(ValidateRecord(rec));
  return rec;
}

std::vector<uint8_t> SerializeHeader(const ContainerHeader& header) {
  std::vector<uint8_t> out;
  ByteWriter w(&out);
  w.Bytes(kMagic, sizeof(kMagic));
  w.U32(kContainerFormatVersion);
  w.U32(0);  // header length, patched below
  w.Bytes(header.base_hash.data(), header.base_hash.size());
  w.U32(header.tensor_count);
  w.U32(static_cast<uint32_t>(header.metadata.size()));
  for (const auto& [k, v] : header.metadata) {
    w.U32(static_cast<uint32_t>(k.size()));
    w.Bytes(k.data(), k.size());
    w.U32(static_cast<uint32_t>(v.size()));
    w.Bytes(v.data(), v.size());
  }
  const uint32_t size = static_cast<uint32_t>(out.size() + 8);
  common::EncodeFixed(out.data() + 12, size, 4);
  AppendChecksum(&out);
  return out;
}

void ContainerTrailerBuilder::AddHeader(absl::Span<const uint8_t> header_bytes) {
  header_checksum_ = header_bytes.size() >= 8 ? StoredChecksum(header_bytes) : 0;
  bytes_ += header_bytes.size();
}

void ContainerTrailerBuilder::AddRecord(absl::Span<const uint8_t> record_bytes) {
  record_checksums_.push_back(record_bytes.size() >= 8 ? StoredChecksum(record_bytes) : 0);
  bytes_ += record_bytes.size();
}

std::vector<uint8_t> ContainerTrailerBuilder::Finish() const {
  return MakeTrailer(header_checksum_, record_checksums_, bytes_);
}

std::vector<uint8_t> SerializeTrailer(absl::Span<const uint8_t> header_bytes,
                                      const std::vector<absl::Span<const uint8_t>>& records) {
  ContainerTrailerBuilder trailer;
  trailer.AddHeader(header_bytes);
  for (const auto& rec : records) trailer.AddRecord(rec);
  return trailer.Finish();
}

std::vector<uint8_t> AssembleContainer(absl::Span<const uint8_t> header_bytes,
                                       const std::vector<absl::Span<const uint8_t>>& records) {
  std::vector<uint8_t> out(header_bytes.begin(), header_bytes.end());
  for (const auto& rec : records) out.insert(out.end(), rec.begin(), rec.end());
  const auto trailer = SerializeTrailer(header_bytes, records);
  out.insert(out.end(), trailer.begin(), trailer.end());
  return out;
}

absl::StatusOr<std::map<std::string, std::string>> ParseBaseAlias(
    const std::map<std::string, std::string>& metadata) {
  std::map<std::string, std::string> alias;
  auto it = metadata.find(kBaseAliasKey);
  if (it == metadata.end()) return alias;
  const std::string what = absl::StrCat("header metadata '", kBaseAliasKey, "'");
  DS_ASSIGN_OR_RETURN(nlohmann::json j, common::ParseJson(it->second, what, "tensor name"));
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expected a JSON object"));
  }
  for (const auto& [key, value] : j.items()) {
    DS_ASSIGN_OR_RETURN(std::string base,
                        common::JsonToString(value, absl::StrCat(what, ": '", key, "'")));
    if (key.empty() || base.empty() || key == base) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": '", key, "' -> '", base, "' is not a tie of two named tensors"));
    }
    alias.emplace(key, std::move(base));
  }
  return alias;
}

absl::StatusOr<std::string> SerializeBaseAlias(const std::map<std::string, std::string>& alias) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [key, value] : alias) j[key] = value;
  return common::DumpJson(j, kBaseAliasKey);
}

absl::StatusOr<std::optional<ContainerHeader>> ParseContainerHeaderPrefix(
    absl::Span<const uint8_t> prefix, size_t* header_size) {
  const size_t magic = std::min(prefix.size(), sizeof(kMagic));
  if (magic > 0 && std::memcmp(prefix.data(), kMagic, magic) != 0) {
    return absl::DataLossError("bad magic: not a deltaserve delta container");
  }
  if (prefix.size() < kMinHeaderSize) return std::nullopt;
  if (DecodeFixed(prefix.data() + 8, 4) == kContainerFormatVersion) {
    const uint64_t size = DecodeFixed(prefix.data() + 12, 4);
    if (size < kMinHeaderSize || size > kMaxHeaderSize) {
      return absl::DataLossError(absl::StrCat("header length ", size, " is outside [",
                                              kMinHeaderSize, ", ", kMaxHeaderSize, "]"));
    }
    if (prefix.size() < size) return std::nullopt;
    prefix = prefix.subspan(0, size);
  }
  // Another version: ParseHeader says which.
  ContainerHeader header;
  DS_RETURN_IF_ERROR(ParseHeader(prefix, &header, header_size));
  return header;
}

absl::StatusOr<ContainerReader> ContainerReader::Parse(absl::Span<const uint8_t> bytes) {
  ContainerReader reader;
  size_t header_size = 0;
  DS_RETURN_IF_ERROR(ParseHeader(bytes, &reader.header_, &header_size));
  if (bytes.size() - header_size < kContainerTrailerSize) {
    return absl::DataLossError(absl::StrCat("container truncated: ", bytes.size(),
                                            " bytes leave no room for the trailer"));
  }
  const size_t end = bytes.size() - kContainerTrailerSize;
  const auto trailer = bytes.subspan(end);
  if (std::memcmp(trailer.data(), kTrailerMagic, 4) != 0) {
    return absl::DataLossError(absl::StrCat("bad trailer magic: container truncated or corrupt (",
                                            bytes.size(), " bytes)"));
  }
  const uint64_t trailer_count = DecodeFixed(trailer.data() + 4, 4);
  const uint64_t total_size = DecodeFixed(trailer.data() + 8, 8);
  if (total_size != bytes.size()) {
    return absl::DataLossError(
        absl::StrCat("container is ", bytes.size(), " bytes but its trailer says ", total_size));
  }
  reader.header_bytes_ = bytes.subspan(0, header_size);
  reader.trailer_bytes_ = trailer;
  // Walk the record framing. Lengths are bounded by what is left, so a lying length
  // ends the walk with an error instead of a read past the records.
  size_t pos = header_size;
  std::vector<uint64_t> sums;
  while (pos < end) {
    const size_t index = reader.records_.size();
    const auto rest = bytes.subspan(pos, end - pos);
    if (index >= reader.header_.tensor_count) {
      return absl::DataLossError(absl::StrCat("more records than the header's tensor count ",
                                              reader.header_.tensor_count, " (offset ", pos, ")"));
    }
    if (rest.size() < kMinRecordSize || std::memcmp(rest.data(), kRecordMagic, 4) != 0) {
      return absl::DataLossError(
          absl::StrCat("record ", index, " at offset ", pos, ": truncated or bad magic"));
    }
    const uint64_t len = DecodeFixed(rest.data() + 4, 8);
    if (len < kMinRecordSize || len > rest.size()) {
      return absl::DataLossError(
          absl::StrCat("record ", index, " (", RecordLabel(rest), ") at offset ", pos, ": length ",
                       len, " runs past the ", rest.size(), " bytes left before the trailer"));
    }
    reader.records_.push_back(rest.subspan(0, len));
    sums.push_back(StoredChecksum(reader.records_.back()));
    pos += len;
  }
  if (MakeTrailer(StoredChecksum(reader.header_bytes_), sums, end) !=
      std::vector<uint8_t>(trailer.begin(), trailer.end())) {
    if (sums.size() != trailer_count) {
      return absl::DataLossError(absl::StrCat("trailer checksum mismatch (", sums.size(),
                                              " records, trailer says ", trailer_count, ")"));
    }
    return absl::DataLossError(absl::StrCat(
        "trailer checksum mismatch: the header's and the ", sums.size(),
        " records' stored checksums do not give the trailer's (a byte changed in a record's "
        "checksum, the header or the trailer)"));
  }
  if (reader.records_.size() != reader.header_.tensor_count) {
    return absl::DataLossError(absl::StrCat("container has ", reader.records_.size(),
                                            " records, its header says ",
                                            reader.header_.tensor_count));
  }
  return reader;
}

absl::StatusOr<TensorRecord> ContainerReader::record(size_t i) const {
  if (i >= records_.size()) {
    return absl::OutOfRangeError(
        absl::StrCat("record ", i, " of a container with ", records_.size(), " records"));
  }
  auto rec = ParseRecord(records_[i]);
  if (!rec.ok()) {
    return common::Annotate(rec.status(), absl::StrCat("record ", i));
  }
  if (auto it = header_.base_alias.find(rec->info.name); it != header_.base_alias.end()) {
    rec->base_name = it->second;
  }
  return rec;
}

namespace {

class FileContainerWriter : public ContainerWriter {
 public:
  FileContainerWriter(std::string path, FILE* f, uint32_t expected)
      : path_(std::move(path)), tmp_(path_ + ".tmp"), file_(f), expected_(expected) {
    common::TrackTmpFile(tmp_);
  }
  ~FileContainerWriter() override {
    if (file_ != nullptr) {
      std::fclose(file_);
      std::remove(tmp_.c_str());
    }
    common::UntrackTmpFile(tmp_);
  }

  absl::Status Write(absl::Span<const uint8_t> b) {
    errno = 0;
    if (std::fwrite(b.data(), 1, b.size(), file_) != b.size()) {
      // errno's code: a full disk is RESOURCE_EXHAUSTED, not INTERNAL.
      return common::ErrnoStatus(errno != 0 ? errno : EIO, absl::StrCat(tmp_, ": write failed"));
    }
    written_ += b.size();
    return absl::OkStatus();
  }

  absl::Status WriteHeader(const ContainerHeader& header) {
    const auto bytes = SerializeHeader(header);
    header_checksum_ = StoredChecksum(bytes);
    return Write(bytes);
  }

  absl::Status Add(const TensorRecord& record) override {
    if (file_ == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(path_, ": Add after Finish"));
    }
    if (sums_.size() >= expected_) {
      return absl::FailedPreconditionError(
          absl::StrCat(path_, ": tensor '", record.info.name, "' would be record ",
                       sums_.size() + 1, " of a container declared with ", expected_));
    }
    DS_RETURN_IF_ERROR(CheckUtf8(record.info.name, "tensor name"));
    DS_RETURN_IF_ERROR(CheckRecordStorable(record.info.name, SerializedRecordSize(record)));
    DS_ASSIGN_OR_RETURN(auto bytes, SerializeRecord(record));
    DS_RETURN_IF_ERROR(Write(bytes));
    sums_.push_back(StoredChecksum(bytes));
    return absl::OkStatus();
  }

  absl::Status Finish() override {
    if (file_ == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(path_, ": Finish called twice"));
    }
    if (sums_.size() != expected_) {
      return absl::FailedPreconditionError(
          absl::StrCat(path_, ": ", sums_.size(), " records added, header declares ", expected_));
    }
    DS_RETURN_IF_ERROR(Write(MakeTrailer(header_checksum_, sums_, written_)));
    int err = std::fflush(file_) == 0 && ::fsync(fileno(file_)) == 0 ? 0 : errno;
    if (std::fclose(file_) != 0 && err == 0) err = errno;
    file_ = nullptr;
    // errno's code, as for Write: a full disk often shows only here (stdio buffers).
    if (err != 0) {
      std::remove(tmp_.c_str());
      return common::ErrnoStatus(err, absl::StrCat(tmp_, ": flush/close failed"));
    }
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      err = errno;
      std::remove(tmp_.c_str());
      return common::ErrnoStatus(err, absl::StrCat("rename ", tmp_, " -> ", path_, " failed"));
    }
    return absl::OkStatus();
  }

  uint64_t bytes_written() const override { return written_; }

 private:
  std::string path_, tmp_;
  FILE* file_;
  uint32_t expected_;
  uint64_t header_checksum_ = 0;
  uint64_t written_ = 0;
  std::vector<uint64_t> sums_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ContainerWriter>> ContainerWriter::Open(
    const std::string& path, const ContainerHeader& header) {
  for (const auto& [key, value] : header.metadata) {
    DS_RETURN_IF_ERROR(CheckUtf8(key, absl::StrCat(path, ": metadata key")));
    DS_RETURN_IF_ERROR(CheckUtf8(value, absl::StrCat(path, ": metadata value of '", key, "':")));
  }
  if (absl::Status s = ParseBaseAlias(header.metadata).status(); !s.ok()) {
    return common::Annotate(s, path);
  }
  if (const size_t n = SerializeHeader(header).size(); n > kMaxHeaderSize) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": container header would be ", n,
                                                   " bytes, more than ", kMaxHeaderSize));
  }
  DS_RETURN_IF_ERROR(common::RefuseSpecialOutput(path));
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return common::ErrnoStatus(errno, absl::StrCat(tmp, ": cannot create"));
  auto writer = std::make_unique<FileContainerWriter>(path, f, header.tensor_count);
  DS_RETURN_IF_ERROR(writer->WriteHeader(header));
  return writer;
}

absl::StatusOr<std::unique_ptr<MappedContainer>> MappedContainer::Open(const std::string& path) {
  std::unique_ptr<MappedContainer> mc(new MappedContainer());
  DS_ASSIGN_OR_RETURN(mc->file_, common::MappedFile::Open(path));
  auto reader = ContainerReader::Parse(mc->file_->bytes());
  if (!reader.ok()) {
    return common::Annotate(reader.status(), path);
  }
  mc->reader_ = *std::move(reader);
  return mc;
}

MappedContainer::~MappedContainer() = default;
absl::Span<const uint8_t> MappedContainer::bytes() const { return file_->bytes(); }
const std::string& MappedContainer::path() const { return file_->path(); }

}  // namespace deltaserve::codec
