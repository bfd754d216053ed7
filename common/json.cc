#include "common/json.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace deltaserve::common {

absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, absl::string_view what) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is the 1-based byte where parsing stopped; users want line:column.
    const size_t byte = e.byte > 0 ? std::min<size_t>(e.byte - 1, text.size()) : 0;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < byte; ++i) {
      if (text[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    return absl::InvalidArgumentError(absl::StrCat(what, ": malformed JSON at line ", line,
                                                   ", column ", col, " (byte ", e.byte,
                                                   "): ", e.what()));
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": malformed JSON: ", e.what()));
  }
}

absl::StatusOr<std::string> DumpJson(const nlohmann::json& j, absl::string_view what,
                                     int indent) {
  try {
    return j.dump(indent);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": cannot serialize: ", e.what()));
  }
}

absl::StatusOr<int64_t> JsonToNonNegativeInt(const nlohmann::json& j, absl::string_view what) {
  if (j.is_number_unsigned()) {
    uint64_t v = j.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", v, " is too large"));
    }
    return static_cast<int64_t>(v);
  }
  if (j.is_number_integer()) {
    int64_t v = j.get<int64_t>();
    if (v < 0) return absl::InvalidArgumentError(absl::StrCat(what, ": ", v, " is negative"));
    return v;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": expected a non-negative integer, got ", j.type_name()));
}

absl::StatusOr<std::string> JsonToString(const nlohmann::json& j, absl::string_view what) {
  if (!j.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected a string, got ", j.type_name()));
  }
  return j.get<std::string>();
}

absl::StatusOr<double> JsonToDouble(const nlohmann::json& j, absl::string_view what) {
  if (!j.is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected a number, got ", j.type_name()));
  }
  double v = j.get<double>();
  if (!std::isfinite(v)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a finite number"));
  }
  return v;
}

absl::StatusOr<bool> JsonToBool(const nlohmann::json& j, absl::string_view what) {
  if (!j.is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected true or false, got ", j.type_name()));
  }
  return j.get<bool>();
}

}  // namespace deltaserve::common
