"""DeltaserveError: the one exception type of the deltaserve package.

Every failure a Client method reports is a DeltaserveError carrying a gRPC status code
(grpc.StatusCode) and a message. Server errors keep the server's code and message,
prefixed with the call and task (e.g. "GetTask 'chat': task not found"), the way the C++
client (client/internal/status.h) does. Checks made in the worker use the code that
names the fault: DATA_LOSS for a checksum mismatch or a malformed stream,
INVALID_ARGUMENT for a model whose names, shapes or dtypes do not match the task or a
bad argument, FAILED_PRECONDITION for a delta made against another base,
DEADLINE_EXCEEDED when the caller's deadline passed, UNAVAILABLE when the server cannot
be reached (also after the bounded resume attempts of a dropped stream).
"""
import errno

import grpc


class DeltaserveError(Exception):
    """A failed deltaserve operation: `code` (grpc.StatusCode) and `message` (str)."""

    def __init__(self, code, message):
        self.code = code
        self.message = message
        super().__init__(f"{code.name}: {message}")


def from_rpc_error(error, label):
    """DeltaserveError for a grpc.RpcError raised by call `label` (e.g. "GetBase")."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return DeltaserveError(code or grpc.StatusCode.UNKNOWN, f"{label}: {details}")


def data_loss(label, what):
    return DeltaserveError(grpc.StatusCode.DATA_LOSS, f"{label}: {what}")


def invalid_argument(message):
    return DeltaserveError(grpc.StatusCode.INVALID_ARGUMENT, message)


_OS_CODES = {errno.ENOENT: grpc.StatusCode.NOT_FOUND,
             errno.EACCES: grpc.StatusCode.PERMISSION_DENIED,
             errno.EPERM: grpc.StatusCode.PERMISSION_DENIED,
             errno.ENOSPC: grpc.StatusCode.RESOURCE_EXHAUSTED,
             errno.EDQUOT: grpc.StatusCode.RESOURCE_EXHAUSTED}


def from_os_error(error, message):
    """DeltaserveError for an OSError met on a local file: NOT_FOUND for a missing path,
    PERMISSION_DENIED, RESOURCE_EXHAUSTED for a full disk, INVALID_ARGUMENT otherwise (a
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
