// Counts in user messages: "1 tensor", "2 tensors", "0 tensors" (new-user trial: "1
// tensors"). Header-only; thread-safe (pure functions).
#ifndef DELTASERVE_COMMON_PLURAL_H_
#define DELTASERVE_COMMON_PLURAL_H_

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace deltaserve::common {

// `n` and `noun` ("tensor"), with "s" added unless n == 1; a noun whose plural is not
// noun + "s" passes it: Counted(n, "retry", "retries").
inline std::string Counted(int64_t n, absl::string_view noun, absl::string_view plural = "") {
  if (n == 1) return absl::StrCat(n, " ", noun);
  if (plural.empty()) return absl::StrCat(n, " ", noun, "s");
  return absl::StrCat(n, " ", plural);
}

}  // namespace deltaserve::common

#endif  // DELTASERVE_COMMON_PLURAL_H_
