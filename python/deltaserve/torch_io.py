"""Loading a task's merged weights into torch: a new state dict, or in place into an
existing model (its parameters' storage is written, no second copy of the model).

What can be loaded into (check_loadable): dense (strided), contiguous tensors with real
storage: CPU tensors are written in place; tensors on another real device (cuda, ...)
get their bytes in a CPU buffer first, then Tensor.copy_. Refused with INVALID_ARGUMENT
naming the tensor, before any byte is written: tensors on the meta device (no storage:
a copy into them does nothing), sparse or other non-strided layouts, quantized tensors,
wrapper subclasses with their own __torch_dispatch__ (FakeTensor, DTensor, ...: their
storage is not their data), non-contiguous tensors and read-only numpy arrays.
Parameters that require grad and inference-mode tensors are loaded (their storage is
written directly; the staged copy of an inference tensor runs under inference_mode).
"""
import fnmatch
import math
import re

import grpc
import numpy as np

from deltaserve import _native, dtypes
from deltaserve.errors import DeltaserveError, counted, invalid_argument, not_found


def _stage(client, task, include, include_regex, dtype, progress=None):
    """Streams `task` into fresh memory: ([(name, proto dtype, shape, uint8 numpy array
    of its bytes)] in stream order, the arrays views of one buffer on the native path)."""
    out = []
    if client.native:
        buf, tensors = _native.load(client, task, include, include_regex, dtype,
                                    progress=progress)
        for name, proto_dtype, shape, offset in tensors:
            n = dtypes.itemsize(proto_dtype) * math.prod(shape)
            out.append((name, proto_dtype, tuple(shape), buf[offset:offset + n]))
        return out

    def alloc(header):
        return np.empty(header.byte_length, dtype=np.uint8)

    for header, buf in client.stream_tensors(task, alloc, include, include_regex, dtype):
        out.append((header.name, header.dtype, tuple(header.shape), buf))
        if progress is not None:
            progress(header.name)
    return out


def no_match_error(client, task, include, include_regex, info=None):
    """NOT_FOUND for an include= / include_regex= filter that matches no tensor of `task`
    (as deltactl pull says it), with a few of the task's names when GetTask tells them."""
    parts = []
    if include:
        parts.append(f"include={[include] if isinstance(include, str) else list(include)}")
    if include_regex:
        parts.append(f"include_regex={include_regex!r}")
    example = ""
    try:
        info = info or client.task_info(task, tensors=True)
        names = [t.name for t in info.tensors]
        if names:
            example = f"; the task has {counted(len(names), 'tensor')}, e.g. " + ", ".join(
                f"'{n}'" for n in names[:3])
    except DeltaserveError:
        pass
    return not_found(f"{client._label('StreamWeights', task)}: no tensor matches the filter "
                     f"({', '.join(parts)}){example}; nothing loaded")


def load_state_dict(client, task, include, include_regex, dtype, progress=None):
    staged = _stage(client, task, include, include_regex, dtype, progress)
    if not staged and (include or include_regex):
        raise no_match_error(client, task, include, include_regex)
    out = {}
    for name, proto_dtype, shape, buf in staged:
        out[name] = dtypes.torch_view(buf, proto_dtype, shape)
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


def check_loadable(name, tensor):
    """INVALID_ARGUMENT naming `name` unless bytes can be loaded into `tensor` (the
    module docstring says which tensors can)."""
    if isinstance(tensor, np.ndarray):
        if not tensor.flags.c_contiguous or not tensor.flags.writeable:
            raise invalid_argument(f"tensor '{name}': numpy array is not C-contiguous and writable")
        return
    import torch
    if not isinstance(tensor, torch.Tensor):
        raise invalid_argument(f"tensor '{name}': a {type(tensor).__name__} is neither a torch "
                               "tensor nor a numpy array")
    if tensor.device.type == "meta":
        raise invalid_argument(
            f"tensor '{name}' is on the meta device: it has no storage, so nothing can be "
            "loaded into it (materialise the model first, e.g. model.to_empty(device='cpu'), "
            "or use load_state_dict to get new tensors)")
    if tensor.layout != torch.strided:
        raise invalid_argument(f"tensor '{name}' has layout {tensor.layout}: only dense "
                               "(strided) tensors can be loaded in place (use load_state_dict "
                               "to get new tensors)")
    if tensor.is_quantized:
        raise invalid_argument(f"tensor '{name}' is quantized ({tensor.dtype}): load the float "
                               "model, then quantize it (or use load_state_dict)")
    if dtypes.is_wrapper_subclass(tensor):
        raise invalid_argument(f"tensor '{name}' is a {type(tensor).__name__}, a tensor "
                               "subclass with its own __torch_dispatch__: its storage is not "
                               "its data; load into plain tensors")
    if not tensor.is_contiguous():
        raise invalid_argument(f"tensor '{name}': not contiguous; cannot load it in place")


def byte_view(name, tensor):
    """A writable uint8 numpy array over the bytes of `tensor` (CPU torch tensor or
    numpy array), sharing its memory; None for a tensor on another real device (cuda,
    ...: the caller stages it, copy_staged). INVALID_ARGUMENT for a tensor that
    check_loadable refuses."""
    check_loadable(name, tensor)
    if isinstance(tensor, np.ndarray):
        return tensor.reshape(-1).view(np.uint8)
    if tensor.device.type != "cpu":
        return None
    return dtypes.torch_bytes(tensor.detach())


def copy_staged(dst, buf):
    """Copies `buf` (uint8 numpy array: dst's bytes, staged in CPU memory) into torch
    tensor `dst` (any real device) with Tensor.copy_; an inference tensor under
    inference_mode (elsewhere torch refuses to update it in place)."""
    import torch
    src = dtypes.torch_view(buf, dst.dtype, dst.shape)
    with (torch.inference_mode() if dst.is_inference() else torch.no_grad()):
        dst.copy_(src)


def write_bytes(name, dst, buf):
    """Writes `buf` (uint8 numpy array of dst's bytes) into `dst` (torch tensor or numpy
    array that check_loadable accepts)."""
    view = byte_view(name, dst)
    if view is None:
        copy_staged(dst, buf)
    else:
        view[...] = buf


def _selected(name, include, include_regex):
    """Whether the server's filter sends `name` (fnmatch without FNM_PATHNAME; a regex
    matching the whole name), for checking before the stream."""
    if isinstance(include, str):
        include = [include]
    if include and not any(fnmatch.fnmatchcase(name, g) for g in include):
        return False
    return not include_regex or re.fullmatch(include_regex, name) is not None


class Plan:
    """What a load writes: `summaries` [(name, shape, proto dtype as it will arrive)] of
    the task tensors loaded, in task order; `missing_keys`: the target's tensors that get
    nothing (target order); `unexpected_keys`: task tensors (passing the filter) that the
    target lacks, skipped (strict=False only). As torch's load_state_dict reports."""

    def __init__(self, summaries, missing_keys, unexpected_keys):
        self.summaries = summaries
        self.missing_keys = missing_keys
        self.unexpected_keys = unexpected_keys


def check_plan(target, summaries, strict, filtered, out_dtype, what,
               hint="include= loads a subset"):
    """Checks `summaries` ([(name, shape, recorded proto dtype)] of the tensors that will
    arrive) against `target` ({name: tensor}) before anything is written, and returns
    the Plan. strict=True: every task tensor must be in target and (without a filter)
    every target tensor in the task. strict=False: names on one side only are skipped
    and reported (Plan.missing_keys / unexpected_keys), as torch's
    load_state_dict(strict=False) does; at least one tensor must match. Either way a
    shape or dtype mismatch, or a tensor that cannot be loaded into (check_loadable),
    is INVALID_ARGUMENT naming it. `hint` ends the message about tensors missing from
    the model (what the caller can do)."""
    missing = [name for name, _, _ in summaries if name not in target]
    if missing and (strict or len(missing) == len(summaries)):
        shown = ", ".join(f"'{n}'" for n in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        what_missing = (f"{counted(len(missing), 'tensor')} of {what} not in the model"
                        if strict else
                        f"none of the {counted(len(missing), 'tensor')} of {what} is in the "
                        "model (strict=False skips only some)")
        raise invalid_argument(
            f"{what_missing}: {shown}{more} (the model "
            f"has {counted(len(target), 'tensor')}, e.g. '{next(iter(target), '')}'; {hint}"
            f"{'' if not strict else '; strict=False skips them'})")
    kept = []
    for name, shape, recorded in summaries:
        if name not in target:
            continue
        # dtype= converts only F32/F16/BF16 tensors; others arrive in their own dtype.
        want = dtypes.output(recorded, out_dtype)
        cast_hint = " (pass dtype= to convert it)" if (
            out_dtype == 0 and dtypes.is_castable(recorded)) else ""
        check_loadable(name, target[name])
        check_against(name, target[name], shape, want, cast_hint)
        kept.append((name, shape, want))
    names = {name for name, _, _ in kept}
    extra = [n for n in target if n not in names]
    if strict and not filtered and extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise invalid_argument(f"tensor '{extra[0]}'{more} of the model is not in {what} "
                               f"(strict=True; strict=False loads the rest)")
    return Plan(kept, extra, missing)


def _exact_glob(name):
    """An fnmatch(3) glob matching exactly `name` (the server's include filter)."""
    return re.sub(r"([\\*?\[])", r"\\\1", name)


def load_into(client, target, task, strict, include, include_regex, dtype, progress=None,
              atomic=False):
    tensors = target_tensors(target)
    out_dtype = dtypes.to_out_proto(dtype)
    info = client.task_info(task, tensors=True)
    filtered = bool(include or include_regex)
    summaries = [(t.name, tuple(t.shape), t.dtype) for t in info.tensors
                 if _selected(t.name, include, include_regex)]
    if filtered and not summaries:
        raise no_match_error(client, task, include, include_regex, info)
    what = f"task '{task}'"
    plan = check_plan(tensors, summaries, strict, filtered, out_dtype, what)
    if plan.unexpected_keys:  # strict=False: ask for exactly the tensors the model has
        include, include_regex = [_exact_glob(n) for n, _, _ in plan.summaries], None
    if atomic:
        staged = _stage(client, task, include, include_regex, dtype, progress)
        got = [(name, shape, proto_dtype) for name, proto_dtype, shape, _ in staged]
        if got != [(n, tuple(s), d) for n, s, d in plan.summaries]:
            raise DeltaserveError(
                grpc.StatusCode.ABORTED,
                f"{client._label('StreamWeights', task)}: the task changed between GetTask "
                f"and the stream ({counted(len(got), 'tensor')} came, {len(plan.summaries)} "
                f"{'was' if len(plan.summaries) == 1 else 'were'} planned); nothing written")
        for name, _, _, buf in staged:
            write_bytes(name, tensors[name], buf)
        return _with_keys(client.last_stream, plan)
    if client.native:
        # Every tensor of the plan on the CPU: written in place by the C++ client.
        views = {name: byte_view(name, tensors[name]) for name, _, _ in plan.summaries}
        if all(v is not None for v in views.values()):
            targets = {name: (views[name].__array_interface__["data"][0], views[name].nbytes,
                              want, shape)
                       for name, shape, want in plan.summaries}
            _native.load(client, task, include, include_regex, dtype, targets=targets,
                         progress=progress)
            return _with_keys(client.last_stream, plan)

    staged = {}  # name -> CPU staging buffer of a tensor on another device

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

    for header, _ in client.stream_tensors(task, alloc, include, include_regex, dtype):
        if header.name in staged:
            copy_staged(tensors[header.name], staged.pop(header.name))
        if progress is not None:
            progress(header.name)
    return _with_keys(client.last_stream, plan)


def _with_keys(stats, plan):
    stats.missing_keys = list(plan.missing_keys)
    stats.unexpected_keys = list(plan.unexpected_keys)
    return stats
