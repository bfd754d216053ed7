"""Tensor dtypes of deltaserve.v1 (proto DType, codec/tensor.h) and their numpy / torch
spellings: every dtype a container may carry (F32, F16, BF16, F64, I64, I32, I16, I8,
U8, BOOL, F8_E4M3, F8_E5M2, U16, U32, U64).

Where numpy or the installed torch has no such dtype, the tensor's bytes travel in a
carrier dtype of the same width holding the raw bits (no copy, no conversion):
  numpy: BF16 as uint16, F8_E4M3 / F8_E5M2 as uint8;
  torch: F8_E4M3 / F8_E5M2 as torch.float8_e4m3fn / torch.float8_e5m2 if the installed
    torch has them, else torch.uint8; U16 / U32 / U64 as torch.uint16 / uint32 / uint64
    if it has them, else torch.int16 / int32 / int64 (same bits, signed reading).
Only F32, F16 and BF16 are castable: a requested out dtype applies to those tensors,
others always come in their own dtype (codec::OutputDType).
"""
import numpy as np

from deltaserve.errors import invalid_argument
from deltaserve.v1 import delta_service_pb2 as pb

# proto DType number -> (safetensors name, bytes per element, numpy dtype of the data,
# names of the torch dtype by preference: the first the installed torch has is used)
_BY_PROTO = {
    pb.DTYPE_F32: ("F32", 4, np.dtype("<f4"), ("float32",)),
    pb.DTYPE_F16: ("F16", 2, np.dtype("<f2"), ("float16",)),
    pb.DTYPE_BF16: ("BF16", 2, np.dtype("<u2"), ("bfloat16",)),
    pb.DTYPE_F64: ("F64", 8, np.dtype("<f8"), ("float64",)),
    pb.DTYPE_I64: ("I64", 8, np.dtype("<i8"), ("int64",)),
    pb.DTYPE_I32: ("I32", 4, np.dtype("<i4"), ("int32",)),
    pb.DTYPE_I16: ("I16", 2, np.dtype("<i2"), ("int16",)),
    pb.DTYPE_I8: ("I8", 1, np.dtype("i1"), ("int8",)),
    pb.DTYPE_U8: ("U8", 1, np.dtype("u1"), ("uint8",)),
    pb.DTYPE_BOOL: ("BOOL", 1, np.dtype("?"), ("bool",)),
    pb.DTYPE_F8_E4M3: ("F8_E4M3", 1, np.dtype("u1"), ("float8_e4m3fn", "uint8")),
    pb.DTYPE_F8_E5M2: ("F8_E5M2", 1, np.dtype("u1"), ("float8_e5m2", "uint8")),
    pb.DTYPE_U16: ("U16", 2, np.dtype("<u2"), ("uint16", "int16")),
    pb.DTYPE_U32: ("U32", 4, np.dtype("<u4"), ("uint32", "int32")),
    pb.DTYPE_U64: ("U64", 8, np.dtype("<u8"), ("uint64", "int64")),
}
_CASTABLE = (pb.DTYPE_F32, pb.DTYPE_F16, pb.DTYPE_BF16)
_BY_NAME = {entry[0]: number for number, entry in _BY_PROTO.items()}
# Other spellings (numpy / torch names, upper-cased) of the safetensors names.
_ALIASES = {"FLOAT32": "F32", "FLOAT": "F32", "FLOAT16": "F16", "HALF": "F16",
            "BFLOAT16": "BF16", "FLOAT64": "F64", "DOUBLE": "F64", "INT64": "I64",
            "LONG": "I64", "INT32": "I32", "INT": "I32", "INT16": "I16", "SHORT": "I16",
            "INT8": "I8", "UINT8": "U8", "BOOL": "BOOL", "FLOAT8_E4M3FN": "F8_E4M3",
            "FLOAT8_E5M2": "F8_E5M2", "UINT16": "U16", "UINT32": "U32", "UINT64": "U64"}


def is_known(proto_dtype):
    return proto_dtype in _BY_PROTO


def name(proto_dtype):
    """Safetensors spelling ("F32", "I64", "F8_E4M3", ...)."""
    return _BY_PROTO[proto_dtype][0] if proto_dtype in _BY_PROTO else f"dtype {proto_dtype}"


def from_name(text):
    """proto DType of a safetensors dtype name; None for an unknown one."""
    return _BY_NAME.get(text)


def itemsize(proto_dtype):
    return _BY_PROTO[proto_dtype][1]


def numpy_dtype(proto_dtype):
    return _BY_PROTO[proto_dtype][2]


def is_castable(proto_dtype):
    """F32, F16 and BF16: the dtypes an out dtype converts between."""
    return proto_dtype in _CASTABLE


def output(recorded, out_dtype):
    """The dtype a tensor recorded as `recorded` arrives in when `out_dtype` (proto, 0:
    none) is requested: out_dtype if both are F32/F16/BF16, else recorded."""
    if out_dtype and recorded in _CASTABLE and out_dtype in _CASTABLE:
        return out_dtype
    return recorded


def _parse(dtype):
    """proto DType of a name (any case, safetensors / numpy / torch spelling), a
    torch.dtype or a numpy dtype; None if it names no deltaserve dtype."""
    text = str(dtype)
    if text.startswith("torch."):
        text = text[len("torch."):]
    elif not isinstance(dtype, str):
        try:
            text = np.dtype(dtype).name
        except TypeError:
            pass
    key = text.upper()
    return _BY_NAME.get(_ALIASES.get(key, key))


def to_proto(dtype):
    """proto DType of a tensor dtype (see _parse): every deltaserve dtype. For a torch
    tensor use of_tensor (carrier dtypes). INVALID_ARGUMENT for anything else."""
    proto = _parse(dtype)
    if proto is None:
        raise invalid_argument(f"unsupported dtype {dtype!r}")
    return proto


def to_out_proto(dtype):
    """proto DType of a requested out dtype: "f32"/"f16"/"bf16" (any case, also
    "float16", ...), a torch.dtype or a numpy dtype (float32/float16). None ->
    DTYPE_UNSPECIFIED. INVALID_ARGUMENT for anything else (other dtypes are never
    converted)."""
    if dtype is None:
        return pb.DTYPE_UNSPECIFIED
    proto = _parse(dtype)
    if proto not in _CASTABLE:
        raise invalid_argument(f"unsupported out dtype {dtype!r} (use f32, f16 or bf16; "
                               "tensors of other dtypes always come in their own)")
    return proto


def torch_dtype(proto_dtype):
    """The torch dtype a tensor of `proto_dtype` is loaded as (native or carrier)."""
    import torch
    for candidate in _BY_PROTO[proto_dtype][3]:
        if hasattr(torch, candidate):
            return getattr(torch, candidate)
    raise invalid_argument(f"this torch has no dtype for {name(proto_dtype)}")


def matches(tensor, proto_dtype):
    """Whether `tensor` (torch tensor or numpy array) holds data of `proto_dtype`: its
    dtype is the one torch_dtype / numpy_dtype gives (carriers included, so a numpy
    uint16 array matches BF16 and U16)."""
    if isinstance(tensor, np.ndarray):
        return tensor.dtype == numpy_dtype(proto_dtype)
    return tensor.dtype == torch_dtype(proto_dtype)


def torch_view(buf, proto_dtype_or_torch, shape):
    """`buf` (1-D uint8 numpy array) as a torch tensor of the given dtype (a proto DType
    number or a torch.dtype) and `shape`, sharing its memory. A zero-element `shape`
    gives a new empty tensor: numpy gives an empty array stride 0, and torch refuses to
    view such an array as a wider dtype ("self.stride(-1) must be 1")."""
    import torch
    dtype = (proto_dtype_or_torch if isinstance(proto_dtype_or_torch, torch.dtype)
             else torch_dtype(proto_dtype_or_torch))
    shape = tuple(shape)
    if buf.size == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.from_numpy(buf).view(dtype).reshape(shape)


def torch_bytes(t):
    """A uint8 numpy array sharing the bytes of CPU torch tensor `t` (contiguous)."""
    import torch
    flat = t.reshape(-1)
    if flat.dtype == torch.bool or flat.dtype.is_floating_point and flat.element_size() == 1:
        flat = flat.view(torch.uint8)
    elif flat.dtype in (torch.bfloat16,) or str(flat.dtype) in ("torch.uint16",):
        flat = flat.view(torch.int16)
    elif str(flat.dtype) in ("torch.uint32", "torch.uint64"):
        flat = flat.view(torch.int32 if flat.element_size() == 4 else torch.int64)
    return flat.numpy().view(np.uint8)


def is_wrapper_subclass(tensor):
    """Whether torch tensor `tensor` is a subclass with a __torch_dispatch__ of its own
    (FakeTensor, DTensor, FunctionalTensor...): what its storage holds is not its data."""
    import torch
    own = getattr(type(tensor), "__torch_dispatch__", None)
    return own is not None and own is not getattr(torch.Tensor, "__torch_dispatch__", None)


def _readable(t, label):
    """Torch tensor `t` as a dense one whose values can be read; INVALID_ARGUMENT naming
    `label` for a tensor without data (meta device, a wrapper subclass such as
    FakeTensor). A sparse tensor is made dense (its values, not its storage)."""
    import torch
    what = f"tensor '{label}'" if label else "a tensor"
    if t.device.type == "meta":
        raise invalid_argument(f"{what} is on the meta device: it has no data to read "
                               "(materialise it first, e.g. model.to_empty(device='cpu'), "
                               "and give it its values)")
    if is_wrapper_subclass(t):
        raise invalid_argument(f"{what} is a {type(t).__name__}, a tensor subclass with its "
                               "own __torch_dispatch__: it has no data to read")
    return t if t.layout == torch.strided else t.to_dense()


def raw_array(t, label=""):
    """(proto DType, C-contiguous numpy array of the data) of a torch tensor (moved to
    the CPU; its dtype names the proto DType, carriers read as the native dtype: uint8
    as U8), a numpy array, or a (dtype, array) pair naming the dtype of the array's raw
    bits (e.g. ("F8_E4M3", uint8 array), ("BF16", uint16 array)). INVALID_ARGUMENT
    (naming `label`, the tensor's name) for dtypes deltaserve does not serve, a pair
    whose array has another width, or a torch tensor without data (meta device,
    FakeTensor); a sparse tensor is read dense."""
    if isinstance(t, tuple):
        dtype, a = t
        proto = to_proto(dtype)
        a = _contiguous(a)
        if a.dtype.itemsize != itemsize(proto):
            raise invalid_argument(f"{name(proto)} data given as {a.dtype} ({a.dtype.itemsize} "
                                   f"bytes per element, not {itemsize(proto)})")
        return proto, a
    if hasattr(t, "detach"):
        t = _readable(t.detach(), label).cpu().contiguous()
        return to_proto(t.dtype), torch_bytes(t).view(numpy_dtype(to_proto(t.dtype))).reshape(
            tuple(t.shape))
    a = _contiguous(t)
    return to_proto(a.dtype), a


def _contiguous(a):
    """C-contiguous numpy array of `a` (0-d stays 0-d: np.ascontiguousarray makes 1-d)."""
    a = np.asarray(a)
    return np.ascontiguousarray(a).reshape(a.shape)
