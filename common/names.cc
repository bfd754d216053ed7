#include "common/names.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace deltaserve::common {
namespace {

// Debian's Abseil (20220623) does not alias absl::string_view to std::string_view.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

std::string QuotedName(std::string_view s) {
  std::string_view shown = s.substr(0, 64);
  return absl::StrCat("'", absl::CHexEscape(Av(shown)), s.size() > shown.size() ? "...'" : "'");
}

absl::Status ValidateName(std::string_view kind, std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) {
    return absl::InvalidArgumentError(absl::StrCat(Av(kind), " name ", QuotedName(name),
                                                   " must have 1 to ", kMaxNameLength,
                                                   " characters (it has ", name.size(), ")"));
  }
  if (name[0] == '.') {
    return absl::InvalidArgumentError(
        absl::StrCat(Av(kind), " name ", QuotedName(name), " must not start with '.'"));
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          Av(kind), " name ", QuotedName(name), " may only contain [A-Za-z0-9._-]"));
    }
  }
  return absl::OkStatus();
}

}  // namespace deltaserve::common
