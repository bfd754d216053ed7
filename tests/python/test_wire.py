"""python_wire: deltaserve._stream.chunk_view reads a serialized StreamWeightsResponse
chunk exactly as protobuf does (data and offset, default and multi-byte varint values),
and declines (None) every other message, unknown fields and malformed bytes, which then
go through protobuf. No daemon needed."""
import live_daemon as ld  # noqa: F401 (skips when the package is not importable)
from live_daemon import d

from deltaserve._stream import chunk_view
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
