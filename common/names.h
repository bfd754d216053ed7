// Tenant and task names: the one rule the store keys by (storage/key_schema.h), the
// server checks requests with, and deltactl checks its flags with while parsing the
// command line, before it reads, encodes or uploads anything.
#ifndef DELTASERVE_COMMON_NAMES_H_
#define DELTASERVE_COMMON_NAMES_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace deltaserve::common {

// The longest tenant or task name, in bytes.
inline constexpr size_t kMaxNameLength = 128;

// Tenant and task names: 1..kMaxNameLength characters of [A-Za-z0-9._-], not starting
// with '.' (no '/', so "t/<tenant>/" of one tenant never prefixes another's keys; no
// "..", no spaces, no bytes that need escaping in a log or a path). InvalidArgument
// "<kind> name '<name>' must ..." naming `kind` ("tenant", "task") and the name
// (QuotedName) otherwise. Thread-safe.
absl::Status ValidateName(std::string_view kind, std::string_view name);

// `s` quoted for a message: C-escaped, at most 64 bytes shown ("...'" when cut).
std::string QuotedName(std::string_view s);

}  // namespace deltaserve::common

#endif  // DELTASERVE_COMMON_NAMES_H_
