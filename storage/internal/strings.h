// Debian's Abseil (20220623) does not alias absl::string_view to std::string_view, so
// absl::StrCat and absl::Status do not take std::string_view: convert with Av().
#ifndef DELTASERVE_STORAGE_INTERNAL_STRINGS_H_
#define DELTASERVE_STORAGE_INTERNAL_STRINGS_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace deltaserve::storage {

inline absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace deltaserve::storage

#endif  // DELTASERVE_STORAGE_INTERNAL_STRINGS_H_
