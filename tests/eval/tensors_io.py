"""Reading TF.js graph models and reading/writing safetensors files, in numpy.

TF.js graph model (codec/tfjs.h): model.json holds `modelTopology` (a GraphDef in JSON)
and `weightsManifest`, groups of {paths, weights: [{name, shape, dtype, quantization?}]}
whose bytes are the group's files concatenated, little-endian, weights in manifest order.
`quantization: {dtype: float16}` stores float32 weights as IEEE half.

safetensors: u64 little-endian header length N, N bytes of JSON
{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data.
"""
import json
import os
import struct
from collections import OrderedDict

import numpy as np

_TFJS_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT_DTYPES = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


def load_tfjs_graph(model_json_path):
    """Returns (model_json_dict, OrderedDict name -> np.ndarray) for a TF.js graph model.

    Float weights come back as float32 (float16-quantized ones are widened exactly);
    int32 constants are kept as int32. Raises ValueError if a shard is too short.
    """
    with open(model_json_path) as f:
        model = json.load(f)
    root = os.path.dirname(model_json_path)
    weights = OrderedDict()
    for group in model["weightsManifest"]:
        blob = b"".join(open(os.path.join(root, p), "rb").read() for p in group["paths"])
        pos = 0
        for spec in group["weights"]:
            shape = [int(d) for d in spec["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = spec.get("quantization")
            if quant:
                qtype = _QUANT_DTYPES[quant["dtype"]]
                raw = np.frombuffer(blob, qtype, count, pos)
                pos += count * np.dtype(qtype).itemsize
                if quant["dtype"] == "float16":
                    arr = raw.astype(np.float32)
                else:
                    arr = raw.astype(np.float32) * quant["scale"] + quant["min"]
            else:
                dtype = _TFJS_DTYPES[spec["dtype"]]
                raw = np.frombuffer(blob, dtype, count, pos)
                pos += count * np.dtype(dtype).itemsize
                arr = raw.copy()
            if pos > len(blob):
                raise ValueError("%s: shard too short for %s" % (model_json_path, spec["name"]))
            weights[spec["name"]] = arr.reshape(shape)
    return model, weights


_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64,
              "I32": np.int32, "I64": np.int64, "U8": np.uint8, "I8": np.int8}
_ST_NAMES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
             np.dtype(np.float64): "F64", np.dtype(np.int32): "I32",
             np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8"}


def write_safetensors(path, tensors, metadata=None):
    """Writes an ordered mapping name -> np.ndarray to `path` (tensors in given order)."""
    header = OrderedDict()
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    blobs = []
    for name, arr in tensors.items():
        arr = np.asarray(arr)  # keeps 0-d shapes (np.ascontiguousarray makes them 1-d)
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
        header[name] = {"dtype": _ST_NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path, as_float32=True):
    """Reads a safetensors file into an OrderedDict name -> np.ndarray (file order).

    BF16 and F16 tensors are widened to float32 when as_float32 is true.
    """
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    base = 8 + n
    items = [(k, v) for k, v in header.items() if k != "__metadata__"]
    items.sort(key=lambda kv: kv[1]["data_offsets"][0])
    out = OrderedDict()
    for name, spec in items:
        b, e = spec["data_offsets"]
        shape = spec["shape"]
        if spec["dtype"] == "BF16":
            u = np.frombuffer(data, np.uint16, (e - b) // 2, base + b)
            arr = (u.astype(np.uint32) << 16).view(np.float32).reshape(shape)
        else:
            arr = np.frombuffer(data, _ST_DTYPES[spec["dtype"]], (e - b) //
                                np.dtype(_ST_DTYPES[spec["dtype"]]).itemsize,
                                base + b).reshape(shape)
            if as_float32 and arr.dtype == np.float16:
                arr = arr.astype(np.float32)
        out[name] = arr.copy()
    return out
