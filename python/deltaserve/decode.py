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
import importlib
import os
import queue
import threading
import time
import warnings

import grpc
import numpy as np
import xxhash

from deltaserve import dtypes
from deltaserve.errors import DeltaserveError, data_loss, from_rpc_error
from deltaserve._native import native_import
from deltaserve._stream import _short
from deltaserve.torch_io import byte_view, check_plan, copy_staged, target_tensors, write_bytes
from deltaserve.v1 import delta_service_pb2 as pb

_codec, _IMPORT_ERROR = native_import("_codec")

# The end of the missing-tensor message: a delta has no include= filter.
_WHOLE = ("a delta is applied whole: load it into a model that has every tensor of the "
          "task, or use load_into(..., include=) over StreamWeights")


def _need_codec():
    if _codec is None:
        raise DeltaserveError(grpc.StatusCode.UNIMPLEMENTED,
                              f"deltaserve._codec (the C++ codec, for local decode) "
                              f"{_IMPORT_ERROR}")
    return _codec


class DeltaStats(int):
    """What apply_delta / load_delta_into did. An int, the number of tensors written
    (what they returned before, so `n == 12` still holds), that also carries the
    figures StreamStats has: tensors (the same number), bytes (container bytes
    received; apply_delta: its container's size), seconds, missing_keys (the model's
    tensors that got nothing) and unexpected_keys (tensors of the delta the model
    lacks, skipped: strict=False), as torch's load_state_dict reports them."""

    def __new__(cls, tensors, bytes_=0, seconds=0.0, missing_keys=(), unexpected_keys=()):
        self = super().__new__(cls, tensors)
        self.tensors = int(tensors)
        self.bytes = int(bytes_)
        self.seconds = float(seconds)
        self.missing_keys = list(missing_keys)
        self.unexpected_keys = list(unexpected_keys)
        return self

    def __repr__(self):
        return (f"DeltaStats(tensors={self.tensors}, bytes={self.bytes}, "
                f"seconds={self.seconds:.3f}, missing_keys={_short(self.missing_keys)}, "
                f"unexpected_keys={_short(self.unexpected_keys)})")


def _status(e):
    """DeltaserveError of a _codec.CodecError (code number, message)."""
    code, message = e.args
    return DeltaserveError(grpc.StatusCode[_CODE_NAMES.get(code, "UNKNOWN")], message)


_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def _tensor_bytes(name, t):
    """(safetensors dtype name, shape, buffer) of tensor `name`, a torch tensor or numpy
    array (dtypes.raw_array: INVALID_ARGUMENT for one without data, e.g. on meta)."""
    proto, a = dtypes.raw_array(t, name)
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
                items = [(name,) + _tensor_bytes(name, t)
                         for name, t in target_tensors(source).items()]
                self._base = codec.Base.from_buffers(items)
        except codec.CodecError as e:
            raise _status(e) from None
        self.num_tensors = self._base.num_tensors
        self.total_bytes = self._base.total_bytes

    @property
    def hash(self):
        """Hex XXH3-128 of the base (as GetBase and TaskInfo.base_hash report it)."""
        return self._base.hash()


# Container framing (codec/FORMAT.md, "Delta container"): header magic and fixed part,
# record magic + u64 length, 24-byte trailer.
_CONTAINER_MAGIC = b"DSDELTA\x1a"
_MIN_HEADER_BYTES = 48
_MAX_HEADER_BYTES = 16 << 20
_RECORD_MAGIC = b"DRec"
_TRAILER_BYTES = 24


def container_header(view):
    """(header length, 16 base-hash bytes, tensor count, metadata {bytes: bytes}) of the
    container whose first bytes are `view` (a uint8 memoryview), once its magic, version
    1, length and XXH3-64 header checksum hold (codec/FORMAT.md, "Header"); None when
    they do not or the header is not complete yet. The full checks are the C++ reader's
    (codec::ContainerReader::Parse)."""
    if len(view) < _MIN_HEADER_BYTES or bytes(view[:8]) != _CONTAINER_MAGIC:
        return None
    length = int.from_bytes(view[12:16], "little")
    if int.from_bytes(view[8:12], "little") != 1 or not (
            _MIN_HEADER_BYTES <= length <= min(_MAX_HEADER_BYTES, len(view))):
        return None
    if xxhash.xxh3_64_intdigest(view[:length - 8]) != int.from_bytes(view[length - 8:length],
                                                                      "little"):
        return None
    metadata, pos = {}, 40
    try:
        for _ in range(int.from_bytes(view[36:40], "little")):
            n = int.from_bytes(view[pos:pos + 4], "little")
            key = bytes(view[pos + 4:pos + 4 + n])
            pos += 4 + n
            n = int.from_bytes(view[pos:pos + 4], "little")
            metadata[key] = bytes(view[pos + 4:pos + 4 + n])
            pos += 4 + n
    except IndexError:
        return None
    if pos != length - 8:
        return None
    return length, bytes(view[16:32]), int.from_bytes(view[32:36], "little"), metadata


def fetch_delta(client, task):
    """The task's container bytes as uploaded (StreamDelta), size and XXH3-64 verified,
    as a bytearray (filled in place: no copy after the last chunk)."""
    return _receive_delta(client, task, client._label("StreamDelta", task))


def _receive_delta(client, task, label, on_data=None):
    """StreamDelta of `task` into a bytearray, size and XXH3-64 verified; after each
    message, on_data(memoryview of the bytearray, bytes received so far)."""
    _, names = client._task_fields("StreamDelta", task)
    hasher = xxhash.xxh3_64()
    buf = view = None
    received = total = want = 0
    try:
        for msg in client._stub.StreamDelta(pb.StreamDeltaRequest(**names),
                                            timeout=client.stream_timeout,
                                            metadata=client._metadata_for(names)):
            if buf is None:
                total, want = msg.total_bytes, msg.xxh3_64
                buf = bytearray(total)
                view = memoryview(buf)
            n = len(msg.data)
            if (msg.total_bytes, msg.xxh3_64) != (total, want) or msg.offset != received or \
                    n > total - received:
                raise data_loss(label, f"malformed stream at offset {msg.offset} after "
                                f"{received} of {total} bytes")
            view[received:received + n] = msg.data
            hasher.update(msg.data)
            received += n
            if on_data is not None:
                on_data(view, received)
    except grpc.RpcError as e:
        raise from_rpc_error(e, label, client) from None
    if buf is None:
        raise data_loss(label, "empty stream")
    if received != total or hasher.intdigest() != want:
        raise data_loss(label, f"received {received} of {total} bytes, XXH3-64 "
                        f"{hasher.intdigest()} vs {want}")
    return buf


def apply_delta(target, container, base, strict=True, dtype=None, threads=None, atomic=False):
    """Decodes + merges every tensor of `container` (bytes of a delta container, e.g.
    from fetch_delta) against `base` (a LocalBase) into `target` (a torch.nn.Module or a
    dict of torch tensors / numpy arrays) in place, in `dtype` (default: each tensor's
    recorded dtype). Before anything is written: FAILED_PRECONDITION if the container
    was made against another base (both hashes quoted), INVALID_ARGUMENT for a record
    that does not fit the base tensor it merges into (missing, another shape, an
    "unchanged" record in another dtype: codec/record_checks.h), for a missing
    name, a shape or dtype mismatch, a tensor that cannot be loaded into (on the meta
    device, sparse, quantized...: deltaserve.torch_io.check_loadable), or (strict) a
    model tensor the task lacks. strict=False: as torch's load_state_dict(strict=False),
    records the model lacks are skipped and names on one side only reported in the
    result's missing_keys / unexpected_keys (at least one must match).
    atomic=True: every tensor is merged into a new buffer first and copied into target
    only once all merged (target all old or all new after an error; costs memory for a
    copy of the model's task tensors); default: merged in place, and a codec error on a
    late record leaves earlier tensors new. threads: merge threads (default: the CPUs this process may use); tensors in CPU
    memory are merged in place, side by side and large ones split over them.
    Values that the cast to `dtype` would make infinite saturate to its largest finite
    value, as on the server; each tensor where that happened is named in a
    RuntimeWarning. Returns a DeltaStats (an int: the number of tensors written)."""
    start = time.monotonic()
    codec = _need_codec()
    tensors = target_tensors(target)
    out_dtype = dtypes.to_out_proto(dtype)
    try:
        parsed = codec.Container(container)
        if parsed.base_hash != base.hash:
            raise DeltaserveError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"delta made against base {parsed.base_hash}, this worker's base is {base.hash}")
        # Every record against the base tensor it merges into (dtype, shape): a record
        # that does not fit would otherwise fail midway, or (before the codec checked)
        # leave its target bytes unwritten.
        parsed.check_base(base._base)
        records = parsed.records()
        summaries = [(name, tuple(shape), dtypes.from_name(dt)) for name, dt, shape, _ in records]
        plan = check_plan(tensors, summaries, strict, False, out_dtype, "the delta", hint=_WHOLE)
        threads = threads or len(os.sched_getaffinity(0))
        out_name = dtypes.name(out_dtype) if out_dtype else None
        in_place, staged = [], []
        for name, _, _, index in records:
            if name not in tensors:  # strict=False: skipped (plan.unexpected_keys)
                continue
            view = byte_view(name, tensors[name])
            if view is None or atomic:  # merged into a buffer, copied at the end
                dst = tensors[name]
                nbytes = dst.nbytes if isinstance(dst, np.ndarray) else (
                    dst.numel() * dst.element_size())
                staged.append((index, np.empty(nbytes, dtype=np.uint8), name))
            else:
                in_place.append((index, view, name))
        # One call over a pool of `threads` (small tensors side by side, large ones
        # split), without the GIL: tensors in CPU memory straight into their storage,
        # the others (and every one when atomic) into buffers copied in below.
        merged = in_place + staged
        saturated = codec.merge_all(base._base, parsed, [(i, v) for i, v, _ in merged],
                                    out_name, threads)
        for _, buf, name in staged:
            write_bytes(name, tensors[name], buf)
        for name, n in saturated:
            warnings.warn(f"tensor '{name}': {n} values beyond the output dtype's range, "
                          "saturated to its largest finite value", RuntimeWarning, stacklevel=2)
    except codec.CodecError as e:
        raise _status(e) from None
    return DeltaStats(len(plan.summaries), len(container), time.monotonic() - start,
                      plan.missing_keys, plan.unexpected_keys)


def load_delta_into(client, target, task, base, strict=True, dtype=None, threads=None,
                    atomic=False):
    """Client.fetch_delta + apply_delta overlapped: each record of the container is
    decoded + merged into `target` (in place, as apply_delta) while the next ones are
    still arriving, so the transfer hides behind the decode. Before any byte is
    streamed: FAILED_PRECONDITION if the task was made against another base than `base`
    (TaskInfo.base_hash), INVALID_ARGUMENT for a missing name, a shape or dtype mismatch
    or (strict) a model tensor the task lacks; target untouched. During the stream: the
    header's base hash checked again, every record's checksum and framing (DATA_LOSS),
    and at the end the container's size, XXH3-64 and trailer (codec::ContainerReader);
    on such a late error target may hold a mix of old and new tensors, as with
    load_into. strict=False and atomic=True as for apply_delta (atomic: fetch_delta +
    apply_delta(atomic=True), the container held whole). Tensors not in CPU memory:
    fetch_delta + apply_delta instead. Returns a DeltaStats (an int: the number of
    tensors written; bytes: the container's)."""
    start = time.monotonic()
    codec = _need_codec()
    tensors = target_tensors(target)
    out_dtype = dtypes.to_out_proto(dtype)
    info = client.task_info(task, tensors=True)
    what = f"task '{task}'"
    label = client._label("StreamDelta", task)
    if info.base_hash != base.hash:
        raise DeltaserveError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{label}: delta made against base {info.base_hash}, this worker's base is {base.hash}")
    summaries = [(t.name, tuple(t.shape), t.dtype) for t in info.tensors]
    plan = check_plan(tensors, summaries, strict, False, out_dtype, what, hint=_WHOLE)
    views = {}  # container index -> (name, uint8 view; None: a record skipped)
    for t in info.tensors:
        view = byte_view(t.name, tensors[t.name]) if t.name in tensors else None
        views[t.index] = (t.name, view)
        if t.name in tensors and (view is None or atomic):  # no in-place streaming
            stats = apply_delta(target, fetch_delta(client, task), base, strict, dtype, threads,
                                atomic)
            return DeltaStats(stats.tensors, stats.bytes, time.monotonic() - start,
                              stats.missing_keys, stats.unexpected_keys)
    threads = threads or len(os.sched_getaffinity(0))
    out_name = dtypes.name(out_dtype) if out_dtype else None
    merger = _RecordMerger(codec, base, out_name, threads, label)
    scanner = _RecordScanner(label, views, merger)
    try:
        buf = _receive_delta(client, task, label, scanner.feed)
        if scanner.index != scanner.count or merger.metadata is None:
            raise data_loss(label, f"{scanner.index} of {scanner.count} records received")
    except BaseException:
        merger.finish(raise_error=False)
        raise
    saturated = merger.finish()
    try:
        codec.Container(buf)  # framing and trailer of the whole container
    except codec.CodecError as e:
        raise _status(e) from None
    for name, n in saturated:
        warnings.warn(f"tensor '{name}': {n} values beyond the output dtype's range, "
                      "saturated to its largest finite value", RuntimeWarning, stacklevel=2)
    return DeltaStats(len(plan.summaries), len(buf), time.monotonic() - start,
                      plan.missing_keys, plan.unexpected_keys)


class _RecordMerger:
    """A thread that merges batches of received records (codec.merge_records, without
    the GIL, over `threads` threads) while the caller receives the next ones."""

    def __init__(self, codec, base, out_name, threads, label):
        self._codec, self._base, self._out, self._threads = codec, base, out_name, threads
        self._label = label
        self._queue = queue.Queue()
        self.base_hash = base.hash
        self.metadata = None  # the container header's, set before the first record
        self.error = None
        self.saturated = []
        self._thread = threading.Thread(target=self._run, name="deltaserve-merge", daemon=True)
        self._thread.start()

    def put(self, item):
        """item: (record memoryview, name, out buffer)."""
        if self.error is not None:
            raise self.error
        self._queue.put(item)

    def _run(self):
        done = False
        while not done:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            done = batch[-1] is None
            batch = [b for b in batch if b is not None]
            if not batch or self.error is not None:
                continue
            try:
                self.saturated += self._codec.merge_records(
                    self._base._base, self.metadata, batch, self._out, self._threads)
            except self._codec.CodecError as e:
                error = _status(e)
                self.error = DeltaserveError(error.code, f"{self._label}: {error.message}")

    def finish(self, raise_error=True):
        """Waits for every queued record; raises the first merge error."""
        self._queue.put(None)
        self._thread.join()
        if self.error is not None and raise_error:
            raise self.error
        return self.saturated


class _RecordScanner:
    """Finds the records of a container as its bytes arrive (_receive_delta's on_data)
    and hands each complete one to `merger` with its output view (views: container
    index -> (name, uint8 view))."""

    def __init__(self, label, views, merger):
        self.label, self.views, self.merger = label, views, merger
        self.next_record = self.count = self.index = 0  # next record's offset, records, its index

    def feed(self, view, received):
        label, merger = self.label, self.merger
        if merger.metadata is None:
            header = container_header(view[:received])
            if header is None:
                if received >= min(len(view), _MAX_HEADER_BYTES):
                    raise data_loss(label, "the container header does not hold")
                return
            self.next_record, base_hash, self.count, metadata = header
            if base_hash.hex() != merger.base_hash:
                raise data_loss(label, f"container base hash {base_hash.hex()} differs from "
                                "the task's")
            if self.count != len(self.views):
                raise data_loss(label, f"container of {self.count} records, the task lists "
                                f"{len(self.views)}")
            merger.metadata = metadata
        while self.index < self.count and self.next_record + 12 <= received:
            at = self.next_record
            length = int.from_bytes(view[at + 4:at + 12], "little")
            if bytes(view[at:at + 4]) != _RECORD_MAGIC or length < 12 or \
                    length > len(view) - _TRAILER_BYTES - at:
                raise data_loss(label, f"bad record framing at offset {at}")
            if at + length > received:
                break
            name, out = self.views[self.index]
            if out is not None:  # None: a record the model lacks (strict=False)
                merger.put((view[at:at + length], name, out))
            self.next_record += length
            self.index += 1
