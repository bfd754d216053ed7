// Debian's Abseil (20220623) does not alias absl::string_view to std::string_view, so
// absl::StrCat and absl::Status do not take std::string_view: convert with Av(). And the
// quoting of names in the store's messages.
#ifndef DELTASERVE_STORAGE_INTERNAL_STRINGS_H_
#define DELTASERVE_STORAGE_INTERNAL_STRINGS_H_

#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/names.h"

namespace deltaserve::storage {

inline absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// `s` quoted for a message: C-escaped, at most 64 bytes shown ("...'" when cut).
inline std::string Quoted(std::string_view s) { return common::QuotedName(s); }

// "tenant '<tenant>' task '<task>'" for messages.
inline std::string TaskName(std::string_view tenant, std::string_view task) {
  return absl::StrCat("tenant ", Quoted(tenant), " task ", Quoted(task));
}

}  // namespace deltaserve::storage

#endif  // DELTASERVE_STORAGE_INTERNAL_STRINGS_H_
