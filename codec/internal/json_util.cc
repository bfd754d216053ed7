#include "codec/internal/json_util.h"

#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "codec/status_macros.h"
#include "codec/tensor.h"

namespace deltaserve::codec::internal {

absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, absl::string_view what,
                                         absl::string_view top_key_kind) {
  // One frame per open object or array: the keys seen so far (objects) and the key
  // under which the container sits, for messages.
  struct Frame {
    bool is_object = false;
    std::string parent_key;
    std::set<std::string> keys;
  };
  std::vector<Frame> stack;
  std::string last_key;
  std::string duplicate;  // first duplicate found, as a message
  using Event = nlohmann::json::parse_event_t;
  auto callback = [&](int /*depth*/, Event event, nlohmann::json& parsed) {
    switch (event) {
      case Event::object_start:
      case Event::array_start:
        stack.push_back(Frame{event == Event::object_start, last_key, {}});
        last_key.clear();
        break;
      case Event::object_end:
      case Event::array_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case Event::key:
        last_key = parsed.get<std::string>();
        if (!stack.empty() && !stack.back().keys.insert(last_key).second && duplicate.empty()) {
          duplicate = stack.size() == 1
                          ? absl::StrCat("duplicate ", top_key_kind, " '", last_key, "'")
                          : absl::StrCat("duplicate key '", last_key, "' in '",
                                         stack.back().parent_key, "'");
        }
        break;
      case Event::value:
        break;
    }
    return true;
  };
  // allow_exceptions = false: a syntax error yields a "discarded" value instead of a
  // throw.
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), callback,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": malformed JSON"));
  }
  if (!duplicate.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": ", duplicate));
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
