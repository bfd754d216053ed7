// The delta container (".dds"): one file holding a whole compressed delta.
//
// Byte layout, field widths, byte order and reader behaviour are specified in
// codec/FORMAT.md. Structurally a container is exactly
//   header bytes || record bytes (tensor 0) || ... || record bytes (tensor N-1) || trailer
// where each record is self-contained (name, shapes, dtype, encoding, parameters,
// payload) and carries its own checksum, so that storage can keep records apart and
// rebuild the identical file (AssembleContainer).
#ifndef DELTASERVE_CODEC_CONTAINER_H_
#define DELTASERVE_CODEC_CONTAINER_H_

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/tensor.h"

namespace deltaserve::common {
class MappedFile;  // common/file.h
}  // namespace deltaserve::common

namespace deltaserve::codec {

// Identity of a base model: XXH3-128 over its tensors (see ComputeBaseHash).
using BaseHash = std::array<uint8_t, 16>;
std::string BaseHashHex(const BaseHash& hash);

// How a tensor's record encodes it. Numeric values are stored: never renumber.
enum class Encoding : uint8_t {
  kUnchanged = 0,  // finetuned == base bit for bit; empty payload
  kRaw = 1,        // the finetuned tensor's bytes as they are (lossless)
  kDct = 2,        // Delta-DCT payload (codec/delta_dct.h) of the 2-D view of the delta
  kEcq = 3,        // entropy-coded payload (codec/delta_ecq.h) of the 2-D view of the delta
};
inline constexpr Encoding kLastEncoding = Encoding::kEcq;
// kDct and kEcq: a lossy payload of the delta's 2-D view [rows, cols], plus extra rows.
inline bool IsLossyEncoding(Encoding e) { return e == Encoding::kDct || e == Encoding::kEcq; }
std::string_view EncodingName(Encoding e);

struct ContainerHeader {
  uint32_t format_version = 0;  // filled by the reader; writers always write the latest
  BaseHash base_hash{};
  uint32_t tensor_count = 0;
  std::map<std::string, std::string> metadata;  // e.g. codec options, tool version
  // Filled by the reader from metadata[kBaseAliasKey] (writers set that metadata entry,
  // SerializeBaseAlias): finetuned tensor name -> base tensor name it merges into.
  std::map<std::string, std::string> base_alias;
};

// Header metadata key of the tie map: a JSON object {"finetuned name": "base name"} for
// the records that merge into a base tensor of another name (an untied `lm_head.weight`
// coded against the base's `model.embed_tokens.weight`). The only metadata entry needed
// to decode. FORMAT.md, "Tied tensors".
inline constexpr char kBaseAliasKey[] = "deltaserve.base_alias";
// The tie map held in `metadata` (empty when kBaseAliasKey is absent). InvalidArgument
// "header metadata 'deltaserve.base_alias': ..." unless the value is a JSON object whose
// keys and values are non-empty strings, no key mapped to itself.
absl::StatusOr<std::map<std::string, std::string>> ParseBaseAlias(
    const std::map<std::string, std::string>& metadata);
// kBaseAliasKey's value for `alias`: compact JSON, keys in bytewise order (deterministic).
// InvalidArgument if a name is not valid UTF-8.
absl::StatusOr<std::string> SerializeBaseAlias(const std::map<std::string, std::string>& alias);

// One tensor's record, viewing bytes owned elsewhere.
struct TensorRecord {
  TensorInfo info;                  // finetuned tensor: name, output dtype, shape
  std::vector<int64_t> base_shape;  // shape of the base tensor it merges into (may have
                                    // fewer rows: added vocabulary); empty if none
  Encoding encoding = Encoding::kRaw;
  // For kDct/kEcq: 2-D view [rows, cols] of the lossy-coded part (the base-shaped part).
  int64_t rows = 0, cols = 0;
  absl::Span<const uint8_t> payload;     // encoding-specific bytes
  absl::Span<const uint8_t> extra_rows;  // raw finetuned rows beyond base_shape[0]
  // Name of the base tensor it merges into when that is not info.name (a tie, from the
  // header's kBaseAliasKey map; ContainerReader::record and storage fill it); empty: the
  // base tensor of the same name. Not part of the record's bytes.
  std::string base_name;

  // The base tensor this record merges into: base_name, or info.name if that is empty.
  const std::string& base_tensor() const { return base_name.empty() ? info.name : base_name; }
};

// Bytes SerializeRecord makes of `record` (FORMAT.md, "Record"), without making them.
uint64_t SerializedRecordSize(const TensorRecord& record);
// Serializes one record (adds the checksum). InvalidArgument on inconsistent fields.
absl::StatusOr<std::vector<uint8_t>> SerializeRecord(const TensorRecord& record);
// Parses and verifies one record's bytes. DataLoss (checksum mismatch, truncation) or
// InvalidArgument (bad field values); messages name the tensor when its name is readable.
// The returned record views `bytes`.
absl::StatusOr<TensorRecord> ParseRecord(absl::Span<const uint8_t> bytes);

// Version this code writes (and the only one it reads).
inline constexpr uint32_t kContainerFormatVersion = 1;
// Fixed size of the trailer, in bytes (codec/FORMAT.md, "Trailer").
inline constexpr size_t kContainerTrailerSize = 24;

// Serialized header for a container of `header.tensor_count` records (the
// `format_version` field is ignored: the latest version is written). Deterministic:
// the same header always gives the same bytes.
std::vector<uint8_t> SerializeHeader(const ContainerHeader& header);
// Serialized trailer for `header_bytes` followed by `records` (each a serialized,
// checksummed record): record count, total container size, and a checksum chained over
// the header's and every record's checksums (FORMAT.md). REQUIRES: the pieces are
// well-formed (as produced by SerializeHeader / SerializeRecord or read by
// ContainerReader).
std::vector<uint8_t> SerializeTrailer(absl::Span<const uint8_t> header_bytes,
                                      const std::vector<absl::Span<const uint8_t>>& records);

// SerializeTrailer for a caller that holds one piece at a time (storage streaming a
// container record by record): AddHeader once, then AddRecord for each record in
// order; Finish() returns the same bytes as SerializeTrailer over all of them. Keeps 8
// bytes per record. Same REQUIRES as SerializeTrailer. Not thread-safe.
class ContainerTrailerBuilder {
 public:
  void AddHeader(absl::Span<const uint8_t> header_bytes);
  void AddRecord(absl::Span<const uint8_t> record_bytes);
  std::vector<uint8_t> Finish() const;

 private:
  uint64_t header_checksum_ = 0;
  std::vector<uint64_t> record_checksums_;
  uint64_t bytes_ = 0;  // header + records so far
};

// Reads a whole container held in memory (e.g. an mmap). Parse validates the header,
// the framing of every record and the trailer; record(i) verifies that record's checksum.
// Thread-safe after Parse.
class ContainerReader {
 public:
  // DataLoss: truncated, bad magic, checksum mismatch. InvalidArgument: unsupported
  // version, lying lengths. Never reads outside `bytes`. `bytes` must outlive the reader.
  static absl::StatusOr<ContainerReader> Parse(absl::Span<const uint8_t> bytes);

  const ContainerHeader& header() const { return header_; }
  size_t num_records() const { return records_.size(); }
  // Verified record i, its base_name set from header().base_alias. DataLoss naming the
  // tensor on checksum mismatch.
  absl::StatusOr<TensorRecord> record(size_t i) const;
  absl::Span<const uint8_t> header_bytes() const { return header_bytes_; }
  absl::Span<const uint8_t> record_bytes(size_t i) const { return records_[i]; }
  absl::Span<const uint8_t> trailer_bytes() const { return trailer_bytes_; }

 private:
  ContainerHeader header_;
  absl::Span<const uint8_t> header_bytes_, trailer_bytes_;
  std::vector<absl::Span<const uint8_t>> records_;
};

// Streams a container to a file: header, then records as they are added, then the
// trailer on Finish(). Written to path + ".tmp" and renamed by Finish(). Not thread-safe.
class ContainerWriter {
 public:
  static absl::StatusOr<std::unique_ptr<ContainerWriter>> Open(const std::string& path,
                                                               const ContainerHeader& header);
  virtual ~ContainerWriter() = default;
  // Open: InvalidArgument if a metadata key or value is not valid UTF-8, or the tie
  // map (kBaseAliasKey) is malformed (ParseBaseAlias), or `path` or `path.tmp` is a
  // FIFO, a device or a socket (common::RefuseSpecialOutput).
  // Add: FailedPrecondition if more than header.tensor_count records are added;
  // InvalidArgument if the name is not valid UTF-8 or the record would exceed
  // kMaxStoredRecordBytes (codec/container_checks.h), naming the tensor and its size.
  virtual absl::Status Add(const TensorRecord& record) = 0;
  // FailedPrecondition if fewer records than header.tensor_count were added.
  virtual absl::Status Finish() = 0;
  // Bytes written so far.
  virtual uint64_t bytes_written() const = 0;
};

// Rebuilds a container's exact bytes from its pieces (as kept by storage):
// header_bytes || records... || SerializeTrailer(header_bytes, records). For pieces taken
// from a ContainerReader this is byte-identical to the original file.
std::vector<uint8_t> AssembleContainer(absl::Span<const uint8_t> header_bytes,
                                       const std::vector<absl::Span<const uint8_t>>& records);

// True if `bytes` begin with the container magic ("DSDELTA" 0x1A, FORMAT.md): for
// errors that tell a user which file they gave where. Checks nothing else.
bool StartsWithContainerMagic(absl::Span<const uint8_t> bytes);

// The header of a container whose bytes are still arriving (an upload), from `prefix`,
// its first bytes: nullopt until the header has arrived whole, then the header, its size
// in bytes in *header_size. Fails as soon as the bytes show what ContainerReader::Parse
// would refuse in the header: DataLoss "bad magic" once a byte of the magic differs,
// InvalidArgument for another format version and DataLoss for a header length outside
// the format's bounds at 16 bytes, DataLoss for a checksum mismatch or bad fields once
// the header is whole. Whether the header fits the whole container is left to Parse.
absl::StatusOr<std::optional<ContainerHeader>> ParseContainerHeaderPrefix(
    absl::Span<const uint8_t> prefix, size_t* header_size);

// A container file mapped read-only into memory (mmap) and parsed. Thread-safe after
// Open. NotFound if the file is missing, Internal on mmap failure, otherwise the errors
// of ContainerReader::Parse prefixed with the path.
class MappedContainer {
 public:
  static absl::StatusOr<std::unique_ptr<MappedContainer>> Open(const std::string& path);
  ~MappedContainer();
  MappedContainer(const MappedContainer&) = delete;
  MappedContainer& operator=(const MappedContainer&) = delete;

  const ContainerReader& reader() const { return reader_; }
  absl::Span<const uint8_t> bytes() const;
  const std::string& path() const;

 private:
  MappedContainer() = default;
  std::unique_ptr<common::MappedFile> file_;
  ContainerReader reader_;
};

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_CONTAINER_H_
