// UTF-8 checks for text shown to users: messages quote names, JSON parser context and
// stored text that may hold any bytes.
#ifndef DELTASERVE_COMMON_UTF8_H_
#define DELTASERVE_COMMON_UTF8_H_

#include <string>
#include <string_view>

namespace deltaserve::common {

// True if `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, no
// code point above U+10FFFF), the rule protobuf applies to proto3 `string` fields.
bool IsValidUtf8(std::string_view s);

// `s` itself if valid UTF-8, else `s` with every byte that is not part of a valid
// sequence written as the four characters \xNN (so a message never carries raw bytes
// that a terminal or a log shows as garbage). Thread-safe.
std::string Utf8OrEscaped(std::string_view s);

}  // namespace deltaserve::common

#endif  // DELTASERVE_COMMON_UTF8_H_
