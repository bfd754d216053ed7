// Checks on outgoing requests: protobuf drops a proto3 message whose `string` field is
// not valid UTF-8 at the receiver (the server answered UNIMPLEMENTED with no message),
// so the client refuses such a request before sending it.
#ifndef DELTASERVE_CLIENT_INTERNAL_PROTO_STRINGS_H_
#define DELTASERVE_CLIENT_INTERNAL_PROTO_STRINGS_H_

#include <string_view>

#include "absl/status/status.h"
#include "google/protobuf/message.h"

namespace deltaserve::client {

// OK if every `string` field of `message`, in nested messages, repeated fields and maps
// too, is valid UTF-8 (codec::IsValidUtf8). Otherwise InvalidArgument
// "<label>: <field name> '<text, bad bytes as \xNN>' is not valid UTF-8" for the first.
absl::Status CheckStringFieldsUtf8(const google::protobuf::Message& message,
                                   std::string_view label);

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_INTERNAL_PROTO_STRINGS_H_
