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
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "codec/tensor.h"

namespace deltaserve::codec {

// A read-only model: every tensor of one safetensors file or of a sharded set, mapped
// into memory (no copy of the files). Tensor views stay valid for the reader's lifetime.
// Thread-safe after Open (all methods are const).
class ModelReader {
 public:
  // `path` is a .safetensors file, a `*.safetensors.index.json`, or a directory holding
  // either `model.safetensors.index.json` or exactly one `*.safetensors` file.
  // Errors (each message names the file and, where one is at fault, the tensor):
  //   NotFound: path missing. InvalidArgument: header length > 100 MB or past EOF, bad
  //   JSON, unsupported dtype (names tensor and dtype), offsets outside the buffer,
  //   overlapping tensors, byte size != product(shape) x dtype size, a tensor name
  //   appearing in two shards. Internal/Unavailable: mmap failure.
  static absl::StatusOr<std::unique_ptr<ModelReader>> Open(const std::string& path);

  virtual ~ModelReader() = default;

  // All tensors, in a deterministic order (sorted by name).
  virtual const std::vector<TensorInfo>& tensors() const = 0;
  // NotFound if no tensor has that name.
  virtual absl::StatusOr<TensorView> Get(const std::string& name) const = 0;
  // `__metadata__` of the file (for shards: of the index's "metadata" merged with the
  // first shard's; string values only).
  virtual const std::map<std::string, std::string>& metadata() const = 0;
  // Sum of all tensors' byte sizes.
  virtual uint64_t total_bytes() const = 0;
};

// Writes one .safetensors file. Tensors are laid out in the order given, 8-byte aligned
// header as the spec recommends. IO errors -> Internal/Unavailable naming the path.
// InvalidArgument if a tensor's data size does not match its shape and dtype, or if two
// tensors share a name. The file is written to `path + ".tmp"` and renamed on success.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorView>& tensors,
                              const std::map<std::string, std::string>& metadata);

// Writes a sharded model into directory `dir`: files model-0000i-of-0000n.safetensors
// of at most `max_shard_bytes` each (a larger single tensor gets its own shard) and
// model.safetensors.index.json. Same errors as WriteSafetensors.
absl::Status WriteShardedSafetensors(const std::string& dir,
                                     const std::vector<TensorView>& tensors,
                                     const std::map<std::string, std::string>& metadata,
                                     uint64_t max_shard_bytes);

}  // namespace deltaserve::codec

#endif  // DELTASERVE_CODEC_SAFETENSORS_H_
