"""Worker-side decode: fetch a task's compressed delta (StreamDelta, about 16x fewer
bytes than merged fp16 weights at ~1 bit per weight) and decode + merge it in place into
a model through the project's C++ codec (deltaserve._codec, a pybind11 module over
codec/): the bytes are identical to what StreamWeights sends from the same build.

To switch a worker from task A to task B without reading the base from disk again, a
LocalBase keeps the base in memory: LocalBase(path) maps the base safetensors file
(its pages stay in the page cache and count in the worker's RSS once read), and
LocalBase(state_dict) copies the given tensors into memory the LocalBase owns (base
bytes). Its XXH3-128 hash is computed once (it reads every byte). The model's own
parameters hold the merged task; apply_delta reads only the LocalBase and the container
and writes every task tensor of the model.
"""
import os
import warnings

import grpc
import numpy as np
import xxhash

from deltaserve import dtypes
from deltaserve.errors import DeltaserveError, data_loss, from_rpc_error
from deltaserve.torch_io import byte_view, check_plan, target_tensors
from deltaserve.v1 import delta_service_pb2 as pb

try:
    from deltaserve import _codec
except ImportError as e:  # built only where pybind11 is installed
    _codec = None
    _IMPORT_ERROR = e


def _need_codec():
    if _codec is None:
        raise DeltaserveError(grpc.StatusCode.UNIMPLEMENTED,
                              f"deltaserve._codec is not built ({_IMPORT_ERROR}); install "
                              "pybind11-dev and rebuild target deltaserve_python")
    return _codec


def _status(e):
    """DeltaserveError of a _codec.CodecError (code number, message)."""
    code, message = e.args
    return DeltaserveError(grpc.StatusCode[_CODE_NAMES.get(code, "UNKNOWN")], message)


_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def _tensor_bytes(t):
    """(safetensors dtype name, shape, buffer) of a torch tensor or numpy array."""
    proto, a = dtypes.raw_array(t)
    return dtypes.name(proto), list(a.shape), a.reshape(-1).view(np.uint8)


class LocalBase:
    """The base model held by a worker for local decode: a safetensors path (file, index
    or directory; mapped) or a {name: tensor} state dict (copied)."""

    def __init__(self, source):
        codec = _need_codec()
        try:
            if isinstance(source, (str, os.PathLike)):
                self._base = codec.Base.open(os.fspath(source))
            else:
                items = [(name,) + _tensor_bytes(t) for name, t in target_tensors(source).items()]
                self._base = codec.Base.from_buffers(items)
        except codec.CodecError as e:
            raise _status(e) from None
        self.num_tensors = self._base.num_tensors
        self.total_bytes = self._base.total_bytes

    @property
    def hash(self):
        """Hex XXH3-128 of the base (as GetBase and TaskInfo.base_hash report it)."""
        return self._base.hash()


def fetch_delta(client, task):
    """The task's container bytes as uploaded (StreamDelta), size and XXH3-64 verified,
    as a bytearray (filled in place: no copy after the last chunk)."""
    label, names = client._task_fields("StreamDelta", task)
    request = pb.StreamDeltaRequest(**names)
    hasher = xxhash.xxh3_64()
    buf = None
    received = total = want = 0
    try:
        for msg in client._stub.StreamDelta(request, timeout=client.stream_timeout,
                                            metadata=client._metadata):
            if buf is None:
                total, want = msg.total_bytes, msg.xxh3_64
                buf = bytearray(total)
            n = len(msg.data)
            if (msg.total_bytes, msg.xxh3_64) != (total, want) or msg.offset != received or \
                    n > total - received:
                raise data_loss(label, f"malformed stream at offset {msg.offset} after "
                                f"{received} of {total} bytes")
            buf[received:received + n] = memoryview(msg.data)
            hasher.update(msg.data)
            received += n
    except grpc.RpcError as e:
        raise from_rpc_error(e, label) from None
    if buf is None:
        raise data_loss(label, "empty stream")
    if received != total or hasher.intdigest() != want:
        raise data_loss(label, f"received {received} of {total} bytes, XXH3-64 "
                        f"{hasher.intdigest()} vs {want}")
    return buf


def apply_delta(target, container, base, strict=True, dtype=None, threads=None):
    """Decodes + merges every tensor of `container` (bytes of a delta container, e.g.
    from fetch_delta) against `base` (a LocalBase) into `target` (a torch.nn.Module or a
    dict of torch tensors / numpy arrays) in place, in `dtype` (default: each tensor's
    recorded dtype). Before anything is written: FAILED_PRECONDITION if the container
    was made against another base (both hashes quoted), INVALID_ARGUMENT for a missing
    name, a shape or dtype mismatch, or (strict) a model tensor the task lacks.
    threads: merge threads (default: the CPUs this process may use); tensors in CPU
    memory are merged in place, side by side and large ones split over them.
    Values that the cast to `dtype` would make infinite saturate to its largest finite
    value, as on the server; each tensor where that happened is named in a
    RuntimeWarning. Returns the number of tensors written."""
    codec = _need_codec()
    tensors = target_tensors(target)
    out_dtype = dtypes.to_out_proto(dtype)
    try:
        parsed = codec.Container(container)
        if parsed.base_hash != base.hash:
            raise DeltaserveError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"delta made against base {parsed.base_hash}, this worker's base is {base.hash}")
        records = parsed.records()
        plan = [(name, tuple(shape), dtypes.from_name(dt)) for name, dt, shape, _ in records]
        check_plan(tensors, plan, strict, False, out_dtype, "the delta")
        threads = threads or len(os.sched_getaffinity(0))
        out_name = dtypes.name(out_dtype) if out_dtype else None
        in_place, staged = [], []
        for (name, _, _), (_, _, _, index) in zip(plan, records):
            view = byte_view(name, tensors[name])
            (staged if view is None else in_place).append((index, view, name))
        # Tensors in CPU memory: merged straight into their storage, all of them in one
        # call over a pool of `threads` (small tensors side by side, large ones split),
        # without the GIL.
        saturated = codec.merge_all(base._base, parsed, [(i, v) for i, v, _ in in_place],
                                    out_name, threads)
        for index, _, name in staged:  # not on the CPU: merge into a buffer, then copy
            import torch
            dst = tensors[name]
            view = np.empty(dst.numel() * dst.element_size(), dtype=np.uint8)
            n = codec.merge(base._base, parsed, index, out_name, view, threads)
            if n:
                saturated.append((name, n))
            with torch.no_grad():
                dst.copy_(torch.from_numpy(view).view(dst.dtype).reshape(dst.shape))
        for name, n in saturated:
            warnings.warn(f"tensor '{name}': {n} values beyond the output dtype's range, "
                          "saturated to its largest finite value", RuntimeWarning, stacklevel=2)
    except codec.CodecError as e:
        raise _status(e) from None
    return len(records)
