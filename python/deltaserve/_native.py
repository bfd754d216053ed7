"""StreamWeights through the project's C++ client (deltaserve._pull, python/codec/
pull_module.cc): the fast path of Client.load_state_dict and Client.load_into.

The C++ client (client/client.h) checks the same framing and XXH3-64 checksums as
deltaserve/_stream.py, resumes a dropped stream at the byte where it stopped (within the
tensor it cut, else from the next tensor), and writes every tensor's bytes straight into their final memory with the GIL
released for the whole stream: a new state dict lives in one fresh buffer (64-byte
aligned views, freed when its last tensor goes); load_into writes into the
model's own storage. Errors are the same DeltaserveError (gRPC code + the server's
message, prefixed with the call and task) as on the grpcio path.

stream() serves stream_weights and pull_dir: the C++ client runs on a thread of its own
and hands over each tensor, in a fresh buffer of its own, as soon as it is verified.

The grpcio path (deltaserve/_stream.py) is used instead when the module was not built
(no pybind11), when the Client was made with native=False or DELTASERVE_NATIVE=0 is in
the environment, and for load_into a model with tensors off the CPU.
"""
import glob
import importlib
import os
import queue
import sys
import threading
import time

import grpc

from deltaserve._stream import StreamStats
from deltaserve.errors import DeltaserveError, with_hint


def native_import(name):
    """(module deltaserve.<name>, None), or (None, why it is missing: one clean sentence
    for an error message) for the C++ modules _codec and _pull. importlib, not `from
    deltaserve import`: during the package's own import that would say "partially
    initialized module ... circular import" instead of what is missing."""
    try:
        return importlib.import_module(f"deltaserve.{name}"), None
    except ImportError as e:
        here = os.path.dirname(os.path.abspath(__file__))
        found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(here, name + ".*so")))
        python = f"Python {sys.version_info.major}.{sys.version_info.minor} ({sys.executable})"
        if found:
            why = (f"cannot be loaded by this {python}: {here} holds {', '.join(found)}, built "
                   f"for the interpreter the build found (cmake -DDELTASERVE_PYTHON=..., "
                   f"default /usr/bin/python3); run that one, or rebuild for this one "
                   f"({type(e).__name__}: {e})")
        else:
            why = (f"is not built in {here}: the build makes it (target deltaserve_python) "
                   "when pybind11 is found (Debian pybind11-dev), for the interpreter it "
                   "found (-DDELTASERVE_PYTHON, default /usr/bin/python3)")
        return None, why


# Built without pybind11: the grpcio path serves every call.
_pull, _PULL_MISSING = native_import("_pull")

_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def available():
    return _pull is not None


def _puller(client, tenant):
    """The client's C++ DeltaClient (one channel of its own), made on first use;
    `tenant`: the client's tenant as UTF-8 bytes."""
    if client._puller is None:
        client._puller = _pull.Puller(client.server, client._token, tenant, client._tls,
                                      client._ca, client.timeout, client.keepalive,
                                      client.keepalive_timeout)
    return client._puller


def load(client, task, include, include_regex, dtype, targets=None, progress=None,
         chunk_bytes=0, each=False, cancel=None):
    """Streams `task` through the C++ client. targets None: returns (uint8 numpy buffer
    or None, [(name, proto dtype, shape, offset)]) of a fresh buffer; else writes into
    targets ({name: (address, nbytes, proto dtype, shape)}) and returns (None, []).
    progress: None or callable(name) after each verified tensor; with each=True
    callable(name, proto dtype, shape, uint8 array of the tensor's own) instead, and
    (None, []) is returned. cancel: None or a _pull.Cancel. Sets client.last_stream."""
    request = client._weights_request(task, include, include_regex, dtype, chunk_bytes)
    stats = client.last_stream = StreamStats()
    deadline = client.stream_timeout or 0
    puller = _puller(client, request.tenant)
    figures = {}

    def began(metadata):  # known before the first tensor (pull_dir writes shards early)
        stats.metadata = dict(metadata)

    try:
        buf, tensors, metadata = puller.load(
            request.task, request.out_dtype, list(request.include), request.include_regex,
            request.chunk_bytes, client.retries, client.reconnect_timeout, deadline, targets,
            progress, figures, each, cancel, began)
    except _pull.PullError as e:
        code, message = e.args
        raise with_hint(DeltaserveError(grpc.StatusCode[_CODE_NAMES.get(code, "UNKNOWN")],
                                        message), client) from None
    finally:
        stats.tensors = figures.get("tensors", 0)
        stats.bytes = figures.get("bytes", 0)
        stats.seconds = figures.get("seconds", 0.0)
        stats.first_tensor_seconds = figures.get("first_tensor_seconds", 0.0)
        stats.resumes = figures.get("resumes", 0)
        stats.kept_bytes = figures.get("kept_bytes", 0)
        stats.add_saturated(figures.get("first_saturated_tensor", ""),
                            figures.get("saturated_values", 0), figures.get("saturated_tensors", 0))
    stats.metadata = dict(metadata)
    return buf, tensors


class _Stopped(Exception):
    """Raised in the pull's thread when the consumer of stream() went away."""


def stream(client, task, include, include_regex, dtype, chunk_bytes=0):
    """Yields (name, proto dtype, shape, uint8 numpy array owning the tensor's bytes) for
    every tensor of `task` in stream order, each as soon as it is verified. The pull runs
    on a thread of its own (the C++ client, GIL released) at most one tensor ahead of
    the consumer: memory is the tensors the consumer keeps plus two. Closing the
    generator early stops the pull (Cancel: after the message being read). Errors are
    raised by the generator; client.last_stream as for load(). client.stream_timeout
    bounds the whole iteration, as on the grpcio path: a consumer that holds the stream
    past it gets DEADLINE_EXCEEDED, even for tensors that arrived in time."""
    deadline = None if client.stream_timeout is None else (
        time.monotonic() + client.stream_timeout)
    handoff = queue.Queue(maxsize=1)
    stop = threading.Event()
    cancel = _pull.Cancel()

    def put(item):
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def on_tensor(name, proto_dtype, shape, array):
        if not put(("tensor", (name, proto_dtype, shape, array))):
            raise _Stopped()

    def run():
        try:
            load(client, task, include, include_regex, dtype, progress=on_tensor,
                 chunk_bytes=chunk_bytes, each=True, cancel=cancel)
            put(("end", None))
        except BaseException as e:  # noqa: B036 - handed to the consumer, who raises it
            put(("error", e))

    thread = threading.Thread(target=run, name="deltaserve-stream", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            if deadline is not None and time.monotonic() > deadline:
                raise DeltaserveError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{client._label('StreamWeights', task)}: deadline of "
                    f"{client.stream_timeout} s exceeded")
            yield value
    finally:
        stop.set()
        cancel.set()
        # Gone within a message unless the server is silent; then it ends on its own.
        thread.join(timeout=1.0)
