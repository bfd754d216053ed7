"""python_decode: worker-side decode through the C++ codec (deltaserve._codec).
fetch_delta (StreamDelta) returns the pushed container's exact bytes; apply_delta
decodes + merges it in place into a model and gives the bytes StreamWeights sends
(recorded dtype and f32), with a LocalBase from the base file and from a state dict
(hash == GetBase); switching the same model from task A to task B reuses the LocalBase;
Client.load_delta_into (records decoded while the container arrives) gives the same
bytes; a delta made against another base is FAILED_PRECONDITION and a shape mismatch
INVALID_ARGUMENT, both before anything is written (both paths); a forged container (a
record "unchanged" in another dtype than its base tensor's) is refused at push and by
apply_delta. One tensor (4096 x 3072) is large
enough to be merged in parts on several threads."""
import os
import tempfile

import grpc
import torch

import live_daemon as ld
from forged_container import forge, unchanged
from live_daemon import d

from deltaserve import Client, LocalBase, apply_delta
from deltaserve import safetensors as st

SHAPES = {"embed.weight": (4096, 3072), "layers.0.attn.weight": (256, 512),
          "layers.0.mlp.weight": (512, 256), "layers.0.mlp.bias": (256,)}


def zeros(dtype=torch.float16):
    return {n: torch.zeros(s, dtype=dtype) for n, s in SHAPES.items()}


def same_as_stream(c, task, model, dtype=None):
    for name, arr in c.stream_weights(task, dtype=dtype):
        d.check(model[name].numpy().tobytes() == arr.tobytes(),
                f"{task} {name}: apply_delta bytes != StreamWeights")


with tempfile.TemporaryDirectory(prefix="py-decode-") as tmp:
    base, ft, _ = ld.model_pair(tmp, SHAPES, seed=3)
    delta_a = ld.compress(tmp, base, ft, "a.dds")
    # A second finetune of the same base.
    b_arrays = {n: (t.float() * 1.01 + 0.002).half() for n, t in st.load_file(ft).items()}
    ft_b = f"{tmp}/ft_b.safetensors"
    st.write_file(ft_b, dict(sorted(b_arrays.items())))
    delta_b = ld.compress(tmp, base, ft_b, "b.dds")
    daemon = ld.LiveDaemon(tmp, base)
    c = Client(daemon.addr, timeout=30)
    c.push("a", delta_a)
    c.push("b", delta_b)

    container = c.fetch_delta("a")
    d.check(container == open(delta_a, "rb").read(), "fetch_delta != the pushed container")
    local = LocalBase(base)
    d.check(local.hash == c.get_base().hash, f"LocalBase hash {local.hash} != GetBase")
    model = zeros()
    d.check(apply_delta(model, container, local, threads=2) == len(SHAPES), "tensor count")
    same_as_stream(c, "a", model)
    d.log("apply_delta(file base) == StreamWeights, bit for bit")

    # Switch the same model to task B; the LocalBase stays (no reload of the base).
    ptr = model["embed.weight"].data_ptr()
    apply_delta(model, c.fetch_delta("b"), local, threads=2)
    same_as_stream(c, "b", model)
    d.check(model["embed.weight"].data_ptr() == ptr, "storage replaced")
    d.log("switch a -> b in place == StreamWeights of b")

    # load_delta_into: each record decoded as soon as it has arrived; the same bytes,
    # in place, also when switching tasks and converting to f32.
    streamed = zeros()
    ptr = streamed["embed.weight"].data_ptr()
    d.check(c.load_delta_into(streamed, "a", local, threads=2) == len(SHAPES), "tensor count")
    same_as_stream(c, "a", streamed)
    c.load_delta_into(streamed, "b", local)
    same_as_stream(c, "b", streamed)
    d.check(streamed["embed.weight"].data_ptr() == ptr, "load_delta_into replaced storage")
    s32 = zeros(torch.float32)
    c.load_delta_into(s32, "a", local, dtype="f32", threads=1)
    same_as_stream(c, "a", s32, dtype="f32")
    d.log("load_delta_into (a, b, f32) == StreamWeights, bit for bit")
    # A byte flipped on the way (in the middle of the container: the embed record):
    # DATA_LOSS, from the record's checksum (that record is not merged) or from the
    # whole container's XXH3-64, whichever is checked first.
    real_stub = c._stub

    class Flipping:
        def StreamDelta(self, request, **kw):
            for msg in real_stub.StreamDelta(request, **kw):
                at = msg.total_bytes // 2 - msg.offset  # the middle of the container
                if 0 <= at < len(msg.data):
                    data = bytearray(msg.data)
                    data[at] ^= 0x40
                    msg.data = bytes(data)
                yield msg

        def __getattr__(self, name):
            return getattr(real_stub, name)

    c._stub = Flipping()
    try:
        e = ld.expect_error(lambda: c.load_delta_into(zeros(), "a", local),
                            grpc.StatusCode.DATA_LOSS, "StreamDelta 'a': ")
        # Whichever check comes first: the record's (merge thread) or the whole stream's.
        size = os.path.getsize(delta_a)
        d.check("tensor 'embed.weight': record checksum mismatch" in e.message or
                f"received {size} of {size} bytes, XXH3-64" in e.message, f"message: {e}")
    finally:
        c._stub = real_stub

    # A base held as a state dict (copied into the LocalBase), output converted to f32.
    mem = LocalBase(st.load_file(base))
    d.check(mem.hash == local.hash, "state-dict LocalBase hash differs")
    m32 = zeros(torch.float32)
    apply_delta(m32, container, mem, dtype="f32", threads=1)
    same_as_stream(c, "a", m32, dtype="f32")
    d.log("apply_delta(state-dict base, f32, 1 thread) == StreamWeights --dtype f32")

    # A tied head (issue 11, reproduction 3): a base with model.embed_tokens.weight only,
    # a finetune that also saved lm_head.weight. apply_delta merges
    # the head against the base's embedding (header map deltaserve.base_alias), bit for
    # bit what StreamWeights sends.
    tdir = f"{tmp}/tied"
    os.mkdir(tdir)
    tb, tf, _ = ld.model_pair(tdir, {"model.embed_tokens.weight": (512, 256)}, seed=5)
    tied = dict(st.load_file(tf))
    tied["lm_head.weight"] = (tied["model.embed_tokens.weight"].float() * 1.01).half()
    st.write_file(tf, dict(sorted(tied.items())))
    delta_t = ld.compress(tdir, tb, tf, "tied.dds")
    daemon_t = ld.LiveDaemon(tdir, tb, name="deltaserved_tied")
    ct = Client(daemon_t.addr, timeout=30)
    d.check(ct.push("tied", delta_t).metadata["deltaserve.base_alias"] ==
            '{"lm_head.weight":"model.embed_tokens.weight"}', "tie map not in the header")
    mt = {n: torch.zeros(t.shape, dtype=torch.float16) for n, t in tied.items()}
    apply_delta(mt, ct.fetch_delta("tied"), LocalBase(tb), threads=2)
    same_as_stream(ct, "tied", mt)
    mt = {n: torch.zeros(t.shape, dtype=torch.float16) for n, t in tied.items()}
    ct.load_delta_into(mt, "tied", LocalBase(tb))
    same_as_stream(ct, "tied", mt)
    d.check(daemon_t.stop() == 0, "tied daemon did not exit 0")
    d.log("tied lm_head: apply_delta == StreamWeights")

    # Wrong base: refused before anything is written.
    other = {n: t.clone() for n, t in st.load_file(base).items()}
    other["layers.0.mlp.bias"][0] += 1
    wrong = LocalBase(other)
    fresh = zeros()
    ld.expect_error(lambda: apply_delta(fresh, container, wrong), grpc.StatusCode.FAILED_PRECONDITION,
                    "delta made against base " + local.hash, wrong.hash)
    d.check(all(bool((t == 0).all()) for t in fresh.values()), "wrong base: target written")
    ld.expect_error(lambda: c.load_delta_into(fresh, "a", wrong), grpc.StatusCode.FAILED_PRECONDITION,
                    "StreamDelta 'a': delta made against base " + local.hash, wrong.hash)
    d.check(all(bool((t == 0).all()) for t in fresh.values()), "wrong base: target written")
    bad = zeros()
    bad["layers.0.attn.weight"] = torch.zeros((512, 256), dtype=torch.float16)
    ld.expect_error(lambda: apply_delta(bad, container, local), grpc.StatusCode.INVALID_ARGUMENT,
                    "tensor 'layers.0.attn.weight'", "the task has [256, 512]")
    d.check(all(bool((t == 0).all()) for t in bad.values()), "bad shape: target written")
    ld.expect_error(lambda: c.load_delta_into(bad, "a", local), grpc.StatusCode.INVALID_ARGUMENT,
                    "tensor 'layers.0.attn.weight'", "the task has [256, 512]")
    d.check(all(bool((t == 0).all()) for t in bad.values()), "bad shape: target written")
    ld.expect_error(lambda: apply_delta(zeros(), b"not a container", local),
                    grpc.StatusCode.DATA_LOSS)
    # A forged container (the second new-user trial's leak): a record claims "unchanged"
    # in I16 over its F16 base tensor, checksums resealed. Refused by the server at push
    # and by apply_delta before anything is written.
    forged = forge(container, b"layers.0.attn.weight", unchanged(6))  # 6: I16
    why = "tensor 'layers.0.attn.weight': unchanged record has dtype I16, its base tensor is F16"
    ld.expect_error(lambda: c.push("forged", forged), grpc.StatusCode.INVALID_ARGUMENT, why)
    ld.expect_error(lambda: c.task_info("forged"), grpc.StatusCode.NOT_FOUND)
    fresh = zeros()
    ld.expect_error(lambda: apply_delta(fresh, forged, local), grpc.StatusCode.INVALID_ARGUMENT,
                    why)
    d.check(all(bool((t == 0).all()) for t in fresh.values()), "forged: target written")
    ld.expect_error(lambda: LocalBase(f"{tmp}/missing.safetensors"), grpc.StatusCode.NOT_FOUND)
    d.check(daemon.stop() == 0, "deltaserved did not exit 0 on SIGTERM")
    d.log("PASS: fetch_delta + apply_delta bit-identical to StreamWeights; wrong base refused")
