"""python_wire: deltaserve._stream.chunk_view reads a serialized StreamWeightsResponse
chunk exactly as protobuf does (data and offset, default and multi-byte varint values),
and declines (None) every other message, unknown fields and malformed bytes, which then
go through protobuf. _same_task (the resume check) tells two same-size commits within
one second apart by their container content hash. No daemon needed."""
import live_daemon as ld  # noqa: F401 (skips when the package is not importable)
from live_daemon import d

from deltaserve._stream import _same_task, chunk_view
from deltaserve.v1 import delta_service_pb2 as pb


def chunk(data, offset):
    return pb.StreamWeightsResponse(chunk=pb.TensorChunk(data=data, offset=offset)).SerializeToString()


for data, offset in ((b"", 0), (b"x", 0), (b"abc", 1), (bytes(range(256)) * 700, 127),
                     (b"\x00" * 200, 128), (b"y" * 5, (1 << 64) - 1), (b"z" * (1 << 20), 3 << 30)):
    raw = chunk(data, offset)
    got = chunk_view(raw)
    d.check(got is not None, f"chunk of {len(data)} bytes at {offset}: declined")
    d.check(got[0] == offset and bytes(got[1]) == data,
            f"chunk of {len(data)} bytes at {offset}: read ({got[0]}, {len(got[1])} bytes)")

others = [pb.StreamWeightsResponse(begin=pb.StreamBegin(num_tensors=2)).SerializeToString(),
          pb.StreamWeightsResponse(header=pb.TensorHeader(name="w")).SerializeToString(),
          pb.StreamWeightsResponse(end=pb.StreamEnd(num_tensors=1)).SerializeToString(),
          b"", chunk(b"abc", 5)[:-1], chunk(b"abc", 5) + b"\x08\x01",
          b"\x1a\x05\x0a\x03abc\x18\x01"]  # a field 3 inside the chunk (unknown today)
for raw in others:
    d.check(chunk_view(raw) is None, f"{raw[:16]!r}: must be left to protobuf")
d.log("PASS: chunk_view == protobuf on chunks; everything else goes to protobuf")

# The opt-in checksum_after_data (a cold tensor streams before its checksum is known):
# verified_tensors asks for it, takes the checksum from the last chunk when the header
# says checksum_follows, and refuses a wrong, missing or misplaced chunk checksum.
import grpc  # noqa: E402
import numpy as np  # noqa: E402
import xxhash  # noqa: E402

from deltaserve._stream import StreamStats, verified_tensors  # noqa: E402
from deltaserve.client import Client  # noqa: E402
from deltaserve.errors import DeltaserveError  # noqa: E402

# StreamStats' repr shows missing_keys and unexpected_keys, empty too (new-user trial: they
# were left out when empty, so a load that matched every key did not say so).
_stats = StreamStats()
d.check(repr(_stats).endswith(", missing_keys=[], unexpected_keys=[])"), repr(_stats))
_stats.missing_keys = [f"m{i}" for i in range(7)]
d.check("missing_keys=['m0', 'm1', 'm2', 'm3', 'm4', ... 7 in all], unexpected_keys=[])"
        in repr(_stats), repr(_stats))


class _Call(list):
    def cancel(self):
        pass


class _FakeClient:
    """Enough of deltaserve.Client for verified_tensors: one canned stream per call."""
    stream_timeout = None
    retries = 0
    _metadata = ()
    _metadata_for = Client._metadata_for

    def __init__(self, messages):
        self.requests = []
        self.metadata = []
        outer = self

        class Channel:
            def unary_stream(self, method, request_serializer, response_deserializer):
                def call(req, timeout, metadata):
                    outer.requests.append(req)
                    outer.metadata.append(tuple(metadata))
                    return _Call(m.SerializeToString() for m in messages)
                return call
        self._channel = Channel()


payload = bytes(range(256)) * 3  # 768 bytes: a [384] F16 tensor
digest = xxhash.xxh3_64_intdigest(payload)


def stream(follows, last_checksum, header_checksum=0, extra_chunk_checksum=None):
    task = pb.TaskInfo(tenant="t", name="x")
    h = pb.TensorHeader(name="w", dtype=pb.DTYPE_F16, shape=[384], byte_length=768,
                        xxh3_64=header_checksum, index=0, checksum_follows=follows)
    first = pb.TensorChunk(data=payload[:500], offset=0)
    if extra_chunk_checksum is not None:
        first.tensor_xxh3_64 = extra_chunk_checksum
    last = pb.TensorChunk(data=payload[500:], offset=500)
    if last_checksum is not None:
        last.tensor_xxh3_64 = last_checksum
    return [pb.StreamWeightsResponse(begin=pb.StreamBegin(task=task, num_tensors=1, total_bytes=768)),
            pb.StreamWeightsResponse(header=h), pb.StreamWeightsResponse(chunk=first),
            pb.StreamWeightsResponse(chunk=last),
            pb.StreamWeightsResponse(end=pb.StreamEnd(num_tensors=1, total_bytes=768))]


def read(messages):
    client = _FakeClient(messages)
    got = list(verified_tensors(client, "test", pb.StreamWeightsRequest(task=b"x"),
                                lambda h: np.empty(h.byte_length, np.uint8), StreamStats()))
    return client, got


d.check(chunk_view(pb.StreamWeightsResponse(chunk=pb.TensorChunk(
    data=b"abc", offset=1, tensor_xxh3_64=7)).SerializeToString()) is None,
    "a chunk carrying tensor_xxh3_64 must go through protobuf")
client, got = read(stream(True, digest))
d.check(client.requests[0].checksum_after_data, "the request must opt in to checksum_after_data")
# The task's route key, as the C++ client sends it (HAProxy hashes on it in cluster mode).
d.check(client.metadata[0] == (("x-deltaserve-task", "/x"),), f"metadata {client.metadata[0]}")
fake = _FakeClient([])
fake._metadata = (("authorization", "Bearer t"),)
for names, want in (({"tenant": b"acme", "task": b"x"}, (("x-deltaserve-task", "acme/x"),)),
                    ({"tenant": b"", "task": "caf\u00e9".encode()}, ()),  # not ASCII: unrouted
                    ({"tenant": b"acme", "task": b""}, ()),
                    (None, ())):
    meta = fake._metadata_for(names)
    d.check(meta == (("authorization", "Bearer t"),) + want, f"{names}: metadata {meta}")
d.check(len(got) == 1 and bytes(got[0][1]) == payload, "checksum in the last chunk: tensor not read")
client, got = read(stream(False, None, header_checksum=digest))
d.check(len(got) == 1 and bytes(got[0][1]) == payload, "checksum in the header: tensor not read")
for case, messages, want in (
        ("wrong chunk checksum", stream(True, digest ^ 1), "tensor 'w' checksum mismatch"),
        ("missing chunk checksum", stream(True, None), "ended without the checksum"),
        ("chunk checksum without checksum_follows", stream(False, digest, header_checksum=digest),
         "not its announced last chunk"),
        ("chunk checksum before the last chunk", stream(True, digest, extra_chunk_checksum=digest),
         "not its announced last chunk")):
    try:
        read(messages)
        d.check(False, f"{case}: accepted")
    except DeltaserveError as e:
        d.check(e.code == grpc.StatusCode.DATA_LOSS and want in e.message,
                f"{case}: got {e.code} {e.message!r}, want DATA_LOSS with {want!r}")
d.log("PASS: checksums in the last chunk are verified; misplaced or missing ones are DATA_LOSS")

# Two same-size overwrites within one second (new-user trial: a resumed pull mixed them):
# only container_xxh3_64 tells them apart.
first = pb.TaskInfo(tenant="t", name="k", created_unix=1700000000, base_hash="ab",
                    container_bytes=4096, container_xxh3_64=0x1111)
second = pb.TaskInfo(tenant="t", name="k", created_unix=1700000000, base_hash="ab",
                     container_bytes=4096, container_xxh3_64=0x2222)
d.check(_same_task(first, first), "a task is not its own version")
d.check(not _same_task(first, second), "same-size commits in one second taken as one version")
old = pb.TaskInfo(tenant="t", name="k", created_unix=1700000000, base_hash="ab", container_bytes=4096)
d.check(_same_task(old, pb.TaskInfo(tenant="t", name="k", created_unix=1700000000, base_hash="ab",
                                    container_bytes=4096)), "tasks without a hash: fallback failed")
d.check(not _same_task(old, first) and not _same_task(first, old), "hash on one side only: same")
