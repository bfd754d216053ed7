// nlohmann::json behind absl::Status (internal to codec/). nlohmann reports errors by
// throwing; STYLE.md keeps exceptions from crossing our APIs, so codec/ parses and
// reads JSON only through these helpers, which never throw.
#ifndef DELTASERVE_CODEC_INTERNAL_JSON_UTIL_H_
#define DELTASERVE_CODEC_INTERNAL_JSON_UTIL_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace deltaserve::codec::internal {

// Parses `text` (no exceptions: parse errors and nesting are reported, not thrown).
// InvalidArgument "<what>: malformed JSON" on any syntax error (including strings that
// are not valid UTF-8), with `what` naming the file (and, for embedded JSON, the part
// of it). A key repeated within one object is InvalidArgument too (nlohmann would keep
// the last value silently): "<what>: duplicate <top_key_kind> 'K'" for a key of the
// top-level object (e.g. top_key_kind "tensor name" for a safetensors header), and
// "<what>: duplicate key 'K' in '<parent key>'" for a nested one.
absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, absl::string_view what,
                                         absl::string_view top_key_kind = "key");

// Serializes `j` compactly. nlohmann throws on strings that are not valid UTF-8; that
// comes back as InvalidArgument "<what>: ...".
absl::StatusOr<std::string> DumpJson(const nlohmann::json& j, absl::string_view what);

// `j` as a non-negative int64: a JSON unsigned or non-negative signed integer
// (floats, negatives and values above INT64_MAX are rejected). InvalidArgument
// "<what>: ..." otherwise.
absl::StatusOr<int64_t> JsonToNonNegativeInt(const nlohmann::json& j, absl::string_view what);

// `j` as a shape: an array of non-negative integers whose product fits int64.
absl::StatusOr<std::vector<int64_t>> JsonToShape(const nlohmann::json& j,
                                                 absl::string_view what);

// `j` as a string, or InvalidArgument "<what>: expected a string".
absl::StatusOr<std::string> JsonToString(const nlohmann::json& j, absl::string_view what);

// `j` as a finite double (any JSON number), or InvalidArgument.
absl::StatusOr<double> JsonToDouble(const nlohmann::json& j, absl::string_view what);

}  // namespace deltaserve::codec::internal

#endif  // DELTASERVE_CODEC_INTERNAL_JSON_UTIL_H_
