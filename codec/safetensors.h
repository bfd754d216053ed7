// safetensors reader (mmap, single file or sharded) and writer.
//
// Format: https://github.com/huggingface/safetensors ("Format" section): an 8-byte
// little-endian header length N, N bytes of UTF-8 JSON {name: {dtype, shape,
// data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the byte buffer.
// Sharded models have `model.safetensors.index.json` {"metadata": {...},
// "weight_map": {tensor name: shard file name}}.
#ifndef DELTASERVE_CODEC_SAFETENSORS_H_
#define DELTASERVE_CODEC_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/tensor.h"
#include "common/file.h"
#include "common/tmp_files.h"

namespace deltaserve::codec {

// A read-only model: every tensor of one safetensors file or of a sharded set, mapped
// into memory (POSIX mmap, PROT_READ, MAP_PRIVATE; no copy of the files). Tensor views
// stay valid for the reader's lifetime. Thread-safe after Open (all methods are const).
//
// Tensor bytes are NOT guaranteed to be aligned for their dtype (files from other
// writers, or an F16 tensor of odd length before an F32 one): read them with memcpy or
// ToFloat32, never by casting the pointer. The files must not be truncated while open
// (reading a lost page would raise SIGBUS).
class ModelReader {
 public:
  // `path` is a .safetensors file, a `*.json` index, or a directory holding either
  // `model.safetensors.index.json`, or exactly one `*.safetensors.index.json`, or (no
  // index) exactly one `*.safetensors` file.
  //
  // Everything is validated before any tensor byte is exposed: the 8-byte header
  // length (<= 100 MB and <= file size - 8), well-formed JSON whose top level is an
  // object, per tensor {dtype: string, shape: [non-negative ints, product fits int64],
  // data_offsets: [begin <= end <= data buffer size]}, dtype F32/F16/BF16, end - begin
  // == product(shape) x dtype size, no two non-empty tensors overlapping (gaps between
  // tensors are tolerated), `__metadata__` an object of strings. A sharded index needs a
  // "weight_map" object {tensor: shard file relative to the index, no ".."}; every
  // listed tensor must be in its shard, and every tensor of an opened shard must be
  // listed there (so a tensor in two shards is an error). Shards no entry names are
  // not opened.
  //
  // Errors (each message names the file and, where one is at fault, the tensor):
  //   NotFound: `path` missing, a shard named by the index missing (message names the
  //   index, the shard and one tensor it should hold), a directory without candidates.
  //   InvalidArgument: header length > 100 MB or past EOF, file < 8 bytes, bad JSON,
  //   missing/ill-typed fields, unsupported dtype (e.g. "tensor 'ids': unsupported dtype
  //   'I64'"), offsets outside the buffer, overlapping tensors, byte size != product(shape)
  //   x dtype size, a tensor in two shards or missing from its shard, an ambiguous
  //   directory. Other codes (errno-derived, e.g. PermissionDenied) for open/mmap failures.
  //
  // `residency`: kMap (default) maps the files, whose bytes must then not change while
  // the reader lives; kCopy reads them into process memory once (common/file.h), for a
  // long-running reader such as deltaserved's base. kCopy adds DataLoss (a file shrank
  // while it was read).
  static absl::StatusOr<std::unique_ptr<ModelReader>> Open(
      const std::string& path,
      common::MappedFile::Residency residency = common::MappedFile::Residency::kMap);

  virtual ~ModelReader() = default;

  // All tensors, in a deterministic order (sorted by name).
  virtual const std::vector<TensorInfo>& tensors() const = 0;
  // NotFound if no tensor has that name.
  virtual absl::StatusOr<TensorView> Get(const std::string& name) const = 0;
  // `__metadata__` of the file. For a sharded model: the index's "metadata" (string
  // values as they are, other scalars as their JSON text; nested objects/arrays
  // dropped; "total_size", the index's own figure of tensor bytes, dropped) merged with the `__metadata__` of the first shard in
  // file-name order; on a key present in both, the index wins.
  virtual const std::map<std::string, std::string>& metadata() const = 0;
  // Sum of all tensors' byte sizes.
  virtual uint64_t total_bytes() const = 0;
  // The files whose bytes the tensors are (one per shard; an index is read at Open and
  // not kept), with their stamps at Open, for a caller that watches mapped files for
  // changes. Empty for readers over memory. Valid for the reader's lifetime.
  virtual std::vector<const common::MappedFile*> files() const { return {}; }
};

// Writes one .safetensors file: the 8-byte header length, the JSON header (keys sorted,
// `__metadata__` only if `metadata` is non-empty) padded with spaces to a multiple of 8
// bytes, then the tensors' bytes back to back in the order given (no padding between
// tensors, as the reference implementation requires). The file is written to
// `path + ".tmp"`, fsync'ed and renamed over `path`; on failure no .tmp is left behind.
// Errors: InvalidArgument naming path and tensor if a tensor's data size does not match
// its shape and dtype, a shape is invalid, a name is empty, "__metadata__" or used
// twice, or a string is not valid UTF-8; errno-derived codes naming the path for I/O
// failures (e.g. NotFound when the parent directory does not exist).
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorView>& tensors,
                              const std::map<std::string, std::string>& metadata);

// Streams one .safetensors file whose tensor list is known up front, so that a caller
// producing tensors one at a time (e.g. decoding a delta) holds only one in memory:
// Open validates `infos` and writes the header (layout exactly as WriteSafetensors),
// Append takes each tensor's bytes in `infos` order, Commit fsyncs and renames
// `path + ".tmp"` over `path`. Destroyed without a successful Commit, the .tmp file is
// removed and `path` is left as it was. Not thread-safe.
class SafetensorsWriter {
 public:
  // InvalidArgument for bad infos (as WriteSafetensors); errno-derived codes naming the
  // path if the .tmp file cannot be created or written.
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Open(
      const std::string& path, std::vector<TensorInfo> infos,
      const std::map<std::string, std::string>& metadata);

  virtual ~SafetensorsWriter() = default;

  // Writes the next tensor's bytes. InvalidArgument (naming path and tensor) if
  // data.size() != its num_bytes(); FailedPrecondition once all tensors are written.
  virtual absl::Status Append(absl::Span<const uint8_t> data) = 0;
  // FailedPrecondition (naming the next tensor) if some tensors were not appended.
  virtual absl::Status Commit() = 0;
};

// Streams one .safetensors file like SafetensorsWriter, but the caller stores each
// tensor's bytes straight into the writer's O_DIRECT staging buffer
// (common::DirectFileWriter): no buffer of the caller's own and no write(2) copy into
// the page cache. Open validates `infos` and stages the header (the same bytes as
// SafetensorsWriter); Next hands out the next tensor's bytes, in `infos` order; Commit
// writes the rest, fsyncs and renames `path + ".tmp"` over `path`. Destroyed without a
// successful Commit, the .tmp file is removed. Memory: one staging buffer as large as
// the largest tensor (plus one 4 KiB block). Not thread-safe.
class DirectSafetensorsWriter {
 public:
  // SafetensorsWriter::Open's errors, plus Unimplemented when the file system refuses
  // O_DIRECT (then use SafetensorsWriter).
  static absl::StatusOr<std::unique_ptr<DirectSafetensorsWriter>> Open(
      const std::string& path, std::vector<TensorInfo> infos,
      const std::map<std::string, std::string>& metadata);

  virtual ~DirectSafetensorsWriter() = default;

  // The next tensor's num_bytes() bytes, to be filled completely before the next call
  // to Next or Commit (the previous tensor is written then). FailedPrecondition once
  // every tensor was handed out; write errors of the previous tensor (naming the file:
  // ResourceExhausted for a full disk, OutOfRange over the file size limit).
  virtual absl::StatusOr<absl::Span<uint8_t>> Next() = 0;
  // FailedPrecondition (naming the next tensor) if some tensors were not handed out;
  // write, fsync and rename errors naming the file.
  virtual absl::Status Commit() = 0;
};

// The bytes that come before the tensor data in a file WriteSafetensors writes for
// tensors with `infos` (in that order) and `metadata`: the 8-byte length and the padded
// JSON header. The data of infos[i] then starts at the returned size plus the bytes of
// infos[0..i). For writers that place tensors in the file themselves (e.g. several
// downloads at once). Same InvalidArgument errors as WriteSafetensors for bad infos,
// naming `path`.
absl::StatusOr<std::string> SafetensorsHeader(const std::string& path,
                                              const std::vector<TensorInfo>& infos,
                                              const std::map<std::string, std::string>& metadata);

// Writes a sharded model into directory `dir` (created if needed): files
// model-0000i-of-0000n.safetensors (5-digit, 1-based) of at most `max_shard_bytes` of
// tensor data each, packed greedily in the order given (a tensor larger than the limit
// gets a shard of its own), each carrying `metadata` as its `__metadata__`, and
// model.safetensors.index.json {"metadata": metadata + {"total_size": the sum of the
// tensors' data bytes, a JSON number, as Hugging Face writes it}, "weight_map": {...}}
// (a "total_size" key in `metadata` is replaced; ModelReader drops it on read, so
// ModelReader::metadata() reads back exactly `metadata` without it). Every file is
// written and fsynced under a staging directory first (StageShardedSafetensors,
// common::StagedFiles) and renamed into `dir` only when all are complete, the index
// last: a failure while writing leaves an earlier checkpoint in `dir` as it was; only
// a crash during the renames can leave a mix (each file whole). Then the weight files
// of an earlier checkpoint that this one replaces are removed
// (RemoveReplacedWeightFiles), as Hugging Face's save_pretrained does, so a loader of
// `dir` sees one model. Same errors as WriteSafetensors, plus InvalidArgument if
// max_shard_bytes == 0.
// WriteShardedSafetensors' files, staged: the shards, then the index, are added to
// `staged` (written and fsynced, not yet in staged->dir()); the caller may add more
// files before (e.g. side files) and then calls staged->Publish() and
// RemoveReplacedWeightFiles. Returns the shard file names.
absl::StatusOr<std::set<std::string>> StageShardedSafetensors(
    common::StagedFiles* staged, const std::vector<TensorView>& tensors,
    const std::map<std::string, std::string>& metadata, uint64_t max_shard_bytes);

// Removes from `dir` the weight files of an earlier checkpoint that a sharded one
// whose shard files are `keep` replaces: every model-NNNNN-of-NNNNN.safetensors not in
// `keep`, and a single-file model.safetensors (Hugging Face's from_pretrained would load
// it instead of the index: the old weights, silently). Other files are left alone.
// Errors: errno-derived, naming `dir`.
absl::Status RemoveReplacedWeightFiles(const std::string& dir, const std::set<std::string>& keep);

absl::Status WriteShardedSafetensors(const std::string& dir,
                                     const std::vector<TensorView>& tensors,
                                     const std::map<std::string, std::string>& metadata,
                                     uint64_t max_shard_bytes);

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_SAFETENSORS_H_
