#include "server/internal/convert.h"

#include "absl/strings/str_cat.h"
#include "codec/container.h"
#include "codec/container_checks.h"

namespace deltaserve::server::internal {

v1::DType ToProtoDType(codec::DType dtype) {
  // The proto enum is codec::DType + 1 (0 is "unset"), see delta_service.proto.
  if (dtype > codec::kLastDType) return v1::DTYPE_UNSPECIFIED;
  return static_cast<v1::DType>(static_cast<int>(dtype) + 1);
}

absl::StatusOr<std::optional<codec::DType>> FromProtoDType(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_UNSPECIFIED: return std::optional<codec::DType>();
    case v1::DTYPE_F32: return codec::DType::kF32;
    case v1::DTYPE_F16: return codec::DType::kF16;
    case v1::DTYPE_BF16: return codec::DType::kBF16;
    default: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("out_dtype ", static_cast<int>(dtype), " is not F32 (1), F16 (2) or BF16 (3)"));
}

uint64_t TaskMergedBytes(const storage::TaskInfo& info, std::optional<codec::DType> out_dtype) {
  uint64_t total = 0;
  for (const storage::TensorEntry& t : info.tensors) {
    total += static_cast<uint64_t>(codec::NumElements(t.shape)) *
             codec::DTypeSize(codec::OutputDType(t.dtype, out_dtype.value_or(t.dtype)));
  }
  return total;
}

void FillTaskInfo(const storage::TaskInfo& info, bool with_tensors, bool pinned,
                  v1::TaskInfo* out) {
  // Stored text is checked at PutDelta; Utf8OrEscaped keeps data stored before that
  // check from making the response unserializable (proto3 `string` fields).
  out->set_tenant(codec::Utf8OrEscaped(info.tenant));
  out->set_name(codec::Utf8OrEscaped(info.task));
  out->set_created_unix(info.created_unix);
  out->set_base_hash(codec::BaseHashHex(info.base_hash));
  out->set_container_bytes(info.total_bytes);
  out->set_num_tensors(static_cast<uint32_t>(info.tensors.size()));
  out->set_total_weights(info.weights);
  out->set_merged_bytes(TaskMergedBytes(info, std::nullopt));
  out->set_bits_per_weight(info.weights ? 8.0 * info.total_bytes / info.weights : 0.0);
  out->set_pinned(pinned);
  for (const auto& [k, v] : info.metadata) {
    (*out->mutable_metadata())[codec::Utf8OrEscaped(k)] = codec::Utf8OrEscaped(v);
  }
  if (!with_tensors) return;
  for (size_t i = 0; i < info.tensors.size(); ++i) {
    const storage::TensorEntry& t = info.tensors[i];
    v1::TensorSummary* s = out->add_tensors();
    int64_t n = codec::NumElements(t.shape);
    s->set_name(codec::Utf8OrEscaped(t.name));
    s->set_dtype(ToProtoDType(t.dtype));
    for (int64_t d : t.shape) s->add_shape(d);
    s->set_encoding(std::string(codec::EncodingName(t.encoding)));
    s->set_record_bytes(t.record_bytes);
    s->set_merged_bytes(static_cast<uint64_t>(n) * codec::DTypeSize(t.dtype));
    s->set_bits_per_weight(n ? 8.0 * t.record_bytes / n : 0.0);
    s->set_index(static_cast<uint32_t>(i));
  }
}

}  // namespace deltaserve::server::internal
