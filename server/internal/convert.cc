#include "server/internal/convert.h"

#include "absl/strings/str_cat.h"
#include "codec/container.h"
#include "codec/container_checks.h"
#include "proto/protocol.h"

namespace deltaserve::server::internal {

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
  if (info.container_xxh3_64) out->set_container_xxh3_64(*info.container_xxh3_64);
  out->set_num_tensors(static_cast<uint32_t>(info.tensors.size()));
  out->set_total_weights(info.weights);
  out->set_merged_bytes(TaskMergedBytes(info, std::nullopt));
  out->set_bits_per_weight(info.bits_per_weight);
  out->set_pinned(pinned);
  for (const auto& [k, v] : info.metadata) {
    (*out->mutable_metadata())[codec::Utf8OrEscaped(k)] = codec::Utf8OrEscaped(v);
  }
  for (const storage::SideFileEntry& f : info.side_files) {
    v1::SideFileInfo* s = out->add_side_files();
    s->set_name(f.name);
    s->set_size_bytes(f.bytes);
    s->set_xxh3_64(f.xxh3_64);
  }
  out->set_side_file_bytes(storage::SideFileBytes(info.side_files));
  if (!with_tensors) return;
  for (size_t i = 0; i < info.tensors.size(); ++i) {
    const storage::TensorEntry& t = info.tensors[i];
    v1::TensorSummary* s = out->add_tensors();
    int64_t n = codec::NumElements(t.shape);
    s->set_name(codec::Utf8OrEscaped(t.name));
    s->set_dtype(proto::ToProtoDType(t.dtype));
    for (int64_t d : t.shape) s->add_shape(d);
    s->set_encoding(std::string(codec::EncodingName(t.encoding)));
    s->set_record_bytes(t.record_bytes);
    s->set_merged_bytes(static_cast<uint64_t>(n) * codec::DTypeSize(t.dtype));
    s->set_bits_per_weight(n ? 8.0 * t.record_bytes / n : 0.0);
    s->set_index(static_cast<uint32_t>(i));
  }
}

}  // namespace deltaserve::server::internal
