// nlohmann::json behind absl::Status. nlohmann reports errors by throwing; STYLE.md keeps
// exceptions from crossing our APIs, so the project parses, reads and writes JSON only
// through these helpers, which never throw. Thread-safe (no state).
#ifndef DELTASERVE_COMMON_JSON_H_
#define DELTASERVE_COMMON_JSON_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace deltaserve::common {

// Parses `text`. InvalidArgument "<what>: malformed JSON at line L, column C (byte B):
// <parser message>" on any syntax error (also for nesting too deep for the parser, and
// strings that are not valid UTF-8), with `what` naming the file (and, for embedded
// JSON, the part of it). A key repeated within one object is InvalidArgument too
// (nlohmann would keep the last value silently): "<what>: duplicate <top_key_kind> 'K'"
// for a key of the top-level object (e.g. "tensor name" for a safetensors header) and
// "<what>: duplicate key 'K' in '<parent key>'" for a nested one.
absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, absl::string_view what,
                                         absl::string_view top_key_kind = "key");

// Serializes `j` (compact when indent < 0, else pretty with `indent` spaces). nlohmann
// throws on strings that are not valid UTF-8; that comes back as InvalidArgument
// "<what>: cannot serialize: ...".
absl::StatusOr<std::string> DumpJson(const nlohmann::json& j, absl::string_view what,
                                     int indent = -1);

// `j` as a non-negative int64: a JSON unsigned or non-negative signed integer
// (floats, negatives and values above INT64_MAX are rejected). InvalidArgument
// "<what>: ..." otherwise.
absl::StatusOr<int64_t> JsonToNonNegativeInt(const nlohmann::json& j, absl::string_view what);

// `j` as a string, or InvalidArgument "<what>: expected a string".
absl::StatusOr<std::string> JsonToString(const nlohmann::json& j, absl::string_view what);

// `j` as a finite double (any JSON number), or InvalidArgument.
absl::StatusOr<double> JsonToDouble(const nlohmann::json& j, absl::string_view what);

// `j` as a bool, or InvalidArgument "<what>: expected true or false".
absl::StatusOr<bool> JsonToBool(const nlohmann::json& j, absl::string_view what);

// InvalidArgument "<what>: unknown key \"K\" (allowed: a, b)" naming the first key of
// the object `j` not in `allowed` (a misspelled key would otherwise be ignored
// silently, e.g. "quota" for "quota_bytes"); "<what>: must be an object" if `j` is not one.
absl::Status CheckJsonKeys(const nlohmann::json& j, absl::string_view what,
                           const std::vector<std::string>& allowed);

}  // namespace deltaserve::common

#endif  // DELTASERVE_COMMON_JSON_H_
