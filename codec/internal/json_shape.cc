#include "codec/internal/json_shape.h"

#include "absl/strings/str_cat.h"
#include "codec/tensor.h"
#include "common/json.h"
#include "common/status_macros.h"

namespace deltaserve::codec::internal {

absl::StatusOr<std::vector<int64_t>> JsonToShape(const nlohmann::json& j,
                                                 absl::string_view what) {
  if (!j.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected an array of dims, got ", j.type_name()));
  }
  std::vector<int64_t> shape;
  shape.reserve(j.size());
  for (const nlohmann::json& dim : j) {
    DS_ASSIGN_OR_RETURN(int64_t d, common::JsonToNonNegativeInt(dim, what));
    shape.push_back(d);
  }
  absl::StatusOr<int64_t> n = CheckedNumElements(shape);
  if (!n.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": bad shape ", ShapeString(shape), ": ", n.status().message()));
  }
  return shape;
}

}  // namespace deltaserve::codec::internal
