"""The safetensors format (https://github.com/huggingface/safetensors: 8-byte
little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, and
an optional "__metadata__" of strings}, then the data buffer), for every dtype
deltaserve serves (deltaserve.dtypes). Headers are written exactly as the C++ writer
(codec/safetensors.cc, `deltactl pull`) writes them: compact JSON with every object's
keys sorted, non-ASCII as UTF-8, padded with spaces to a multiple of 8 bytes. Reading copies each tensor once, from the page cache into
its own buffer (no mmap is kept open behind the returned tensors)."""
import json
import os
import struct

import numpy as np

from deltaserve import dtypes
from deltaserve.errors import invalid_argument


def read_header(path):
    """(header {name: entry} in data order, metadata dict, data start offset).
    INVALID_ARGUMENT for a file that is not safetensors of deltaserve dtypes."""
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
        if not isinstance(e.get("dtype"), str) or dtypes.from_name(e["dtype"]) is None:
            raise invalid_argument(f"{path}: tensor '{name}': unsupported dtype {e.get('dtype')!r}")
        begin, end = e["data_offsets"]
        count = int(np.prod(e["shape"], dtype=np.int64))
        if not 0 <= begin <= end <= size - 8 - n or end - begin != count * dtypes.itemsize(
                dtypes.from_name(e["dtype"])):
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
            out.append((name, dtypes.from_name(e["dtype"]), tuple(e["shape"]), buf))
    return out, metadata


def load_file(path):
    """{name: torch.Tensor} of a safetensors file (dtypes.torch_dtype: BF16 as
    torch.bfloat16, ...)."""
    tensors, _ = read_file(path)
    return {name: dtypes.torch_view(buf, dt, shape)
            for name, dt, shape, buf in tensors}


def header_bytes(entries, metadata=None):
    """The 8-byte length and JSON header of a file holding `entries` ([(name, proto
    dtype, shape)]) back to back in the given order, with `metadata` ({str: str}, none
    if empty) as __metadata__: byte for byte what codec::WriteSafetensors writes."""
    header, offset = {}, 0
    for name, proto, shape in entries:
        size = int(np.prod(shape, dtype=np.int64)) * dtypes.itemsize(proto)
        header[name] = {"dtype": dtypes.name(proto), "shape": [int(d) for d in shape],
                        "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = dict(metadata)
    text = json_bytes(header)
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def json_bytes(value):
    """`value` as nlohmann::json::dump() writes it (codec/, client/): compact, keys
    sorted (std::map order: UTF-8 bytes, the same as code points), UTF-8 unescaped."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def write_file(path, tensors, metadata=None):
    """Writes `tensors` ({name: numpy array, torch tensor, or (dtype name, array of its
    raw bits) pair; see dtypes.raw_array}) as one safetensors file, data in the given
    order, with `metadata` ({str: str}) as __metadata__."""
    raw = [(name,) + dtypes.raw_array(t, name) for name, t in tensors.items()]
    head = header_bytes([(name, proto, a.shape) for name, proto, a in raw], metadata)
    with open(path, "wb") as f:
        f.write(head)
        for _, _, a in raw:
            f.write(memoryview(a.reshape(-1).view(np.uint8)))
