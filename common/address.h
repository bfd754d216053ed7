// Network addresses as deltaserved's --listen / --metrics-listen / --agent-listen and
// deltactl's --server take them, checked while the command line is parsed so that a typo
// is a usage error naming the flag, not a late "address already in use?" or a silent
// dial of port 443 (gRPC's default for a target without a port).
//
// Accepted forms:
//   host:port      a name or IPv4 address; an empty host (":50051") is every interface
//   [v6]:port      an IPv6 address, in brackets ("[::1]:50051")
//   unix:PATH      a Unix socket (gRPC URI; only where `allow_unix`)
//   unix-abstract:NAME
// Thread-safe (pure functions).
#ifndef DELTASERVE_COMMON_ADDRESS_H_
#define DELTASERVE_COMMON_ADDRESS_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace deltaserve::common {

// deltaserved's default gRPC port (--listen 127.0.0.1:50051), which deltactl --server
// assumes when none is given.
inline constexpr int kDefaultServerPort = 50051;

struct HostPort {
  std::string host;  // without brackets; "" = every interface
  int port = 0;      // 0..65535
};

// Splits "host:port" or "[v6]:port". InvalidArgument naming what is wrong: no port
// ("no port: want host:port ..."), a port that is not a number in [0, 65535], an IPv6
// address without brackets, a bracket not closed, brackets around something that is not
// an IPv6 address ("[zz]:1"; a zone, "[fe80::1%eth0]", is taken).
absl::StatusOr<HostPort> ParseHostPort(absl::string_view text);

// True for "unix:" and "unix-abstract:" gRPC URIs.
bool IsUnixAddress(absl::string_view text);

// A listen address: ParseHostPort's forms (port 0 = a free port), or with `allow_unix`
// a Unix socket URI with a non-empty path. InvalidArgument as ParseHostPort, the message
// listing the accepted forms.
absl::Status CheckListenAddress(absl::string_view text, bool allow_unix);

// The gRPC target for deltactl --server `text`: "host" or "[v6]" gains
// ":kDefaultServerPort"; "host:port" (port 1..65535), "[v6]:port" and gRPC URIs with a
// scheme (unix:, unix-abstract:, dns:, ipv4:, ipv6:) are kept. InvalidArgument for an
// empty address, a scheme with nothing after it, port 0 or a bad port, and an IPv6
// address without brackets.
absl::StatusOr<std::string> ServerTarget(absl::string_view text);

}  // namespace deltaserve::common

#endif  // DELTASERVE_COMMON_ADDRESS_H_
