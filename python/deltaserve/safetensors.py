"""The safetensors format (https://github.com/huggingface/safetensors: 8-byte
little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, and
an optional "__metadata__" of strings}, then the data buffer), for F32, F16 and BF16,
the dtypes deltaserve serves. Reading copies each tensor once, from the page cache into
its own buffer (no mmap is kept open behind the returned tensors)."""
import json
import os
import struct

import numpy as np

from deltaserve import dtypes
from deltaserve.errors import invalid_argument
from deltaserve.v1 import delta_service_pb2 as pb

_PROTO = {"F32": pb.DTYPE_F32, "F16": pb.DTYPE_F16, "BF16": pb.DTYPE_BF16}


def read_header(path):
    """(header {name: entry} in data order, metadata dict, data start offset).
    INVALID_ARGUMENT for a file that is not safetensors of F32/F16/BF16 tensors."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(8)
        if len(raw) < 8:
            raise invalid_argument(f"{path}: shorter than 8 bytes; not safetensors")
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, 100 << 20):
            raise invalid_argument(f"{path}: header length {n} past the end of the file")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise invalid_argument(f"{path}: bad JSON header: {e}") from None
    metadata = header.pop("__metadata__", {}) or {}
    for name, e in header.items():
        if e.get("dtype") not in _PROTO:
            raise invalid_argument(f"{path}: tensor '{name}': unsupported dtype {e.get('dtype')!r}")
        begin, end = e["data_offsets"]
        count = int(np.prod(e["shape"], dtype=np.int64))
        if not 0 <= begin <= end <= size - 8 - n or end - begin != count * dtypes.itemsize(
                _PROTO[e["dtype"]]):
            raise invalid_argument(f"{path}: tensor '{name}': bad data_offsets {e['data_offsets']}")
    order = dict(sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]))
    return order, metadata, 8 + n


def read_file(path):
    """([(name, proto dtype, shape, uint8 numpy array of its bytes)] in data order,
    metadata) of a safetensors file."""
    header, metadata, start = read_header(path)
    out = []
    with open(path, "rb") as f:
        for name, e in header.items():
            begin, end = e["data_offsets"]
            buf = np.empty(end - begin, dtype=np.uint8)
            f.seek(start + begin)
            if f.readinto(memoryview(buf)) != end - begin:
                raise invalid_argument(f"{path}: tensor '{name}' truncated")
            out.append((name, _PROTO[e["dtype"]], tuple(e["shape"]), buf))
    return out, metadata


def load_file(path):
    """{name: torch.Tensor} of a safetensors file (BF16 as torch.bfloat16)."""
    import torch
    tensors, _ = read_file(path)
    return {name: torch.from_numpy(buf).view(dtypes.torch_dtype(dt)).reshape(shape)
            for name, dt, shape, buf in tensors}


def write_file(path, tensors, metadata=None):
    """Writes `tensors` ({name: numpy array of float32/float16, or torch tensor of
    float32/float16/bfloat16}) as one safetensors file, in the given order, with
    `metadata` ({str: str}) as __metadata__; the header is padded to 8 bytes."""
    entries, arrays, offset = {}, [], 0
    for name, t in tensors.items():
        proto, a = dtypes.raw_array(t)
        entries[name] = {"dtype": dtypes.name(proto), "shape": list(a.shape),
                         "data_offsets": [offset, offset + a.nbytes]}
        arrays.append(a)
        offset += a.nbytes
    if metadata:
        entries["__metadata__"] = dict(metadata)
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for a in arrays:
            f.write(memoryview(a).cast("B"))
