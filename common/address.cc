#include "common/address.h"

#include <arpa/inet.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace deltaserve::common {
namespace {

constexpr char kForms[] = "want host:port, [v6]:port";

std::string Forms(bool allow_unix) {
  return absl::StrCat(kForms, allow_unix ? ", unix:PATH" : "");
}

absl::Status Bad(absl::string_view text, absl::string_view what, bool allow_unix) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, " (", Forms(allow_unix), "), got '", text, "'"));
}

// Whether `host` (the text between brackets) is an IPv6 address, with an optional zone
// ("fe80::1%eth0"): "[zz]" or "[]" would otherwise reach getaddrinfo as a host name.
bool IsIpv6Literal(absl::string_view host) {
  const std::string address(host.substr(0, host.find('%')));
  in6_addr out{};
  return !address.empty() && inet_pton(AF_INET6, address.c_str(), &out) == 1;
}

absl::Status BadIpv6(absl::string_view text, absl::string_view host) {
  return Bad(text, absl::StrCat("'", host, "' between the brackets is not an IPv6 address"), false);
}

}  // namespace

absl::StatusOr<HostPort> ParseHostPort(absl::string_view text) {
  HostPort out;
  absl::string_view port;
  if (absl::StartsWith(text, "[")) {
    const size_t close = text.find(']');
    if (close == absl::string_view::npos) return Bad(text, "']' missing", false);
    if (close + 1 >= text.size() || text[close + 1] != ':') return Bad(text, "no port", false);
    out.host = std::string(text.substr(1, close - 1));
    if (!IsIpv6Literal(out.host)) return BadIpv6(text, out.host);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == absl::string_view::npos) return Bad(text, "no port", false);
    if (text.find(':') != colon) {
      return Bad(text, "an IPv6 address needs brackets, e.g. [::1]:50051", false);
    }
    out.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  if (port.empty() || !std::all_of(port.begin(), port.end(), [](char c) {
        return c >= '0' && c <= '9';
      }) || !absl::SimpleAtoi(port, &out.port) || out.port > 65535) {
    return Bad(text, absl::StrCat("port '", port, "' is not a number in [0, 65535]"), false);
  }
  return out;
}

bool IsUnixAddress(absl::string_view text) {
  return absl::StartsWith(text, "unix:") || absl::StartsWith(text, "unix-abstract:");
}

absl::Status CheckListenAddress(absl::string_view text, bool allow_unix) {
  if (IsUnixAddress(text)) {
    if (!allow_unix) return Bad(text, "a Unix socket is not possible here", false);
    if (text.substr(text.find(':') + 1).empty()) return Bad(text, "no socket path", true);
    return absl::OkStatus();
  }
  absl::StatusOr<HostPort> hp = ParseHostPort(text);
  if (hp.ok()) return absl::OkStatus();
  // The same message, listing every form this flag takes.
  std::string message(hp.status().message());
  if (allow_unix) {
    const size_t at = message.find(kForms);
    if (at != std::string::npos) message.insert(at + sizeof(kForms) - 1, ", unix:PATH");
  }
  return absl::InvalidArgumentError(message);
}

absl::StatusOr<std::string> ServerTarget(absl::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("empty address (want host[:port])");
  for (absl::string_view scheme : {"unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:"}) {
    if (!absl::StartsWith(text, scheme)) continue;
    if (text.size() == scheme.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "nothing after '", scheme, "' (want host[:port], [v6][:port] or unix:PATH)"));
    }
    return std::string(text);
  }
  const bool bracketed = absl::StartsWith(text, "[");
  const size_t colons = std::count(text.begin(), text.end(), ':');
  if (bracketed ? absl::EndsWith(text, "]") : colons == 0) {
    if (bracketed && !IsIpv6Literal(text.substr(1, text.size() - 2))) {
      return BadIpv6(text, text.substr(1, text.size() - 2));
    }
    return absl::StrCat(text, ":", kDefaultServerPort);  // the documented default port
  }
  absl::StatusOr<HostPort> hp = ParseHostPort(text);
  if (!hp.ok()) return hp.status();
  if (hp->host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("no host (want host[:port]), got '", text, "'"));
  }
  if (hp->port == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("port 0 cannot be dialled (want host[:port]), got '", text, "'"));
  }
  return std::string(text);
}

}  // namespace deltaserve::common
