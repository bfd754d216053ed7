// Status propagation macros (and Annotate) shared by every deltaserve library.
//
// Debian 12's Abseil (20220623) ships no RETURN_IF_ERROR / ASSIGN_OR_RETURN, so this is
// the project's one definition of them (STYLE.md, "Errors"). Header-only; no state.
#ifndef DELTASERVE_COMMON_STATUS_MACROS_H_
#define DELTASERVE_COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace deltaserve::common {

// `status` with "<prefix>: " before its message and the same code (OK stays OK): how a
// caller adds what it was doing to an error from below.
inline absl::Status Annotate(const absl::Status& status, absl::string_view prefix) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(prefix, ": ", status.message()));
}

// `result`, its error annotated as above ("--base: /m.safetensors: no such file or
// directory"): a value passes through unchanged.
template <typename T>
absl::StatusOr<T> Annotate(absl::StatusOr<T> result, absl::string_view prefix) {
  if (result.ok()) return result;
  return Annotate(result.status(), prefix);
}

}  // namespace deltaserve::common

// Evaluates `expr` (an absl::Status); returns it from the enclosing function if not OK.
#define DS_RETURN_IF_ERROR(expr)                         \
  do {                                                   \
    ::absl::Status _ds_status = (expr);                  \
    if (!_ds_status.ok()) return _ds_status;             \
  } while (0)

#define DS_STATUS_CONCAT_INNER_(a, b) a##b
#define DS_STATUS_CONCAT_(a, b) DS_STATUS_CONCAT_INNER_(a, b)

// `lhs` = value of `rexpr` (an absl::StatusOr<T>), or returns its status if not OK.
// Usage: DS_ASSIGN_OR_RETURN(auto reader, ModelReader::Open(path));
#define DS_ASSIGN_OR_RETURN(lhs, rexpr) \
  DS_ASSIGN_OR_RETURN_IMPL_(DS_STATUS_CONCAT_(_ds_statusor_, __LINE__), lhs, rexpr)

#define DS_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                              \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // DELTASERVE_COMMON_STATUS_MACROS_H_
