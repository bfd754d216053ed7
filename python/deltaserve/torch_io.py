"""Loading a task's merged weights into torch: a new state dict, or in place into an
existing model (its parameters' storage is written, no second copy of the model)."""
import fnmatch
import math
import re

import numpy as np

from deltaserve import _native, dtypes
from deltaserve.errors import invalid_argument


def load_state_dict(client, task, include, include_regex, dtype, progress=None):
    import torch

    if client.native:
        buf, tensors = _native.load(client, task, include, include_regex, dtype,
                                    progress=progress)
        flat = torch.from_numpy(buf) if buf is not None else torch.empty(0, dtype=torch.uint8)
        out = {}
        for name, proto_dtype, shape, offset in tensors:
            n = dtypes.itemsize(proto_dtype) * math.prod(shape)
            t = flat[offset:offset + n].view(dtypes.torch_dtype(proto_dtype))
            out[name] = t.reshape(shape)
        return out

    def alloc(header):
        return np.empty(header.byte_length, dtype=np.uint8)

    out = {}
    for header, buf in client.stream_tensors(task, alloc, include, include_regex, dtype):
        t = torch.from_numpy(buf).view(dtypes.torch_dtype(header.dtype))
        out[header.name] = t.reshape(tuple(header.shape))
        if progress is not None:
            progress(header.name)
    return out


def target_tensors(target):
    """{name: tensor} of a torch.nn.Module (its state_dict: tensors that share the
    parameters' storage) or of a dict of torch tensors / numpy arrays."""
    if hasattr(target, "state_dict") and callable(target.state_dict):
        return target.state_dict()
    if isinstance(target, dict):
        return target
    raise invalid_argument(f"load target must be a torch.nn.Module or a dict of tensors, "
                           f"got {type(target).__name__}")


def check_against(name, tensor, shape, want_dtype, hint=""):
    """INVALID_ARGUMENT naming `name` unless `tensor` has `shape` and holds `want_dtype`
    (dtypes.matches: carrier dtypes included)."""
    if tuple(tensor.shape) != tuple(shape):
        raise invalid_argument(f"tensor '{name}': the model has shape {list(tensor.shape)}, "
                               f"the task has {list(shape)}")
    if not dtypes.matches(tensor, want_dtype):
        raise invalid_argument(f"tensor '{name}': the model has dtype {tensor.dtype}, the task "
                               f"sends {dtypes.name(want_dtype)}{hint}")


def byte_view(name, tensor):
    """A writable uint8 numpy array over the bytes of `tensor` (CPU torch tensor or
    numpy array), sharing its memory; None if the tensor is not on the CPU (the caller
    stages it). INVALID_ARGUMENT for a non-contiguous or read-only tensor."""
    if isinstance(tensor, np.ndarray):
        if not tensor.flags.c_contiguous or not tensor.flags.writeable:
            raise invalid_argument(f"tensor '{name}': numpy array is not C-contiguous and writable")
        return tensor.reshape(-1).view(np.uint8)
    if tensor.device.type != "cpu":
        return None
    if not tensor.is_contiguous():
        raise invalid_argument(f"tensor '{name}': not contiguous; cannot load it in place")
    return dtypes.torch_bytes(tensor.detach())


def _selected(name, include, include_regex):
    """Whether the server's filter sends `name` (fnmatch without FNM_PATHNAME; a regex
    matching the whole name), for checking before the stream."""
    if isinstance(include, str):
        include = [include]
    if include and not any(fnmatch.fnmatchcase(name, g) for g in include):
        return False
    return not include_regex or re.fullmatch(include_regex, name) is not None


def check_plan(target, summaries, strict, filtered, out_dtype, what,
               hint="include= loads a subset"):
    """Checks `summaries` ([(name, shape, recorded proto dtype)] of the tensors that will
    arrive) against `target` ({name: tensor}) before anything is written. `hint` ends
    the message about tensors missing from the model (what the caller can do)."""
    names = set()
    missing = [name for name, _, _ in summaries if name not in target]
    if missing:
        shown = ", ".join(f"'{n}'" for n in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise invalid_argument(
            f"{len(missing)} tensor(s) of {what} not in the model: {shown}{more} (the model "
            f"has {len(target)} tensors, e.g. '{next(iter(target), '')}'; {hint})")
    for name, shape, recorded in summaries:
        names.add(name)
        # dtype= converts only F32/F16/BF16 tensors; others arrive in their own dtype.
        want = dtypes.output(recorded, out_dtype)
        hint = " (pass dtype= to convert it)" if (
            out_dtype == 0 and dtypes.is_castable(recorded)) else ""
        check_against(name, target[name], shape, want, hint)
    if strict and not filtered:
        extra = sorted(set(target) - names)
        if extra:
            more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
            raise invalid_argument(f"tensor '{extra[0]}'{more} of the model is not in {what} "
                                   f"(strict=True)")


def load_into(client, target, task, strict, include, include_regex, dtype, progress=None):
    tensors = target_tensors(target)
    out_dtype = dtypes.to_out_proto(dtype)
    info = client.task_info(task, tensors=True)
    summaries = [(t.name, tuple(t.shape), t.dtype) for t in info.tensors
                 if _selected(t.name, include, include_regex)]
    what = f"task '{task}'"
    check_plan(tensors, summaries, strict, bool(include or include_regex), out_dtype, what)
    if client.native:
        # Every tensor of the plan on the CPU: written in place by the C++ client.
        views = {name: byte_view(name, tensors[name]) for name, _, _ in summaries}
        if all(v is not None for v in views.values()):
            targets = {name: (views[name].__array_interface__["data"][0], views[name].nbytes,
                              dtypes.output(recorded, out_dtype), shape)
                       for name, shape, recorded in summaries}
            _native.load(client, task, include, include_regex, dtype, targets=targets,
                         progress=progress)
            return client.last_stream

    staged = {}  # name -> (device tensor, CPU staging buffer) for non-CPU tensors

    def alloc(header):
        name = header.name
        if name not in tensors:
            raise invalid_argument(f"tensor '{name}' of {what} is not in the model")
        check_against(name, tensors[name], header.shape, header.dtype)
        view = byte_view(name, tensors[name])
        if view is None:
            view = np.empty(header.byte_length, dtype=np.uint8)
            staged[name] = view
        return view

    for header, buf in client.stream_tensors(task, alloc, include, include_regex, dtype):
        if header.name in staged:
            import torch
            dst = tensors[header.name]
            src = torch.from_numpy(staged.pop(header.name)).view(dst.dtype).reshape(dst.shape)
            with torch.no_grad():
                dst.copy_(src)
        if progress is not None:
            progress(header.name)
    return client.last_stream
