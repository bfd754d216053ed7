"""python_client_roundtrip: the deltaserve package against a live deltaserved (port 0).

push / list_tasks / task_info / get_base / pin / unpin / delete give what deltactl
reports; stream_weights, load_state_dict and load_into (a dict of tensors and a
torch.nn.Module) give exactly the bytes of `deltactl pull` (same names, order, dtypes,
shapes, data), also with dtype and include filters."""
import os
import tempfile

import grpc
import numpy as np
import torch

import live_daemon as ld
from live_daemon import d

from deltaserve import Client
from deltaserve import _stream
from deltaserve import safetensors as st

SHAPES = {"layers.0.attn.weight": (128, 256), "layers.0.mlp.weight": (256, 128),
          "layers.0.mlp.bias": (128,), "layers.1.attn.weight": (128, 256),
          "norm.weight": (256,)}

with tempfile.TemporaryDirectory(prefix="py-roundtrip-") as tmp:
    base, ft, _ = ld.model_pair(tmp, SHAPES)
    delta = ld.compress(tmp, base, ft)
    daemon = ld.LiveDaemon(tmp, base)
    c = Client(daemon.addr, timeout=20)

    info = c.push("chat", delta)
    d.check(info.name == "chat" and info.num_tensors == len(SHAPES),
            f"push returned {info}")
    d.check(info.container_bytes == os.path.getsize(delta), "container_bytes != file size")
    # The identical container again is OK (a safe retry, nothing written); other
    # contents under the name are ALREADY_EXISTS.
    c.push("chat", delta)
    ld.expect_error(lambda: c.push("chat", open(delta, "rb").read() + b"\0"),
                    grpc.StatusCode.ALREADY_EXISTS, "PutDelta 'chat'")
    c.push("chat", open(delta, "rb").read(), overwrite=True)  # bytes work too

    listed = c.list_tasks()
    d.check([t.name for t in listed.tasks] == ["chat"], f"list_tasks: {listed}")
    base_info = c.get_base()
    d.check(base_info.num_tensors == len(SHAPES) and base_info.path == base, f"get_base: {base_info}")
    full = c.task_info("chat", tensors=True)
    d.check([t.name for t in full.tensors] == sorted(SHAPES), f"task_info tensors: {full.tensors}")
    d.check(full.base_hash == base_info.hash, "task base_hash != the server's base hash")

    # Reference: deltactl pull of the same task.
    ref_path = os.path.join(tmp, "pulled.safetensors")
    ld.deltactl(["pull", "--task", "chat", "--out", ref_path], addr=daemon.addr)
    ref, ref_meta = st.read_file(ref_path)

    got = list(c.stream_weights("chat"))
    d.check([n for n, _ in got] == [r[0] for r in ref], "stream_weights order != deltactl pull")
    for (name, arr), (rname, rdt, rshape, rbuf) in zip(got, ref):
        d.check(arr.shape == rshape and arr.dtype == np.float16, f"{name}: {arr.dtype} {arr.shape}")
        d.check(arr.tobytes() == rbuf.tobytes(), f"{name}: bytes differ from deltactl pull")
    d.check(c.last_stream.tensors == len(SHAPES) and c.last_stream.resumes == 0,
            f"stats {c.last_stream}")
    d.log(f"stream_weights == deltactl pull: {c.last_stream}")
    # A consumer that stops early: the pull stops with it (native: its thread is told to
    # cancel), and the next stream is whole.
    for i, (name, arr) in enumerate(c.stream_weights("chat", chunk_bytes=4096)):
        d.check(name == ref[0][0] and arr.tobytes() == ref[0][3].tobytes(), "first tensor")
        break
    d.check([n for n, _ in c.stream_weights("chat")] == [r[0] for r in ref],
            "stream_weights after an abandoned one")
    # The same through protobuf for every message (the path of messages chunk_view declines).
    fast = _stream.chunk_view
    _stream.chunk_view = lambda raw: None
    try:
        slow = [(n, a.tobytes()) for n, a in c.stream_weights("chat", chunk_bytes=4096)]
    finally:
        _stream.chunk_view = fast
    d.check(slow == [(n, a.tobytes()) for n, a in got], "protobuf path != wire fast path")

    sd = c.load_state_dict("chat")
    for name, _, shape, rbuf in ref:
        t = sd[name]
        d.check(t.dtype == torch.float16 and tuple(t.shape) == shape, f"{name}: {t.dtype}")
        d.check(t.numpy().tobytes() == rbuf.tobytes(), f"load_state_dict {name} differs")

    # dtype conversion on the server and filters: same bytes as deltactl pull --dtype/--include.
    for dt, flag in (("f32", "f32"), ("bf16", "bf16")):
        ref_dt = os.path.join(tmp, f"pulled-{dt}.safetensors")
        ld.deltactl(["pull", "--task", "chat", "--dtype", flag, "--include", "*attn*",
                     "--out", ref_dt], addr=daemon.addr)
        want, _ = st.read_file(ref_dt)
        sd = c.load_state_dict("chat", include="*attn*", dtype=dt)
        d.check(list(sd) == [w[0] for w in want], f"{dt}: names {list(sd)}")
        for name, _, _, wbuf in want:
            t = sd[name]
            raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
            d.check(raw.numpy().tobytes() == wbuf.tobytes(), f"{dt} {name} differs")
    d.log("dtype f32/bf16 with include: == deltactl pull --dtype --include")

    # In place: into a dict of zeroed tensors and into a Module; storage pointers unchanged.
    target = {n: torch.zeros(shape, dtype=torch.float16) for n, shape in SHAPES.items()}
    ptrs = {n: t.data_ptr() for n, t in target.items()}
    stats = c.load_into(target, "chat")
    for name, _, _, rbuf in ref:
        d.check(target[name].data_ptr() == ptrs[name], f"{name}: storage replaced")
        d.check(target[name].numpy().tobytes() == rbuf.tobytes(), f"load_into {name} differs")
    d.log(f"load_into(dict) in place == deltactl pull: {stats}")

    m = torch.nn.Module()
    for n, s in SHAPES.items():
        parent = m
        parts = n.split(".")
        for p in parts[:-1]:
            if not hasattr(parent, p):
                parent.add_module(p, torch.nn.Module())
            parent = getattr(parent, p)
        parent.register_parameter(parts[-1], torch.nn.Parameter(torch.zeros(s)))
    c.load_into(m, "chat", dtype="f32")
    ref32_path = os.path.join(tmp, "pulled-f32-all.safetensors")
    ld.deltactl(["pull", "--task", "chat", "--dtype", "f32", "--out", ref32_path], addr=daemon.addr)
    ref32, _ = st.read_file(ref32_path)
    for name, _, _, rbuf in ref32:
        d.check(m.state_dict()[name].numpy().tobytes() == rbuf.tobytes(), f"module {name} differs")
    d.log("load_into(Module, dtype=f32) == deltactl pull --dtype f32")

    # Pinned: every merged variant this test streamed (f16 all, f32 all, bf16 attn).
    pinned = c.pin("chat")
    elems = {n: int(np.prod(s)) for n, s in SHAPES.items()}
    want = sum(6 * e for e in elems.values()) + sum(2 * e for n, e in elems.items() if "attn" in n)
    d.check(pinned == want, f"pinned {pinned}, want {want}")
    d.check(c.task_info("chat").pinned, "pin: task not pinned")
    c.unpin("chat")
    ld.expect_error(lambda: c.unpin("chat"), grpc.StatusCode.NOT_FOUND, "UnpinTask 'chat'")
    freed = c.delete("chat")
    d.check(freed == os.path.getsize(delta), f"delete freed {freed}")
    ld.expect_error(lambda: c.task_info("chat"), grpc.StatusCode.NOT_FOUND, "GetTask 'chat'")
    c.close()
    d.check(daemon.stop() == 0, "deltaserved did not exit 0 on SIGTERM")
    d.log("PASS: push/list/info/base/pin/unpin/delete; stream_weights, load_state_dict, "
          "load_into bit-identical to deltactl pull")
