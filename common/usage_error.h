// Errors that are usage errors although they are found past flag parsing: a file given to
// a flag that is not what the flag takes. codec::ModelReader::Open marks a file it
// recognises as another format (a PyTorch checkpoint as --base: codec/internal/
// input_hints.h), a directory holding no model and an ambiguous one. deltactl and deltaserved exit 2 for them, as for a bad flag value;
// 1 stays for failures of a well-formed request (a corrupt file, a busy port, a refusal).
//
// The mark is a status payload, so it survives a status returned up the stack unchanged
// (DS_RETURN_IF_ERROR), not one rebuilt with a new message (common::Annotate): use
// KeepUsageMark there. Print marked statuses with
// ToString(absl::StatusToStringMode::kWithNoExtraData), or the payload shows. Header-only;
// thread-safe (pure functions).
#ifndef DELTASERVE_COMMON_USAGE_ERROR_H_
#define DELTASERVE_COMMON_USAGE_ERROR_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"

namespace deltaserve::common {

inline constexpr absl::string_view kUsageErrorPayload = "type.deltaserve/usage_error";

// `status` marked as a usage error (an OK status stays OK).
inline absl::Status MarkUsageError(absl::Status status) {
  if (!status.ok()) status.SetPayload(kUsageErrorPayload, absl::Cord());
  return status;
}

inline bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsageErrorPayload).has_value();
}

// `rebuilt` (e.g. common::Annotate(original, "--base")), marked if `original` is.
inline absl::Status KeepUsageMark(const absl::Status& original, absl::Status rebuilt) {
  return IsUsageError(original) ? MarkUsageError(std::move(rebuilt)) : rebuilt;
}

}  // namespace deltaserve::common

#endif  // DELTASERVE_COMMON_USAGE_ERROR_H_
