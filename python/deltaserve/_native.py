"""StreamWeights through the project's C++ client (deltaserve._pull, python/codec/
pull_module.cc): the fast path of Client.load_state_dict and Client.load_into.

The C++ client (client/client.h) checks the same framing and XXH3-64 checksums as
deltaserve/_stream.py, resumes a dropped stream at the byte where it stopped (within the
tensor it cut, else from the next tensor), and writes every tensor's bytes straight into their final memory with the GIL
released for the whole stream: a new state dict lives in one fresh buffer (64-byte
aligned views, freed when its last tensor goes); load_into writes into the
model's own storage. Errors are the same DeltaserveError (gRPC code + the server's
message, prefixed with the call and task) as on the grpcio path.

The grpcio path (deltaserve/_stream.py) is used instead when the module was not built
(no pybind11), when the Client was made with native=False or DELTASERVE_NATIVE=0 is in
the environment, and for what this path does not do: stream_weights (a generator of
separately owned arrays), pull_dir, and load_into a model with tensors off the CPU.
"""
import grpc

from deltaserve._stream import StreamStats
from deltaserve.errors import DeltaserveError

try:
    from deltaserve import _pull
except ImportError:  # built without pybind11: the grpcio path serves every call
    _pull = None

_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def available():
    return _pull is not None


def _puller(client, tenant):
    """The client's C++ DeltaClient (one channel of its own), made on first use;
    `tenant`: the client's tenant as UTF-8 bytes."""
    if client._puller is None:
        client._puller = _pull.Puller(client.server, client._token, tenant, client._tls,
                                      client._ca, client.timeout)
    return client._puller


def load(client, task, include, include_regex, dtype, targets=None, progress=None,
         chunk_bytes=0):
    """Streams `task` through the C++ client. targets None: returns (uint8 numpy buffer
    or None, [(name, proto dtype, shape, offset)]) of a fresh buffer; else writes into
    targets ({name: (address, nbytes, proto dtype, shape)}) and returns (None, []).
    progress: None or callable(name) after each verified tensor. Sets
    client.last_stream."""
    request = client._weights_request(task, include, include_regex, dtype, chunk_bytes)
    stats = client.last_stream = StreamStats()
    deadline = client.stream_timeout or 0
    puller = _puller(client, request.tenant)
    figures = {}
    try:
        buf, tensors, metadata = puller.load(
            request.task, request.out_dtype, list(request.include), request.include_regex,
            request.chunk_bytes, client.retries, client.reconnect_timeout, deadline, targets,
            progress, figures)
    except _pull.PullError as e:
        code, message = e.args
        raise DeltaserveError(grpc.StatusCode[_CODE_NAMES.get(code, "UNKNOWN")],
                              message) from None
    finally:
        stats.tensors = figures.get("tensors", 0)
        stats.bytes = figures.get("bytes", 0)
        stats.seconds = figures.get("seconds", 0.0)
        stats.first_tensor_seconds = figures.get("first_tensor_seconds", 0.0)
        stats.resumes = figures.get("resumes", 0)
        stats.kept_bytes = figures.get("kept_bytes", 0)
    stats.metadata = dict(metadata)
    return buf, tensors
