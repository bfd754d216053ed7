#include "codec/record_checks.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "codec/payload_info.h"
#include "common/status_macros.h"

namespace deltaserve::codec {
namespace {

std::string Quoted(const std::string& name) { return absl::StrCat("tensor '", name, "'"); }

std::string DTypeText(DType d) { return std::string(DTypeName(d)); }

}  // namespace

absl::Status CheckRecordFitsBase(const TensorRecord& record, const TensorInfo* base_tensor) {
  if (record.encoding == Encoding::kRaw) return absl::OkStatus();
  const std::string& name = record.info.name;
  const std::string enc(EncodingName(record.encoding));
  if (base_tensor == nullptr) {
    return absl::NotFoundError(record.base_name.empty()
                                   ? absl::StrCat(Quoted(name), ": not in the base model")
                                   : absl::StrCat(Quoted(name), ": its tied base tensor '",
                                                  record.base_name, "' is not in the base model"));
  }
  const auto& bs = base_tensor->shape;
  if (bs != record.base_shape) {
    const auto& rs = record.base_shape;
    const bool transposed = bs.size() == 2 && rs.size() == 2 && bs[0] == rs[1] && bs[1] == rs[0];
    return absl::InvalidArgumentError(absl::StrCat(
        Quoted(name), ": base tensor has shape ", ShapeString(bs), ", the delta was made against ",
        ShapeString(rs), transposed ? " (transposed?)" : ""));
  }
  if (record.encoding == Encoding::kUnchanged && record.info.dtype != base_tensor->dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat(Quoted(name), ": ", enc, " record has dtype ", DTypeText(record.info.dtype),
                     ", its base tensor is ", DTypeText(base_tensor->dtype),
                     " (an unchanged tensor is the base tensor bit for bit)"));
  }
  if (IsLossyEncoding(record.encoding) && !IsCastable(base_tensor->dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        Quoted(name), ": ", enc, " record over a base tensor of dtype ",
        DTypeText(base_tensor->dtype), " (a lossy delta merges into F32, F16 or BF16 only)"));
  }
  return absl::OkStatus();
}

absl::Status CheckRecordFitsBase(const TensorRecord& record, const ModelReader* base) {
  if (record.encoding == Encoding::kRaw) return absl::OkStatus();
  if (base == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(Quoted(record.info.name), ": ",
                                                   std::string(EncodingName(record.encoding)),
                                                   " record needs the base model"));
  }
  absl::StatusOr<TensorView> view = base->Get(record.base_tensor());
  if (!view.ok() && !absl::IsNotFound(view.status())) return view.status();
  return CheckRecordFitsBase(record, view.ok() ? &view->info : nullptr);
}

absl::Status CheckContainerFitsBase(const ContainerReader& container, const ModelReader& base) {
  for (size_t i = 0; i < container.num_records(); ++i) {
    DS_ASSIGN_OR_RETURN(TensorRecord rec, container.record(i));
    absl::Status s = CheckRecordFitsBase(rec, &base);
    // Absent from the base the container claims (its hash), or a payload that would not
    // decode: the container is bad, whatever the decoder would call it.
    if (absl::IsNotFound(s)) s = absl::InvalidArgumentError(s.message());
    if (s.ok() && IsLossyEncoding(rec.encoding)) {
      if (absl::Status p = DescribePayload(rec).status(); !p.ok()) {
        s = absl::InvalidArgumentError(absl::StrCat(Quoted(rec.info.name), ": ", p.message()));
      }
    }
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("record ", i, ": ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace deltaserve::codec
