#include "client/internal/placed_output.h"

#include "absl/strings/str_cat.h"
#include "codec/safetensors.h"
#include "common/status_macros.h"

namespace deltaserve::client {

PlacedOutput::PlacedOutput(std::unique_ptr<common::AtomicFileWriter> file,
                           std::vector<codec::TensorInfo> tensors)
    : file_(std::move(file)), tensors_(std::move(tensors)), finished_(tensors_.size()) {
  for (size_t i = 0; i < tensors_.size(); ++i) by_name_[tensors_[i].name] = i;
}

absl::StatusOr<std::unique_ptr<PlacedOutput>> PlacedOutput::Create(
    const std::string& out_path, std::vector<codec::TensorInfo> tensors) {
  // Bad infos are refused before the file is created.
  DS_RETURN_IF_ERROR(codec::SafetensorsHeader(out_path, tensors, {}).status());
  DS_ASSIGN_OR_RETURN(std::unique_ptr<common::AtomicFileWriter> file,
                      common::AtomicFileWriter::Open(out_path));
  return std::unique_ptr<PlacedOutput>(new PlacedOutput(std::move(file), std::move(tensors)));
}

absl::Status PlacedOutput::Begin(const std::map<std::string, std::string>& metadata) {
  absl::MutexLock lock(&mu_);
  if (metadata_) {
    if (*metadata_ == metadata) return absl::OkStatus();
    return absl::DataLossError(absl::StrCat(
        file_->path(), ": the streams of one pull announce different safetensors metadata"));
  }
  DS_ASSIGN_OR_RETURN(std::string header,
                      codec::SafetensorsHeader(file_->path(), tensors_, metadata));
  uint64_t offset = header.size();
  offsets_.reserve(tensors_.size());
  for (const codec::TensorInfo& t : tensors_) {
    offsets_.push_back(offset);
    offset += t.num_bytes();
  }
  DS_RETURN_IF_ERROR(file_->Reserve(offset));
  DS_RETURN_IF_ERROR(file_->WriteAt(
      0, {reinterpret_cast<const uint8_t*>(header.data()), header.size()}));
  metadata_ = metadata;
  return absl::OkStatus();
}

absl::StatusOr<size_t> PlacedOutput::Place(const codec::TensorInfo& info) const {
  auto it = by_name_.find(info.name);
  if (it == by_name_.end() || tensors_[it->second].dtype != info.dtype ||
      tensors_[it->second].shape != info.shape) {
    return absl::AbortedError(absl::StrCat(
        file_->path(), ": the stream sends tensor '", info.name, "' ",
        std::string(codec::DTypeName(info.dtype)), codec::ShapeString(info.shape),
        ", which the task did not list when the pull began (it changed); pull again"));
  }
  return it->second;
}

void PlacedOutput::Finished(size_t i) {
  absl::MutexLock lock(&mu_);
  finished_[i] = true;
}

absl::Status PlacedOutput::Commit() {
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (!finished_[i]) {
        return absl::DataLossError(absl::StrCat(file_->path(), ": tensor '", tensors_[i].name,
                                                "' never arrived; nothing written"));
      }
    }
  }
  return file_->Commit();
}

absl::Status PlacedSink::Begin(const v1::StreamBegin& begin) {
  return out_->Begin({begin.safetensors_metadata().begin(), begin.safetensors_metadata().end()});
}

absl::Status PlacedSink::TensorBegin(const codec::TensorInfo& info) {
  DS_ASSIGN_OR_RETURN(tensor_, out_->Place(info));
  // Begin, which laid out the offsets under the lock, came first on this stream.
  next_ = out_->offset(tensor_);
  return absl::OkStatus();
}

absl::Status PlacedSink::Data(absl::Span<const uint8_t> data) {
  // The checker bounds a tensor's chunks by its byte_length (= the placed size).
  DS_RETURN_IF_ERROR(out_->Write(next_, data));
  next_ += data.size();
  return absl::OkStatus();
}

absl::Status PlacedSink::TensorEnd() {
  out_->Finished(tensor_);
  return absl::OkStatus();
}

}  // namespace deltaserve::client
