"""The gRPC target for a deltaserve server address, by the rules of deltactl --server
(common/address.h, ServerTarget): "host" or "[v6]" gains deltaserved's default port
50051 (gRPC itself would dial 443); "host:port" (port 1-65535), "[v6]:port" and gRPC URIs
with a scheme (unix:PATH, unix-abstract:NAME, dns:, ipv4:, ipv6:) are kept.
DeltaserveError(INVALID_ARGUMENT) for an empty address, a bad or zero port, no host, an
IPv6 address without brackets, brackets around something else ("[zz]") and a scheme with
nothing after it. Pure function, thread-safe."""
import ipaddress

from deltaserve.errors import invalid_argument

DEFAULT_SERVER_PORT = 50051
_SCHEMES = ("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")


def server_target(text):
    """`text` as the gRPC target to dial (see the module docstring)."""
    def bad(what):
        return invalid_argument(f"server address {text!r}: {what} "
                                "(want host[:port], [v6][:port] or unix:PATH)")

    if not text:
        raise bad("empty address")
    for scheme in _SCHEMES:
        if text.startswith(scheme):
            if len(text) == len(scheme):
                raise bad(f"nothing after {scheme!r}")
            return text
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise bad("']' missing")
        rest = text[close + 1:]
        try:  # a zone ("fe80::1%eth0") is taken, as getaddrinfo takes it
            ipaddress.IPv6Address(text[1:close].split("%")[0])
        except ValueError:
            raise bad(f"{text[1:close]!r} between the brackets is not an IPv6 address") from None
        if rest == "":
            return f"{text}:{DEFAULT_SERVER_PORT}"
        if not rest.startswith(":"):
            raise bad("want ':port' after ']'")
        host, port = text[1:close], rest[1:]
    else:
        colons = text.count(":")
        if colons == 0:
            return f"{text}:{DEFAULT_SERVER_PORT}"
        if colons > 1:
            raise bad("an IPv6 address needs brackets, e.g. [::1]:50051")
        host, port = text.split(":")
    if not host:
        raise bad("no host")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise bad(f"port must be a number in [1, 65535], got {port!r}")
    return text
