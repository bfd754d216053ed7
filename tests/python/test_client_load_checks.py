"""python_client_load_checks: what load_into, load_delta_into and apply_delta refuse or
report, from a new-user trial (both paths: DELTASERVE_NATIVE=1 / 0).

1. A model on the meta device (no storage: a copy into it did nothing, yet the load
   reported 4 tensors): INVALID_ARGUMENT naming the tensor, the device and the fix
   (to_empty); so are sparse, quantized and FakeTensor tensors. Reading a meta state
   dict (LocalBase, safetensors.write_file) is INVALID_ARGUMENT too; a sparse one is
   read dense. Parameters that require
   grad and inference-mode tensors load (the staged copy of an inference tensor too).
2. An include= filter that matches nothing: NOT_FOUND "no tensor matches the filter"
   from load_into, load_state_dict and stream_weights, as deltactl pull says it.
3. strict=False as torch's: a model lacking 'fc2.bias' and holding 'extra.weight' gets
   the 3 others; missing_keys / unexpected_keys say which; delta loads the same.
4. atomic=True: a stream that fails on its 2nd tensor leaves the target all old (the
   default leaves the 1st tensor new): an in-process server with a bad checksum.
5. load_delta_into / apply_delta return a DeltaStats: == the tensor count (an int, as
   before) with bytes = the container's size."""
from concurrent import futures
import tempfile

import grpc
import numpy as np
import torch

import live_daemon as ld
from live_daemon import d

from deltaserve import Client, DeltaStats, LocalBase, apply_delta
from deltaserve import _stream
from deltaserve import safetensors as st
from deltaserve.torch_io import copy_staged
from deltaserve.v1 import delta_service_pb2 as pb
from deltaserve.v1 import delta_service_pb2_grpc as pb_grpc

C = grpc.StatusCode


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(256, 128)
        self.fc2 = torch.nn.Linear(128, 64)


SHAPES = {n: tuple(t.shape) for n, t in Net().state_dict().items()}


def snapshot(model):
    return {n: t.clone() for n, t in model.state_dict().items()}


def equal(a, b):
    return all(torch.equal(a[n], b[n]) for n in b)


with tempfile.TemporaryDirectory(prefix="py-load-checks-") as tmp:
    base, ft, _ = ld.model_pair(tmp, SHAPES)
    delta = ld.compress(tmp, base, ft)
    daemon = ld.LiveDaemon(tmp, base)
    c = Client(daemon.addr, timeout=30)
    c.push("mlp-ft", delta)
    ref = c.load_state_dict("mlp-ft")
    local = LocalBase(base)
    container = c.fetch_delta("mlp-ft")

    # 1. The meta device: refused, before anything is streamed.
    meta = Net().to("meta").half()
    for label, call in [
            ("load_into", lambda: c.load_into(meta, "mlp-ft")),
            ("load_into atomic", lambda: c.load_into(meta, "mlp-ft", atomic=True)),
            ("load_into strict=False", lambda: c.load_into(meta, "mlp-ft", strict=False)),
            ("load_delta_into", lambda: c.load_delta_into(meta, "mlp-ft", local)),
            ("apply_delta", lambda: apply_delta(meta, container, local))]:
        d.log(label)
        ld.expect_error(call, C.INVALID_ARGUMENT, "tensor 'fc1.bias' is on the meta device",
                        "to_empty(device='cpu')", "load_state_dict")
    d.check(all(p.is_meta for p in meta.parameters()), "the meta model changed")
    # Materialised as the message says: the load writes real values.
    meta.to_empty(device="cpu")
    stats = c.load_into(meta, "mlp-ft")
    d.check(stats.tensors == 4 and equal(meta.state_dict(), ref),
            f"load_into after to_empty: {stats}")
    # Other tensors a byte copy cannot fill.
    sparse = {n: torch.zeros(s, dtype=torch.float16) for n, s in SHAPES.items()}
    sparse["fc2.bias"] = torch.zeros(64).to_sparse()
    ld.expect_error(lambda: c.load_into(sparse, "mlp-ft"), C.INVALID_ARGUMENT,
                    "tensor 'fc2.bias' has layout torch.sparse_coo")
    d.check(not sparse["fc1.weight"].any(), "a refused load wrote fc1.weight")
    quant = dict(sparse, **{"fc2.bias": torch.quantize_per_tensor(
        torch.zeros(64), 0.1, 0, torch.quint8)})
    ld.expect_error(lambda: c.load_into(quant, "mlp-ft"), C.INVALID_ARGUMENT,
                    "tensor 'fc2.bias' is quantized (torch.quint8)")
    ld.expect_error(lambda: apply_delta(quant, container, local), C.INVALID_ARGUMENT,
                    "tensor 'fc2.bias' is quantized")
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        fake = torch.zeros(64, dtype=torch.float16)
    ld.expect_error(lambda: c.load_into(dict(sparse, **{"fc2.bias": fake}), "mlp-ft"),
                    C.INVALID_ARGUMENT, "tensor 'fc2.bias' is a FakeTensor")
    # Reading a state dict (LocalBase, safetensors.write_file): a meta tensor has no data
    # (it failed with torch's NotImplementedError); a sparse one is read dense.
    base_sd = st.load_file(base)
    ld.expect_error(lambda: LocalBase({n: t.to("meta") for n, t in base_sd.items()}),
                    C.INVALID_ARGUMENT, "tensor 'fc1.bias' is on the meta device: it has no "
                    "data to read")
    ld.expect_error(lambda: st.write_file(f"{tmp}/meta.safetensors", {"m": torch.zeros(
        2, device="meta")}), C.INVALID_ARGUMENT, "tensor 'm' is on the meta device")
    sparse_base = dict(base_sd, **{"fc2.bias": base_sd["fc2.bias"].to_sparse()})
    d.check(LocalBase(sparse_base).hash == local.hash, "LocalBase of a sparse tensor: another hash")
    # Parameters that require grad (a fresh Net) and inference-mode tensors: loaded.
    net = Net().half()
    d.check(net.fc1.weight.requires_grad, "Net parameters require grad")
    c.load_into(net, "mlp-ft")
    d.check(equal(net.state_dict(), ref), "load_into a Net with requires_grad parameters")
    with torch.inference_mode():
        inf = {n: torch.zeros(s, dtype=torch.float16) for n, s in SHAPES.items()}
    c.load_into(inf, "mlp-ft")
    d.check(equal(inf, ref), "load_into inference-mode tensors")
    # The staged copy (the path of a cuda tensor: Tensor.copy_) into an inference tensor.
    with torch.inference_mode():
        staged_dst = torch.zeros(64, dtype=torch.float16)
    copy_staged(staged_dst, ref["fc2.bias"].numpy().view(np.uint8).copy())
    d.check(torch.equal(staged_dst, ref["fc2.bias"]), "copy_staged into an inference tensor")

    # 2. A filter matching nothing: NOT_FOUND, nothing loaded.
    m = {n: torch.zeros(s, dtype=torch.float16) for n, s in SHAPES.items()}
    ld.expect_error(lambda: c.load_into(m, "mlp-ft", include=["fc1*.weigth"]), C.NOT_FOUND,
                    "StreamWeights 'mlp-ft': no tensor matches the filter",
                    "include=['fc1*.weigth']", "the task has 4 tensors, e.g. 'fc1.bias', 'fc1.weight', 'fc2.bias'",
                    "nothing loaded")
    d.check(not any(t.any() for t in m.values()), "a load matching nothing wrote")
    ld.expect_error(lambda: c.load_state_dict("mlp-ft", include=["nomatch"]), C.NOT_FOUND,
                    "no tensor matches the filter (include=['nomatch'])")
    ld.expect_error(lambda: list(c.stream_weights("mlp-ft", include_regex="fc9.*")),
                    C.NOT_FOUND, "no tensor matches the filter (include_regex='fc9.*')")
    got = c.load_state_dict("mlp-ft", include="fc1.*")
    d.check(sorted(got) == ["fc1.bias", "fc1.weight"], f"include='fc1.*' gave {sorted(got)}")

    # 3. strict=False: names on one side only are skipped and reported.
    partial = {n: torch.zeros(s, dtype=torch.float16) for n, s in SHAPES.items()
               if n != "fc2.bias"}
    partial["extra.weight"] = torch.ones(3, dtype=torch.float16)
    ld.expect_error(lambda: c.load_into(partial, "mlp-ft"), C.INVALID_ARGUMENT,
                    "1 tensor of task 'mlp-ft' not in the model: 'fc2.bias'",
                    "strict=False skips them")
    for atomic in (False, True):
        for t in partial.values():
            t.zero_()
        partial["extra.weight"].fill_(1)
        stats = c.load_into(partial, "mlp-ft", strict=False, atomic=atomic)
        d.log(f"strict=False atomic={atomic}: {stats}")
        d.check(stats.tensors == 3, f"strict=False loaded {stats.tensors} tensors, want 3")
        d.check(stats.missing_keys == ["extra.weight"], f"missing_keys {stats.missing_keys}")
        d.check(stats.unexpected_keys == ["fc2.bias"],
                f"unexpected_keys {stats.unexpected_keys}")
        d.check(all(torch.equal(partial[n], ref[n]) for n in partial if n in ref),
                "strict=False values")
        d.check(torch.equal(partial["extra.weight"], torch.ones(3, dtype=torch.float16)),
                "strict=False touched extra.weight")
    stats = c.load_into(partial, "mlp-ft", strict=False, include=["fc1.*"])
    d.check((stats.tensors, stats.missing_keys, stats.unexpected_keys) ==
            (2, ["fc2.weight", "extra.weight"], []), f"strict=False + include: {stats}")
    # A long list of keys shows its first 5 in the repr.
    d.check(_stream._short([f"k{i}" for i in range(7)]) ==
            "['k0', 'k1', 'k2', 'k3', 'k4', ... 7 in all]", "StreamStats repr of 7 keys")
    ld.expect_error(lambda: c.load_into({"x": torch.zeros(1)}, "mlp-ft", strict=False),
                    C.INVALID_ARGUMENT, "none of the 4 tensors of task 'mlp-ft' is in the model")
    # Shapes still have to match, as with torch.
    bad = dict(partial, **{"fc1.bias": torch.zeros(7, dtype=torch.float16)})
    ld.expect_error(lambda: c.load_into(bad, "mlp-ft", strict=False), C.INVALID_ARGUMENT,
                    "tensor 'fc1.bias': the model has shape [7], the task has [128]")
    for label, call in [
            ("apply_delta", lambda p: apply_delta(p, container, local, strict=False)),
            ("apply_delta atomic", lambda p: apply_delta(p, container, local, strict=False,
                                                         atomic=True)),
            ("load_delta_into", lambda p: c.load_delta_into(p, "mlp-ft", local, strict=False)),
            ("load_delta_into atomic", lambda p: c.load_delta_into(p, "mlp-ft", local,
                                                                   strict=False, atomic=True))]:
        for t in partial.values():
            t.zero_()
        partial["extra.weight"].fill_(1)
        r = call(partial)
        d.log(f"{label} strict=False: {r!r}")
        d.check(torch.equal(partial["extra.weight"], torch.ones(3, dtype=torch.float16)),
                f"{label} touched extra.weight")
        d.check(isinstance(r, DeltaStats) and r == 3 and r.tensors == 3,
                f"{label}: {r!r}, want 3 tensors")
        d.check((r.missing_keys, r.unexpected_keys) == (["extra.weight"], ["fc2.bias"]),
                f"{label} keys: {r!r}")
        d.check(r.bytes == len(container), f"{label} bytes {r.bytes} != {len(container)}")
        d.check(all(torch.equal(partial[n], ref[n]) for n in partial if n in ref),
                f"{label} strict=False values")

    # 5. The DeltaStats of a whole load: an int equal to the tensor count.
    whole = Net().half()
    n = c.load_delta_into(whole, "mlp-ft", local)
    d.check(n == 4 and isinstance(n, int) and n.missing_keys == [] and n.bytes == len(container),
            f"load_delta_into returned {n!r}")
    d.check(equal(whole.state_dict(), ref), "load_delta_into values")
    d.check(apply_delta(whole, container, local, atomic=True) == 4, "apply_delta atomic count")
    d.check(equal(whole.state_dict(), ref), "apply_delta atomic values")
    daemon.stop()

    # 4. atomic: a server whose 2nd tensor fails its checksum.
    A, B = bytes(range(256)) * 4, bytes(range(255, -1, -1)) * 4

    class SecondBad(pb_grpc.DeltaServiceServicer):
        def GetTask(self, request, context):
            return pb.TaskInfo(name="t", tensors=[
                pb.TensorSummary(name="a", dtype=pb.DTYPE_U8, shape=[1024], index=0),
                pb.TensorSummary(name="b", dtype=pb.DTYPE_U8, shape=[1024], index=1)])

        def StreamWeights(self, request, context):
            yield pb.StreamWeightsResponse(begin=pb.StreamBegin(num_tensors=2, total_bytes=2048))
            for i, (name, data, good) in enumerate([("a", A, True), ("b", B, False)]):
                digest = _stream.xxhash.xxh3_64_intdigest(data) ^ (0 if good else 1)
                yield pb.StreamWeightsResponse(header=pb.TensorHeader(
                    name=name, dtype=pb.DTYPE_U8, shape=[1024], byte_length=1024, index=i,
                    xxh3_64=digest))
                yield pb.StreamWeightsResponse(chunk=pb.TensorChunk(offset=0, data=data))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_DeltaServiceServicer_to_server(SecondBad(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    bad_client = Client(f"127.0.0.1:{port}", timeout=10)
    for atomic in (False, True):
        target = {"a": torch.zeros(1024, dtype=torch.uint8),
                  "b": torch.zeros(1024, dtype=torch.uint8)}
        ld.expect_error(lambda: bad_client.load_into(target, "t", atomic=atomic), C.DATA_LOSS,
                        "tensor 'b' checksum mismatch")
        a_new = target["a"].numpy().tobytes() == A
        d.log(f"atomic={atomic}: after the error 'a' is {'new' if a_new else 'old'}")
        d.check(a_new != atomic, f"atomic={atomic}: 'a' is {'new' if a_new else 'old'}")
        # In place, the tensor whose checksum failed holds its unverified bytes.
        b_bytes = target["b"].numpy().tobytes()
        d.check(b_bytes == (bytes(1024) if atomic else B), f"atomic={atomic}: 'b' holds "
                f"{'zeros' if b_bytes == bytes(1024) else 'other bytes'}")
    server.stop(0)
    d.log("PASS: meta/sparse/quantized/fake tensors refused, empty filters NOT_FOUND, "
          "strict=False reports missing/unexpected keys, atomic loads all or nothing")
