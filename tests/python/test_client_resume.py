"""python_client_resume: a stream survives the daemon being killed (SIGKILL) and started
again on the same port and database mid-stream. stream_weights resumes from the tensor
after the last verified one (StreamWeightsRequest.resume_from_index; a cut within a
tensor resumes at that byte: python_client_resume_offset) and yields every tensor
exactly once, bit-identical to `deltactl pull`; load_into likewise. Without a
daemon coming back, the resume attempts end in UNAVAILABLE after retries x
reconnect_timeout, saying so; an outage longer than one reconnect_timeout but within
that total is waited out (new-user trial: a 25 s outage failed 10 s after the drop with
the default retries=3 x reconnect_timeout=10 s)."""
import tempfile
import threading
import time

import grpc
import torch

import live_daemon as ld
from live_daemon import d

from deltaserve import Client
from deltaserve import safetensors as st

# 32 tensors of 2 MiB (fp16): 64 MiB, well beyond what the sockets and gRPC's
# flow-control windows buffer (~16 MiB at most on loopback), so a daemon killed after
# the first tensor always drops the stream, even when the reader is slow.
SHAPES = {f"layers.{i:02d}.weight": (1024, 1024) for i in range(32)}

with tempfile.TemporaryDirectory(prefix="py-resume-") as tmp:
    base, ft, _ = ld.model_pair(tmp, SHAPES)
    delta = ld.compress(tmp, base, ft)
    daemon = ld.LiveDaemon(tmp, base)
    port = daemon.port
    c = Client(daemon.addr, timeout=20, stream_timeout=120, reconnect_timeout=20)
    c.push("big", delta)

    # 1. stream_weights: kill after the first tensor, restart, keep reading.
    got = []
    restarted = None
    for name, arr in c.stream_weights("big", chunk_bytes=16384):
        got.append((name, arr.tobytes()))
        if len(got) == 1:
            daemon.kill()
            d.log(f"killed deltaserved after tensor {name}; restarting on port {port}")
            restarted = ld.LiveDaemon(tmp, base, port=port, name="deltaserved-2")
    stats = c.last_stream
    d.log(f"stream after restart: {stats}")
    d.check(stats.resumes >= 1, "the stream never dropped: the kill came too late to test resume")
    ref_path = f"{tmp}/ref.safetensors"
    ld.deltactl(["pull", "--task", "big", "--out", ref_path], addr=restarted.addr)
    ref, _ = st.read_file(ref_path)
    d.check([n for n, _ in got] == [r[0] for r in ref],
            f"names after resume: {len(got)} tensors, want {len(ref)} in container order")
    for (name, data), r in zip(got, ref):
        d.check(data == r[3].tobytes(), f"{name}: bytes differ from deltactl pull after resume")
    d.check(stats.tensors == len(SHAPES), f"tensors counted {stats.tensors}")

    # 2. load_into, then load_state_dict: the same with the model's storage, then a
    # fresh state dict, as destination; the kill comes from the progress callback.
    def kill_after_first(label):
        seen = []

        def progress(name):
            seen.append(name)
            if len(seen) == 1:
                globals()["daemon"].kill()
                globals()["daemon"] = ld.LiveDaemon(tmp, base, port=port, name=label)
        return progress

    daemon = restarted
    target = {n: torch.zeros(s, dtype=torch.float16) for n, s in SHAPES.items()}
    stats = c.load_into(target, "big", progress=kill_after_first("deltaserved-3"))
    d.log(f"load_into after restart: {stats}")
    d.check(stats.resumes >= 1, "load_into: the stream never dropped")
    d.check(stats.tensors == len(SHAPES), f"load_into: tensors counted {stats.tensors}")
    for name, _, _, rbuf in ref:
        d.check(target[name].numpy().tobytes() == rbuf.tobytes(), f"load_into {name} differs")
    sd = c.load_state_dict("big", progress=kill_after_first("deltaserved-4"))
    stats = c.last_stream
    d.log(f"load_state_dict after restart: {stats}")
    d.check(stats.resumes >= 1, "load_state_dict: the stream never dropped")
    d.check(list(sd) == [r[0] for r in ref], f"load_state_dict names after resume: {list(sd)}")
    for name, _, _, rbuf in ref:
        d.check(sd[name].numpy().tobytes() == rbuf.tobytes(), f"load_state_dict {name} differs")

    # 3. No daemon comes back: bounded retries, then UNAVAILABLE.
    c2 = Client(daemon.addr, timeout=20, retries=2, reconnect_timeout=1)

    def no_return():
        for i, _ in enumerate(c2.stream_weights("big", chunk_bytes=16384)):
            if i == 0:
                daemon.kill()

    began = time.monotonic()
    ld.expect_error(no_return, grpc.StatusCode.UNAVAILABLE, "StreamWeights 'big'",
                    "the server did not come back within",
                    "(2 of 2 retries used, each waiting up to 1.0 s)")
    waited = time.monotonic() - began
    d.check(waited >= 1.9, f"gave up after {waited:.1f} s, before 2 retries x 1 s")
    d.check(c2.last_stream.resumes == 1, f"resumes {c2.last_stream.resumes}")
    # The same through load_state_dict (the path under test): a daemon up again, killed
    # after the first tensor for good.
    daemon = ld.LiveDaemon(tmp, base, port=port, name="deltaserved-5")
    c3 = Client(daemon.addr, timeout=20, retries=2, reconnect_timeout=1)
    ld.expect_error(lambda: c3.load_state_dict("big", progress=lambda name: daemon.kill()),
                    grpc.StatusCode.UNAVAILABLE, "StreamWeights 'big'",
                    "(2 of 2 retries used, each waiting up to 1.0 s)")
    d.check(c3.last_stream.resumes == 1, f"load_state_dict resumes {c3.last_stream.resumes}")

    # 4. An outage of more than one reconnect_timeout (1 s), within retries x
    # reconnect_timeout (10 x 1 s): the daemon comes back >= 2.5 s after the kill (a
    # thread restarts it) and the load completes, resumed, with the right bytes.
    daemon = ld.LiveDaemon(tmp, base, port=port, name="deltaserved-6")
    c4 = Client(daemon.addr, timeout=20, retries=10, reconnect_timeout=1)
    outage = {}

    def restart_later():
        time.sleep(2.5)
        globals()["daemon"] = ld.LiveDaemon(tmp, base, port=port, name="deltaserved-7")
        outage["seconds"] = time.monotonic() - outage["killed"]

    def kill_once(name):
        if "killed" not in outage:
            daemon.kill()
            outage["killed"] = time.monotonic()
            outage["thread"] = threading.Thread(target=restart_later, daemon=True)
            outage["thread"].start()

    sd = c4.load_state_dict("big", progress=kill_once)
    outage["thread"].join()
    d.log(f"outage of {outage['seconds']:.1f} s waited out: {c4.last_stream}")
    d.check(outage["seconds"] > 2.0, f"the outage lasted {outage['seconds']:.1f} s only")
    d.check(c4.last_stream.resumes >= 1, "the outage did not drop the stream")
    for name, _, _, rbuf in ref:
        d.check(sd[name].numpy().tobytes() == rbuf.tobytes(), f"after the outage {name} differs")
    d.log("PASS: streams resume after the daemon is killed and restarted; give up with "
          "UNAVAILABLE when it does not come back")
