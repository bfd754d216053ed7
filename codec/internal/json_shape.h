// A tensor shape read from untrusted JSON (safetensors headers, TF.js manifests).
#ifndef DELTASERVE_CODEC_INTERNAL_JSON_SHAPE_H_
#define DELTASERVE_CODEC_INTERNAL_JSON_SHAPE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace deltaserve::codec::internal {

// `j` as a shape: an array of non-negative integers whose product fits int64.
// InvalidArgument "<what>: ..." otherwise.
absl::StatusOr<std::vector<int64_t>> JsonToShape(const nlohmann::json& j,
                                                 absl::string_view what);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_JSON_SHAPE_H_
