#include "server/internal/stream_plan.h"

#include <fnmatch.h>

#include <algorithm>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "codec/delta_codec.h"
#include "common/plural.h"
#include "proto/protocol.h"
#include "re2/re2.h"
#include "server/internal/convert.h"

namespace deltaserve::server::internal {

absl::StatusOr<StreamPlan> PlanStream(const v1::StreamWeightsRequest& req,
                                      const storage::TaskInfo& info,
                                      std::optional<codec::DType> out_dtype) {
  std::unique_ptr<RE2> regex;
  if (!req.include_regex().empty()) {
    if (absl::Status s = proto::CheckIncludeRegex(req.include_regex()); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("include_regex '", req.include_regex(), "': ", s.message()));
    }
    regex = std::make_unique<RE2>(req.include_regex(), RE2::Quiet);
  }
  size_t first = 0;
  if (req.resume_case() == v1::StreamWeightsRequest::kResumeFromName) {
    std::optional<size_t> idx = info.FindTensor(req.resume_from_name());
    if (!idx) {
      return absl::NotFoundError(absl::StrCat("resume_from_name: task '", info.task,
                                              "' has no tensor '", req.resume_from_name(), "'"));
    }
    first = *idx;
  } else if (req.resume_case() == v1::StreamWeightsRequest::kResumeFromIndex) {
    first = req.resume_from_index();
    if (first >= info.tensors.size()) {
      return absl::OutOfRangeError(absl::StrCat("resume_from_index ", first, ": task '", info.task,
                                                "' has ",
                                                common::Counted(info.tensors.size(), "tensor")));
    }
  }
  size_t end = info.tensors.size();
  if (req.end_index() != 0) {
    if (req.end_index() > info.tensors.size() || req.end_index() <= first) {
      return absl::OutOfRangeError(absl::StrCat("end_index ", req.end_index(), ": task '",
                                                info.task, "' has ", info.tensors.size(),
                                                " tensors and the range starts at ", first));
    }
    end = req.end_index();
  }
  StreamPlan plan;
  for (size_t i = first; i < end; ++i) {
    const storage::TensorEntry& t = info.tensors[i];
    if (req.include_size() > 0 &&
        std::none_of(req.include().begin(), req.include().end(), [&](const std::string& glob) {
          return fnmatch(glob.c_str(), t.name.c_str(), 0) == 0;
        })) {
      continue;
    }
    if (regex && !RE2::FullMatch(t.name, *regex)) continue;
    const uint64_t bytes = static_cast<uint64_t>(codec::NumElements(t.shape)) *
                           codec::DTypeSize(codec::OutputDType(t.dtype, out_dtype.value_or(t.dtype)));
    plan.tensors.push_back(static_cast<uint32_t>(i));
    plan.bytes.push_back(bytes);
    plan.total_bytes += bytes;
  }
  if (req.resume_from_offset() > 0) {
    if (req.resume_case() == v1::StreamWeightsRequest::RESUME_NOT_SET) {
      return absl::InvalidArgumentError(
          "resume_from_offset needs resume_from_name or resume_from_index");
    }
    if (plan.tensors.empty() || plan.tensors[0] != first) {
      return absl::InvalidArgumentError(absl::StrCat(
          "resume_from_offset: tensor '", info.tensors[first].name,
          "' (the resume tensor) does not pass the include filter"));
    }
    if (req.resume_from_offset() > plan.bytes[0]) {
      return absl::OutOfRangeError(absl::StrCat("resume_from_offset ", req.resume_from_offset(),
                                                ": tensor '", info.tensors[first].name,
                                                "' has ", plan.bytes[0], " bytes"));
    }
    plan.first_offset = req.resume_from_offset();
    plan.total_bytes -= plan.first_offset;
  }
  return plan;
}

void FillStreamBegin(const StreamPlan& plan, const storage::TaskInfo& info, bool pinned,
                     v1::StreamBegin* begin) {
  FillTaskInfo(info, /*with_tensors=*/false, pinned, begin->mutable_task());
  begin->set_num_tensors(static_cast<uint32_t>(plan.tensors.size()));
  begin->set_total_bytes(plan.total_bytes);
  // What codec::DecompressModel writes, so that a client writing the tensors in stream
  // order produces the same file.
  for (const auto& [key, value] : codec::MergedModelMetadata(info.base_hash)) {
    (*begin->mutable_safetensors_metadata())[key] = value;
  }
}

StreamCursor::Need StreamCursor::NextNeeds(const MergedTensor& tensor) const {
  const uint64_t size = tensor.data.size();
  if (!header_sent_) {
    // An empty tensor is all header: it goes out with its checksum. So does a resumed
    // one (its checksum covers bytes this stream does not send).
    if (checksum_after_data_ && size > 0 && !resuming()) return Need{0, false};
    return Need{size, true};
  }
  const uint64_t end = std::min<uint64_t>(size, offset_ + chunk_bytes_);
  return Need{end, checksum_follows_ && end == size};
}

size_t StreamCursor::Next(const MergedTensor* tensor, v1::StreamWeightsResponse* msg,
                          absl::Span<const uint8_t>* data) {
  if (data != nullptr) *data = {};
  if (pos_ == num_tensors_) {
    end_sent_ = true;
    v1::StreamEnd* end = msg->mutable_end();
    end->set_num_tensors(static_cast<uint32_t>(num_tensors_));
    end->set_total_bytes(sent_bytes_);
    return 0;
  }
  const uint64_t size = tensor->data.size();
  size_t n = 0;
  if (!header_sent_) {
    header_sent_ = true;
    offset_ = resuming() ? std::min<uint64_t>(first_offset_, size) : 0;
    checksum_follows_ =
        checksum_after_data_ && size > 0 && !tensor->complete() && !resuming();
    v1::TensorHeader* h = msg->mutable_header();
    h->set_name(tensor->info.name);
    h->set_dtype(proto::ToProtoDType(tensor->info.dtype));
    h->mutable_shape()->Clear();
    for (int64_t d : tensor->info.shape) h->add_shape(d);
    h->set_byte_length(size);
    h->set_xxh3_64(checksum_follows_ ? 0 : tensor->xxh3_64);
    h->set_saturated_values(checksum_follows_ ? 0 : tensor->saturated_values);
    h->set_checksum_follows(checksum_follows_);
    h->set_index(tensor->index);
  } else {
    n = static_cast<size_t>(std::min<uint64_t>(chunk_bytes_, size - offset_));
    v1::TensorChunk* chunk = msg->mutable_chunk();
    chunk->set_offset(offset_);
    if (data != nullptr) {
      chunk->clear_data();
      *data = absl::MakeConstSpan(tensor->data.data() + offset_, n);
    } else {
      chunk->set_data(tensor->data.data() + offset_, n);
    }
    offset_ += n;
    sent_bytes_ += n;
    if (checksum_follows_ && offset_ == size) {
      chunk->set_tensor_xxh3_64(tensor->xxh3_64);
      if (tensor->saturated_values > 0) {
        chunk->set_tensor_saturated_values(tensor->saturated_values);
      } else {
        chunk->clear_tensor_saturated_values();
      }
    } else {
      chunk->clear_tensor_xxh3_64();  // the slot's previous message may have had them
      chunk->clear_tensor_saturated_values();
    }
  }
  if (offset_ == size) {  // the tensor's last message (the header alone if it is empty)
    ++pos_;
    header_sent_ = false;
  }
  return n;
}

}  // namespace deltaserve::server::internal
