#include "codec/internal/json_util.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "codec/status_macros.h"
#include "codec/tensor.h"

namespace deltaserve::codec::internal {

absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, absl::string_view what) {
  // allow_exceptions = false: a syntax error yields a "discarded" value instead of a
  // throw; the callback is unused.
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": malformed JSON"));
  }
  return j;
}

absl::StatusOr<std::string> DumpJson(const nlohmann::json& j, absl::string_view what) {
  try {
    return j.dump();
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

absl::StatusOr<std::vector<int64_t>> JsonToShape(const nlohmann::json& j,
                                                 absl::string_view what) {
  if (!j.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected an array of dims, got ", j.type_name()));
  }
  std::vector<int64_t> shape;
  shape.reserve(j.size());
  for (const nlohmann::json& dim : j) {
    DS_ASSIGN_OR_RETURN(int64_t d, JsonToNonNegativeInt(dim, what));
    shape.push_back(d);
  }
  absl::StatusOr<int64_t> n = CheckedNumElements(shape);
  if (!n.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": bad shape ", ShapeString(shape), ": ", n.status().message()));
  }
  return shape;
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

}  // namespace deltaserve::codec::internal
