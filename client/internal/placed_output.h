// A pulled safetensors file written in place: when the tensors of a pull are known before
// it starts (GetTask: no name filter), every tensor's byte range in the final file is
// known too, so each stream writes its tensors' chunks straight to their offsets in the
// file (pwrite) as they arrive and are hashed, instead of into scratch files that are
// copied into the file at the end. One copy of each byte into the page cache instead of
// two, and no scratch files; the bytes are those of WriteSafetensors (the header comes
// from codec::SafetensorsHeader).
#ifndef DELTASERVE_CLIENT_INTERNAL_PLACED_OUTPUT_H_
#define DELTASERVE_CLIENT_INTERNAL_PLACED_OUTPUT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "client/internal/weights_stream.h"
#include "codec/tensor.h"
#include "common/file.h"

namespace deltaserve::client {

// The output file shared by the sinks of one pull. Thread-safe: the sinks of parallel
// ranges call it at once.
class PlacedOutput {
 public:
  // `tensors`: the tensors the pull will write, in file order (container order), with
  // their output dtypes. Creates out_path + ".tmp". Errors: InvalidArgument for bad
  // infos (codec::SafetensorsHeader), errno-derived ones for the file.
  static absl::StatusOr<std::unique_ptr<PlacedOutput>> Create(
      const std::string& out_path, std::vector<codec::TensorInfo> tensors);

  // A stream began with these metadata (StreamBegin.safetensors_metadata): the first
  // call writes the header and reserves the file; later ones (other ranges, resumed
  // streams) must bring the same metadata, else DataLoss.
  absl::Status Begin(const std::map<std::string, std::string>& metadata);
  // The position (in `tensors`) of the tensor `info` (after a Begin). ABORTED if the
  // pull did not announce a tensor of that name, dtype and shape (the task changed since
  // GetTask).
  absl::StatusOr<size_t> Place(const codec::TensorInfo& info) const;
  // Byte offset in the file of tensor `i` (a Place result).
  uint64_t offset(size_t i) const { return offsets_[i]; }
  // pwrite of a tensor's bytes.
  absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) const {
    return file_->WriteAt(offset, data);
  }
  // Tensor `i` was verified whole.
  void Finished(size_t i);
  // fsyncs and renames the file over out_path. DataLoss (naming the first missing one)
  // unless every tensor was Finished; then out_path is left as it was.
  absl::Status Commit();

 private:
  PlacedOutput(std::unique_ptr<common::AtomicFileWriter> file,
               std::vector<codec::TensorInfo> tensors);

  const std::unique_ptr<common::AtomicFileWriter> file_;
  const std::vector<codec::TensorInfo> tensors_;
  absl::flat_hash_map<std::string, size_t> by_name_;  // index into tensors_
  absl::Mutex mu_;
  std::optional<std::map<std::string, std::string>> metadata_ ABSL_GUARDED_BY(mu_);
  // Data offsets (from the file's start) of tensors_, set by the first Begin; then const.
  std::vector<uint64_t> offsets_;
  std::vector<bool> finished_ ABSL_GUARDED_BY(mu_);
};

// One stream's sink into a PlacedOutput: a tensor's chunks go to its place in the file.
// DropUnfinished needs nothing: a resumed stream writes the tensor again over the same
// bytes.
class PlacedSink : public WeightsSink {
 public:
  explicit PlacedSink(PlacedOutput* out) : out_(out) {}
  absl::Status Begin(const v1::StreamBegin& begin) override;
  absl::Status TensorBegin(const codec::TensorInfo& info) override;
  absl::Status Data(absl::Span<const uint8_t> data) override;
  absl::Status TensorEnd() override;

 private:
  PlacedOutput* out_;
  size_t tensor_ = 0;  // the current tensor (PlacedOutput::Place)
  uint64_t next_ = 0;  // file offset of its next chunk
};

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_INTERNAL_PLACED_OUTPUT_H_
