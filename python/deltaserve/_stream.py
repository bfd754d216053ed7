"""StreamWeights reader: framing and checksum checks, and resume after a dropped
connection. Mirrors the C++ client's WeightsStreamChecker (client/client_pull.cc).

A stream is `begin`, then per tensor a `header` and `chunk`s carrying exactly
header.byte_length bytes at increasing offsets, then `end` (proto/deltaserve/v1/
delta_service.proto). Every tensor's bytes are hashed with XXH3-64 (seed 0) as they
arrive and compared with the tensor's checksum before the tensor is handed on.

The request sets checksum_after_data: a tensor the server is still decoding (a cold
task) then starts streaming at once, its header has checksum_follows and no checksum,
and its last chunk carries tensor_xxh3_64. Other tensors keep the checksum in the header.
"""
import time

import grpc
import xxhash
from google.protobuf.message import DecodeError

from deltaserve import dtypes
from deltaserve.errors import DeltaserveError, counted, data_loss, from_rpc_error, with_hint
from deltaserve.v1 import delta_service_pb2 as pb


class StreamStats:
    """Figures of the last stream: tensors and data bytes received and verified, wall
    seconds, seconds to the first tensor header, resumes after dropped connections."""

    def __init__(self):
        self.tensors = 0
        self.bytes = 0
        self.seconds = 0.0
        self.first_tensor_seconds = 0.0
        self.resumes = 0
        # Bytes of tensors a dropped stream cut midway that the resumed stream did not
        # fetch again (it started at the next byte: resume_from_offset).
        self.kept_bytes = 0
        self.metadata = {}  # StreamBegin.safetensors_metadata
        # load_into only, as torch's load_state_dict reports them: the model's tensors
        # that got nothing (model order), and the task's tensors the model lacks, skipped
        # (strict=False; task order).
        self.missing_keys = []
        self.unexpected_keys = []
        # Values the server's cast to the requested dtype saturated to its largest finite
        # value (F16/BF16 only: TensorHeader.saturated_values), the tensors with any, and
        # the first of them ("" if none). deltactl pull warns of them; so should a caller.
        self.saturated_values = 0
        self.saturated_tensors = 0
        self.first_saturated_tensor = ""

    def add_saturated(self, name, values, tensors=1):
        if values:
            if not self.saturated_tensors:
                self.first_saturated_tensor = name
            self.saturated_values += values
            self.saturated_tensors += tensors

    def __repr__(self):
        return (f"StreamStats(tensors={self.tensors}, bytes={self.bytes}, "
                f"seconds={self.seconds:.3f}, resumes={self.resumes}, "
                f"kept_bytes={self.kept_bytes}"
                + (f", saturated_values={self.saturated_values}" if self.saturated_values else "")
                + f", missing_keys={_short(self.missing_keys)}, "
                f"unexpected_keys={_short(self.unexpected_keys)})")


def _short(names, shown=5):
    """repr of a list of names, the first `shown` of a longer one and how many in all."""
    if len(names) <= shown:
        return repr(names)
    return repr(names[:shown])[:-1] + f", ... {len(names)} in all]"


_METHOD = "/deltaserve.v1.DeltaService/StreamWeights"


def _varint(b, pos):
    """(value, next position) of the protobuf varint at b[pos]; IndexError/ValueError
    when truncated or longer than 64 bits."""
    result = shift = 0
    while True:
        byte = b[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def chunk_view(raw):
    """(offset, memoryview of the data) when `raw`, a serialized StreamWeightsResponse,
    holds a `chunk` (field 3) whose only fields are data (1) and offset (2); else None.
    Chunks carry almost every byte of a stream: reading them here, without protobuf,
    saves one copy of the data and the parse. Anything else (other messages, fields
    added later, malformed bytes) returns None and goes through protobuf."""
    try:
        if not raw or raw[0] != 0x1A:
            return None
        n, pos = _varint(raw, 1)
        if pos + n != len(raw):
            return None
        begin = end = pos
        offset = 0
        while pos < len(raw):
            tag = raw[pos]
            if tag == 0x0A:
                size, pos = _varint(raw, pos + 1)
                begin, end = pos, pos + size
                pos = end
            elif tag == 0x10:
                offset, pos = _varint(raw, pos + 1)
            else:
                return None
        if pos != len(raw):
            return None
        return offset, memoryview(raw)[begin:end]
    except (IndexError, ValueError):
        return None


def _same_task(a, b):
    """True if TaskInfo `b` is the version of the task `a` described: the same
    container_xxh3_64 (the container's content hash; created_unix has whole seconds and
    same-size overwrites are common), or for tasks stored without one (older servers)
    the same created_unix, base hash and size; set on one side only = another version.
    As the C++ client's CheckSameTaskVersion (client/internal/weights_stream.cc)."""
    if (a.tenant, a.name, a.base_hash) != (b.tenant, b.name, b.base_hash):
        return False
    has_a, has_b = a.HasField("container_xxh3_64"), b.HasField("container_xxh3_64")
    if has_a or has_b:
        return has_a and has_b and a.container_xxh3_64 == b.container_xxh3_64
    return (a.created_unix, a.container_bytes) == (b.created_unix, b.container_bytes)


def verified_tensors(client, label, request, alloc, stats):
    """Yields (header, buffer) for every tensor of StreamWeights `request`, after its
    checksum matched. `alloc(header)` returns a writable, C-contiguous uint8 numpy array
    of header.byte_length bytes that receives the data (a fresh buffer, or the storage of
    the tensor being loaded in place); it may raise DeltaserveError to refuse a tensor.

    Resume: when the connection drops (UNAVAILABLE) the call is made again, at most
    client.retries times, each after waiting for the channel to be ready again: at the
    byte where the stream stopped when it cut a tensor midway (resume_from_index = that
    tensor, resume_from_offset = the bytes received: they stay in its buffer, and the
    whole tensor's checksum is checked at its end; stats.kept_bytes counts them), else
    from the tensor after the last verified one. The task must still be the same commit
    (_same_task: the container's content hash), else ABORTED. The whole stream, retries included,
    must finish within client.stream_timeout seconds (None: no deadline). As the C++
    client's PullWeightsToSink (client/client_pull_sink.cc)."""
    start = time.monotonic()
    deadline = None if client.stream_timeout is None else start + client.stream_timeout
    first_task = None
    next_index = None  # container index to resume from
    cut = None  # (header, buffer, hasher, bytes received) of a tensor cut midway
    attempts = 0
    while True:
        req = pb.StreamWeightsRequest()
        req.CopyFrom(request)
        if next_index is not None:
            req.resume_from_index = next_index
        if cut is not None:
            req.resume_from_index = cut[0].index
            req.resume_from_offset = cut[3]
        req.checksum_after_data = True
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            raise DeltaserveError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"{label}: deadline of {client.stream_timeout} s exceeded")
        raw_call = client._channel.unary_stream(
            _METHOD, request_serializer=pb.StreamWeightsRequest.SerializeToString,
            response_deserializer=None)  # raw bytes: chunks are read by chunk_view
        call = raw_call(req, timeout=timeout,
                        metadata=client._metadata_for({"tenant": req.tenant, "task": req.task}))
        began = ended = False
        header = buf = hasher = expected = None
        saturated = 0
        received = 0
        got_tensors = got_bytes = 0  # of this stream: tensors ended, chunk bytes
        begin = None
        try:
            for raw in call:
                fast = chunk_view(raw)
                if fast is not None:
                    kind = "chunk"
                    offset, data = fast
                else:
                    try:
                        msg = pb.StreamWeightsResponse.FromString(raw)
                    except DecodeError as e:
                        raise data_loss(label, f"malformed message: {e}") from None
                    kind = msg.WhichOneof("msg")
                    if kind == "chunk":
                        offset, data = msg.chunk.offset, msg.chunk.data
                        if msg.chunk.HasField("tensor_xxh3_64"):
                            # Only on the last chunk of a tensor whose header said so.
                            if header is None or not header.checksum_follows or (
                                    offset + len(data) != header.byte_length):
                                where = "outside a tensor" if header is None else (
                                    f"in tensor '{header.name}'")
                                raise data_loss(label, "malformed stream: a chunk checksum "
                                                f"{where} that is not its announced last chunk")
                            expected = msg.chunk.tensor_xxh3_64
                            saturated = msg.chunk.tensor_saturated_values
                        elif msg.chunk.HasField("tensor_saturated_values"):
                            raise data_loss(label, "malformed stream: tensor_saturated_values "
                                            "without the tensor checksum")
                if kind == "chunk":
                    n = len(data)
                    if header is None:
                        raise data_loss(label, "malformed stream: chunk outside a tensor")
                    if offset != received or n > header.byte_length - received:
                        raise data_loss(label, f"malformed stream: tensor '{header.name}': chunk at "
                                        f"offset {offset} of {counted(n, 'byte')} after "
                                        f"{received} of {counted(header.byte_length, 'byte')}")
                    buf[received:received + n] = memoryview(data)
                    hasher.update(data)
                    received += n
                    got_bytes += n
                elif kind == "header":
                    if not began or header is not None or ended:
                        raise data_loss(label, "malformed stream: tensor header out of place")
                    header = msg.header
                    if not dtypes.is_known(header.dtype):
                        raise data_loss(label, f"malformed stream: tensor '{header.name}': "
                                        f"unsupported dtype {header.dtype}")
                    elements = 1
                    for d in header.shape:
                        if d < 0:
                            elements = -1
                            break
                        elements *= d
                    if elements * dtypes.itemsize(header.dtype) != header.byte_length:
                        raise data_loss(label, f"malformed stream: tensor '{header.name}' "
                                        f"announces {header.byte_length} bytes for shape "
                                        f"{list(header.shape)}")
                    if stats.tensors == 0 and stats.first_tensor_seconds == 0.0:
                        stats.first_tensor_seconds = time.monotonic() - start
                    if header.checksum_follows and header.byte_length == 0:
                        raise data_loss(label, f"malformed stream: empty tensor "
                                        f"'{header.name}' announces a checksum to follow")
                    if cut is not None:
                        # The tensor cut midway, from the byte where it stopped; its
                        # checksum is in this header (never checksum_follows here).
                        was = cut[0]
                        if (header.index, header.name, header.dtype, header.byte_length,
                                header.checksum_follows) != (was.index, was.name, was.dtype,
                                                             was.byte_length, False):
                            raise data_loss(label, f"malformed stream: resumed tensor "
                                            f"'{was.name}' (index {was.index}) came back as "
                                            f"'{header.name}' (index {header.index}, "
                                            f"{header.byte_length} bytes)")
                        _, buf, hasher, received = cut
                        cut = None
                        stats.kept_bytes += received
                        expected = header.xxh3_64
                        saturated = header.saturated_values
                    else:
                        buf = alloc(header)
                        hasher = xxhash.xxh3_64()
                        received = 0
                        expected = None if header.checksum_follows else header.xxh3_64
                        saturated = header.saturated_values
                elif kind == "begin":
                    if began:
                        raise data_loss(label, "malformed stream: second begin message")
                    began = True
                    begin = msg.begin
                    stats.metadata = dict(begin.safetensors_metadata)
                    if first_task is None:
                        first_task = begin.task
                    elif not _same_task(first_task, begin.task):
                        raise DeltaserveError(
                            grpc.StatusCode.ABORTED,
                            f"{label}: the task was replaced while the stream was resumed "
                            f"(content {first_task.container_xxh3_64:016x} committed at "
                            f"{first_task.created_unix}, now {begin.task.container_xxh3_64:016x} "
                            f"committed at {begin.task.created_unix})")
                    continue
                elif kind == "end":
                    if not began or header is not None or ended:
                        raise data_loss(label, "malformed stream: end message out of place")
                    end = msg.end
                    if (end.num_tensors, end.total_bytes) != (got_tensors, got_bytes) or (
                            begin.num_tensors, begin.total_bytes) != (got_tensors, got_bytes):
                        raise data_loss(label, "malformed stream: received "
                                        f"{counted(got_tensors, 'tensor')} / "
                                        f"{counted(got_bytes, 'byte')}; begin announced "
                                        f"{begin.num_tensors} / {begin.total_bytes}, end says "
                                        f"{end.num_tensors} / {end.total_bytes}")
                    ended = True
                    continue
                else:
                    raise data_loss(label, "malformed stream: empty message")
                # After a header or a chunk: is the tensor complete?
                if received == header.byte_length:
                    if expected is None:
                        raise data_loss(label, f"malformed stream: tensor '{header.name}' "
                                        "ended without the checksum its header announced")
                    got = hasher.intdigest()
                    if got != expected:
                        source = "last chunk" if header.checksum_follows else "header"
                        raise data_loss(label, f"tensor '{header.name}' checksum mismatch "
                                        f"(XXH3-64 {got}, {source} says {expected})")
                    elements = received // dtypes.itemsize(header.dtype)
                    if saturated > elements:
                        raise data_loss(label, f"malformed stream: tensor '{header.name}' says "
                                        f"{saturated} values saturated of {elements}")
                    done, done_buf = header, buf
                    header = buf = hasher = expected = None
                    got_tensors += 1
                    stats.tensors += 1
                    stats.bytes += received
                    stats.add_saturated(done.name, saturated)
                    next_index = done.index + 1
                    yield done, done_buf
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or attempts >= client.retries:
                raise from_rpc_error(e, label, client) from None
            if first_task is None:
                # No stream has begun. The call may have gone out on a connection that
                # died since (a restarted server, the channel still backing off): one that
                # connects again soon is tried again (not a resume); otherwise the server
                # is unreachable: say so now, as the unary calls do. As the C++ client
                # (client/client_pull_sink.cc).
                attempts += 1
                if not _channel_ready(client, min(client.reconnect_timeout, _FIRST_CONNECT_S),
                                      deadline):
                    raise with_hint(DeltaserveError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"{label}: cannot reach the server at {client.server} "
                        f"({e.details()})"), client) from None
                continue
            attempts += 1
            stats.resumes += 1
            if header is not None:
                # Cut midway: resume at the next byte (else the tensor comes again whole).
                cut = (header, buf, hasher, received) if received > 0 else None
            attempts = _wait_for_channel(client, label, deadline, e, attempts)
            if next_index is None:
                next_index = 0  # dropped before the first tensor: start again
            continue
        finally:
            call.cancel()  # no-op after a finished call; stops the server's work otherwise
        if not ended:
            raise data_loss(label, "stream ended without an end message")
        stats.seconds = time.monotonic() - start
        return


# How long a call that failed before its stream began waits for the channel to connect
# again before the server counts as unreachable (at most reconnect_timeout).
_FIRST_CONNECT_S = 2.0


def _channel_ready(client, wait, deadline):
    """Whether the channel is ready within `wait` seconds (not past `deadline`)."""
    if deadline is not None:
        wait = min(wait, max(0.0, deadline - time.monotonic()))
    try:
        grpc.channel_ready_future(client._channel).result(timeout=wait)
        return True
    except grpc.FutureTimeoutError:
        return False


def _wait_for_channel(client, label, deadline, error, attempts):
    """Blocks until the channel is ready again (the server is back) after a drop;
    `attempts`: the retries used so far, this resume included. Each retry waits up to
    client.reconnect_timeout seconds; a wait that ends without the server uses the next
    retry, so a server may stay away up to retries x reconnect_timeout seconds in all
    (30 s by default), never past `deadline` (stream_timeout). Returns the retries used;
    UNAVAILABLE saying how long it waited and the retries used otherwise. As the C++
    client (client/client_pull_sink.cc)."""
    start = time.monotonic()
    while True:
        wait = client.reconnect_timeout
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        if _channel_ready(client, wait, None):
            return attempts
        past_deadline = deadline is not None and time.monotonic() >= deadline
        if attempts >= client.retries or past_deadline:
            cut = f"; stream_timeout of {client.stream_timeout} s reached" if past_deadline else ""
            raise DeltaserveError(
                grpc.StatusCode.UNAVAILABLE,
                f"{label}: connection dropped ({error.details()}) and the server did not come "
                f"back within {time.monotonic() - start:.1f} s ({attempts} of {client.retries} "
                f"retries used, each waiting up to {client.reconnect_timeout:.1f} s{cut})"
            ) from None
        attempts += 1
