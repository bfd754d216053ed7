"""DeltaserveError: the one exception type of the deltaserve package.

Every failure a Client method reports is a DeltaserveError carrying a gRPC status code
(grpc.StatusCode) and a message. Server errors keep the server's code and message,
prefixed with the call and task (e.g. "GetTask 'chat': task not found"), the way the C++
client (client/internal/status.h) does. Checks made in the worker use the code that
names the fault: DATA_LOSS for a checksum mismatch or a malformed stream,
INVALID_ARGUMENT for a model whose names, shapes or dtypes do not match the task or a
bad argument, FAILED_PRECONDITION for a delta made against another base,
DEADLINE_EXCEEDED when the caller's deadline passed, UNAVAILABLE when the server cannot
be reached (also after the bounded resume attempts of a dropped stream), NOT_FOUND
for an include= filter that matches no tensor of the task.

Errors a Client argument or environment variable fixes end with the hint deltactl gives,
in Python's terms (with_hint): UNAUTHENTICATED names Client(token=) / DELTASERVE_TOKEN,
PERMISSION_DENIED the token and Client(tenant=) / DELTASERVE_TENANT, an unreachable
server Client(server=) / DELTASERVE_SERVER, a TLS handshake failure Client(tls=, ca=).
"""
import errno

import grpc


class DeltaserveError(Exception):
    """A failed deltaserve operation: `code` (grpc.StatusCode) and `message` (str)."""

    def __init__(self, code, message):
        self.code = code
        self.message = message
        super().__init__(f"{code.name}: {message}")


def from_rpc_error(error, label, client=None):
    """DeltaserveError for a grpc.RpcError raised by call `label` (e.g. "GetBase"), with
    with_hint's hint when `client` (the Client that made the call) is given."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    out = DeltaserveError(code or grpc.StatusCode.UNKNOWN, f"{label}: {details}")
    return out if client is None else with_hint(out, client)


# Marks a message that already carries a hint (a hinted error passed on again).
_HINT_OPEN = " (hint: "


# What an unanswered keepalive ping means (gRPC: UNAVAILABLE "keepalive watchdog
# timeout"); the C++ client's words (client/internal/status.cc).
KEEPALIVE_HINT = ("the server stopped answering: no reply to a keepalive ping; it is frozen, "
                  "overloaded, or cut off by the network")


def with_hint(error, client):
    """`error` (a DeltaserveError) with, for the failures that a Client argument or an
    environment variable fixes, which one to look at (as deltactl's WithFlagHint,
    client/deltactl_remote.cc, names its flags); `error` itself otherwise."""
    C = grpc.StatusCode
    m, server = error.message, client.server
    hint = ""
    if _HINT_OPEN in m:
        return error
    if error.code == C.UNAUTHENTICATED:
        hint = ("no token was given: pass Client(token=...) or set DELTASERVE_TOKEN"
                if not client._token else
                f"the server at {server} did not accept the token given by Client(token=) "
                "or DELTASERVE_TOKEN")
    elif error.code == C.PERMISSION_DENIED:
        hint = ("the token (Client(token=) or DELTASERVE_TOKEN) may not do this; admin calls "
                "need an admin token, and Client(tenant=) or DELTASERVE_TENANT names the "
                "tenant to act on")
    elif error.code == C.UNAVAILABLE and "andshake" in m:
        hint = (f"TLS on one side only, or a certificate not trusted? Client(tls=True) / "
                f"Client(ca=PATH) must match whether deltaserved at {server} runs with "
                "--tls-cert")
    elif error.code == C.UNAVAILABLE and any(s in m for s in (
            "ailed to connect", "cannot reach", "Connection refused", "No such file")):
        hint = (f"is deltaserved running at {server}? Client(server='HOST[:PORT]') or "
                "DELTASERVE_SERVER sets the address")
    elif error.code == C.UNAVAILABLE and "keepalive" in m and "stopped answering" not in m:
        hint = KEEPALIVE_HINT  # the C++ client (native path) says it already
    elif error.code == C.INVALID_ARGUMENT and "must name the tenant" in m:
        hint = "pass Client(tenant=NAME) or set DELTASERVE_TENANT"
    if not hint:
        return error
    return DeltaserveError(error.code, f"{m}{_HINT_OPEN}{hint})")


def counted(n, noun, plural=None):
    """"1 tensor", "2 tensors": `n` and `noun`, plural unless n == 1 (new-user trial:
    "the task has 1 tensors")."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def not_found(message):
    return DeltaserveError(grpc.StatusCode.NOT_FOUND, message)


def data_loss(label, what):
    return DeltaserveError(grpc.StatusCode.DATA_LOSS, f"{label}: {what}")


def invalid_argument(message):
    return DeltaserveError(grpc.StatusCode.INVALID_ARGUMENT, message)


_OS_CODES = {errno.ENOENT: grpc.StatusCode.NOT_FOUND,
             errno.EACCES: grpc.StatusCode.PERMISSION_DENIED,
             errno.EPERM: grpc.StatusCode.PERMISSION_DENIED,
             errno.ENOSPC: grpc.StatusCode.RESOURCE_EXHAUSTED,
             errno.EDQUOT: grpc.StatusCode.RESOURCE_EXHAUSTED,
             # As the C++ common::ErrnoStatus: an I/O error of the device loses data.
             errno.EIO: grpc.StatusCode.DATA_LOSS,
             errno.EFBIG: grpc.StatusCode.OUT_OF_RANGE,
             errno.EROFS: grpc.StatusCode.PERMISSION_DENIED}


def from_os_error(error, message):
    """DeltaserveError for an OSError met on a local file: NOT_FOUND for a missing path,
    PERMISSION_DENIED, RESOURCE_EXHAUSTED for a full disk, DATA_LOSS for an I/O error
    (EIO), OUT_OF_RANGE beyond the file size limit, INVALID_ARGUMENT otherwise (a
    directory where a file is expected, or a file where a directory is)."""
    code = _OS_CODES.get(error.errno, grpc.StatusCode.INVALID_ARGUMENT)
    return DeltaserveError(code, f"{message}: {error.strerror or error}")


def wire_text(value, what, label):
    """`value` (str, or bytes passed through) as the UTF-8 bytes of a request's text
    field: tenant, task and filter fields are `bytes` on the wire (the server checks
    their UTF-8 and names the field). A str that cannot be UTF-8 (a lone surrogate, e.g.
    from os.fsdecode) is INVALID_ARGUMENT before any call."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        shown = label.encode("utf-8", "backslashreplace").decode("utf-8")
        raise invalid_argument(f"{shown}: {what} {value!r} is not valid UTF-8") from None
