"""Tensor dtypes of deltaserve.v1 (proto DType) and their numpy / torch spellings.

numpy has no bfloat16: BF16 tensors travel in numpy as uint16 arrays holding the raw
bfloat16 bits (torch views them as torch.bfloat16 without a copy).
"""
import numpy as np

from deltaserve.errors import invalid_argument
from deltaserve.v1 import delta_service_pb2 as pb

# proto DType number -> (name, bytes per element, numpy dtype of the data)
_BY_PROTO = {
    pb.DTYPE_F32: ("F32", 4, np.dtype("<f4")),
    pb.DTYPE_F16: ("F16", 2, np.dtype("<f2")),
    pb.DTYPE_BF16: ("BF16", 2, np.dtype("<u2")),
}
_BY_NAME = {name: number for number, (name, _, _) in _BY_PROTO.items()}
_ALIASES = {"F32": "F32", "FLOAT32": "F32", "FLOAT": "F32", "F16": "F16", "FLOAT16": "F16",
            "HALF": "F16", "BF16": "BF16", "BFLOAT16": "BF16"}


def is_known(proto_dtype):
    return proto_dtype in _BY_PROTO


def name(proto_dtype):
    return _BY_PROTO[proto_dtype][0] if proto_dtype in _BY_PROTO else f"dtype {proto_dtype}"


def itemsize(proto_dtype):
    return _BY_PROTO[proto_dtype][1]


def numpy_dtype(proto_dtype):
    return _BY_PROTO[proto_dtype][2]


def to_proto(dtype):
    """proto DType number of `dtype`: "f32"/"f16"/"bf16" (any case, also "float16", ...),
    a torch.dtype or a numpy dtype (float32/float16). None -> DTYPE_UNSPECIFIED.
    INVALID_ARGUMENT for anything else."""
    if dtype is None:
        return pb.DTYPE_UNSPECIFIED
    text = str(dtype)
    if text.startswith("torch."):
        text = text[len("torch."):]
    elif not isinstance(dtype, str):
        try:
            text = np.dtype(dtype).name
        except TypeError:
            pass
    key = _ALIASES.get(text.upper())
    if key is None:
        raise invalid_argument(f"unsupported dtype {dtype!r} (use f32, f16 or bf16)")
    return _BY_NAME[key]


def torch_dtype(proto_dtype):
    import torch
    return {pb.DTYPE_F32: torch.float32, pb.DTYPE_F16: torch.float16,
            pb.DTYPE_BF16: torch.bfloat16}[proto_dtype]


def raw_array(t):
    """(proto DType, C-contiguous numpy array of the data) of a torch tensor (moved to
    the CPU; bfloat16 viewed as int16) or a numpy array. INVALID_ARGUMENT for dtypes
    deltaserve does not serve."""
    if hasattr(t, "detach"):
        import torch
        t = t.detach().cpu().contiguous()
        proto = to_proto(t.dtype)
        return proto, (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()
    a = np.ascontiguousarray(t)
    return to_proto(a.dtype), a
