#include "proto/protocol.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "codec/container_checks.h"
#include "google/protobuf/descriptor.h"
#include "re2/re2.h"

namespace deltaserve::proto {

absl::Status CheckIncludeRegex(std::string_view regex) {
  const RE2 re(re2::StringPiece(regex.data(), regex.size()), RE2::Quiet);
  if (re.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(re.error());
}

absl::Status ValidateChunkBytes(uint32_t bytes, absl::string_view what) {
  if (bytes < kMinChunkBytes || bytes > kMaxChunkBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " must be in [", kMinChunkBytes, ", ", kMaxChunkBytes,
        "] bytes (4 MiB less 1 KiB for framing, so that messages fit a default gRPC "
        "client's 4 MiB receive limit), got ", bytes));
  }
  return absl::OkStatus();
}

uint32_t EffectiveChunkBytes(uint32_t requested, uint32_t server_default) {
  return std::clamp<uint32_t>(requested ? requested : server_default, kMinChunkBytes,
                              kMaxChunkBytes);
}

v1::DType ToProtoDType(codec::DType dtype) {
  // The wire enum is codec::DType + 1 (0 is "unset"), see delta_service.proto.
  if (dtype > codec::kLastDType) return v1::DTYPE_UNSPECIFIED;
  return static_cast<v1::DType>(static_cast<int>(dtype) + 1);
}

absl::StatusOr<codec::DType> FromProtoDType(v1::DType dtype) {
  const int v = static_cast<int>(dtype);
  if (v >= 1 && v <= static_cast<int>(codec::kLastDType) + 1) {
    return static_cast<codec::DType>(v - 1);
  }
  if (dtype == v1::DTYPE_UNSPECIFIED) {
    return absl::InvalidArgumentError("dtype is DTYPE_UNSPECIFIED");
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype ", v));
}

absl::StatusOr<std::optional<codec::DType>> FromProtoOutDType(v1::DType dtype) {
  if (dtype == v1::DTYPE_UNSPECIFIED) return std::optional<codec::DType>();
  absl::StatusOr<codec::DType> d = FromProtoDType(dtype);
  if (!d.ok()) return d.status();
  if (!codec::IsCastable(*d)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "out_dtype ", std::string(codec::DTypeName(*d)), " is not F32, F16 or BF16 (tensors of "
        "other dtypes are always sent in their own dtype)"));
  }
  return std::optional<codec::DType>(*d);
}

namespace {

bool IsBinary(const google::protobuf::FieldDescriptor* f) {
  for (const char* name : kBinaryFields) {
    if (f->full_name() == name) return true;
  }
  return false;
}

}  // namespace

absl::Status CheckTextFieldsUtf8(const google::protobuf::Message& message,
                                 std::string_view label_view) {
  using google::protobuf::FieldDescriptor;
  const absl::string_view label(label_view.data(), label_view.size());
  const google::protobuf::Reflection* refl = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  refl->ListFields(message, &fields);  // set fields only
  for (const FieldDescriptor* f : fields) {
    const int n = f->is_repeated() ? refl->FieldSize(message, f) : 1;
    auto what = [&](int i) {
      return f->is_repeated() ? absl::StrCat(label, ": ", f->name(), "[", i, "]")
                              : absl::StrCat(label, ": ", f->name());
    };
    const bool text = f->type() == FieldDescriptor::TYPE_STRING ||
                      (f->type() == FieldDescriptor::TYPE_BYTES && !IsBinary(f));
    if (text) {
      for (int i = 0; i < n; ++i) {
        const std::string s =
            f->is_repeated() ? refl->GetRepeatedString(message, f, i) : refl->GetString(message, f);
        if (absl::Status st = codec::CheckUtf8(s, what(i)); !st.ok()) return st;
      }
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      for (int i = 0; i < n; ++i) {
        const google::protobuf::Message& sub = f->is_repeated()
                                                   ? refl->GetRepeatedMessage(message, f, i)
                                                   : refl->GetMessage(message, f);
        if (absl::Status st = CheckTextFieldsUtf8(sub, what(i)); !st.ok()) return st;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace deltaserve::proto
