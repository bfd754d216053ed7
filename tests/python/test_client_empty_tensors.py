"""python_client_empty_tensors: a model with zero-element tensors (shapes [0] and [0, 7]),
a scalar (shape []) and a normal weight, against a live deltaserved (port 0):
load_state_dict, load_into (a dict of torch tensors and a Module), stream_weights and
deltaserve.safetensors.load_file give each tensor's shape, dtype and bytes as
`deltactl pull` writes them. Before, the grpcio path (Client(native=False),
DELTASERVE_NATIVE=0) raised a raw RuntimeError "self.stride(-1) must be 1 to view Byte
as Float" for the empty tensors (numpy gives an empty array stride 0)."""
import os
import tempfile

import numpy as np
import torch

import live_daemon as ld
from live_daemon import d

from deltaserve import Client, dtypes
from deltaserve import safetensors as st

SHAPES = {"empty1": (0,), "empty2": (0, 7), "scalar": (), "w": (16, 32)}


def main(tmp):
    base, ft, _ = ld.model_pair(tmp, SHAPES, dtype=np.float32)
    delta = ld.compress(tmp, base, ft)
    daemon = ld.LiveDaemon(tmp, base)
    c = Client(daemon.addr, timeout=30)
    c.push("e", delta)
    ref_path = os.path.join(tmp, "pulled.safetensors")
    ld.deltactl(["pull", "--task", "e", "--out", ref_path], addr=daemon.addr)
    ref = {n: (dtypes.torch_dtype(dt), tuple(shape), buf.tobytes())
           for n, dt, shape, buf in st.read_file(ref_path)[0]}
    d.check({n: r[1] for n, r in ref.items()} == SHAPES, f"deltactl pull shapes {ref}")

    def check(what, tensors):
        d.check(set(tensors) == set(SHAPES), f"{what}: names {sorted(tensors)}")
        for name, (dt, shape, raw) in ref.items():
            t = tensors[name]
            d.check(tuple(t.shape) == shape and t.dtype == dt,
                    f"{what} {name}: {tuple(t.shape)} {t.dtype}, want {shape} {dt}")
            d.check(dtypes.torch_bytes(t.contiguous()).tobytes() == raw,
                    f"{what} {name}: bytes differ")

    check("load_state_dict", c.load_state_dict("e"))
    check("safetensors.load_file", st.load_file(ref_path))
    target = {n: torch.full(s, 9.0) for n, s in SHAPES.items()}
    c.load_into(target, "e")
    check("load_into(dict)", target)
    module = torch.nn.Module()
    for n, s in SHAPES.items():
        module.register_buffer(n, torch.zeros(s))
    c.load_into(module, "e")
    check("load_into(Module)", dict(module.state_dict()))
    arrays = dict(c.stream_weights("e"))
    check("stream_weights", {n: torch.from_numpy(a.copy()) if a.size else torch.empty(a.shape)
                             for n, a in arrays.items()})
    d.check(arrays["scalar"].shape == () and arrays["empty2"].shape == (0, 7),
            f"stream_weights shapes {[(n, a.shape) for n, a in arrays.items()]}")
    daemon.stop()


with tempfile.TemporaryDirectory(prefix="py-empty-") as tmp:
    main(tmp)
    d.log("PASS: zero-element and scalar tensors load on this path")
