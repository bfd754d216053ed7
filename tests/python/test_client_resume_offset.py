"""python_client_resume_offset: a stream cut midway through a tensor when the daemon is
killed (SIGKILL) and started again on the same database resumes at the byte
where it stopped (StreamWeightsRequest.resume_from_index = that tensor,
resume_from_offset = the bytes received): the bytes already received stay
(StreamStats.kept_bytes > 0: not fetched again), the whole tensor's checksum is checked,
and the result is bit-identical to `deltactl pull`. Through stream_weights, load_into,
and load_state_dict with an include filter that skips the tensor after the first one (so
the resume must name the cut tensor, not "the tensor after the last verified one").

The task: a small tensor, a small one the filter skips, one of 48 MiB, a small one. So
that the cut falls inside the 48 MiB tensor whatever the machine's speed, the client
talks to the daemon through a proxy (live_daemon.StallingProxy) that stops forwarding
after 24 MiB of the stream: the client has then received and handed on every message
before that byte and waits for the next one; the daemon is killed and restarted, and the
proxy closes the stalled connection (a daemon killed while the client is busy elsewhere
would drop the connection with the bytes in its buffers: a cut between tensors).

gRPC hands a stream's bytes to the reader from its own buffer, which holds up to the
flow-control window (~16 MiB and more on a loaded loopback), and drops what it holds when
the connection drops. So the proxy closes the stalled connection only once the reader
has drained that buffer: when no thread of this process is runnable any more
(live_daemon.wait_until_blocked). Cut earlier, a slow reader lost the buffered bytes and
resumed far before byte 24 MiB (kept_bytes 3 MiB: a failure seen under load)."""
import tempfile
import threading

import torch

import live_daemon as ld
from live_daemon import d

from deltaserve import Client
from deltaserve import safetensors as st

SHAPES = {"a.small": (64, 64), "b.skipped": (32, 64), "c.big": (4096, 6144),
          "d.tail": (16, 64)}
BIG = 4096 * 6144 * 2
CUT_AT = 24 << 20  # bytes of the stream (HTTP/2 framing included) before the stall
FILTER = ["a.*", "c.*", "d.*"]

with tempfile.TemporaryDirectory(prefix="py-resume-offset-") as tmp:
    base, ft, _ = ld.model_pair(tmp, SHAPES)
    delta = ld.compress(tmp, base, ft)
    daemon = ld.LiveDaemon(tmp, base)
    proxy = ld.StallingProxy(daemon.port)
    c = Client(proxy.addr, timeout=20, stream_timeout=120, reconnect_timeout=20)
    c.push("big", delta)
    ref_path = f"{tmp}/ref.safetensors"
    ld.deltactl(["pull", "--task", "big", "--out", ref_path], addr=daemon.addr)
    ref = {name: buf.tobytes() for name, _, _, buf in st.read_file(ref_path)[0]}
    restarts = [0]
    cutter_error = []  # what went wrong in the cutting thread (d.fail there ends it only)

    def cut_mid_stream():
        """Arms the proxy; a thread waits for the stall, kills the daemon, starts it
        again, waits until the reader has drained gRPC's buffer and makes the proxy
        close the stalled connection. Returns the thread."""
        proxy.arm(CUT_AT)

        def run():
            global daemon
            try:
                if not proxy.stalled.wait(60):
                    return
                daemon.kill()
                restarts[0] += 1
                # On a port of its own choosing (the killed one's, once free, could be
                # taken meanwhile): the proxy forwards new connections there.
                daemon = ld.LiveDaemon(tmp, base, name=f"deltaserved-{restarts[0]}")
                proxy.target_port = daemon.port
                drained = ld.wait_until_blocked(timeout=60)
                d.log(f"stream stalled at byte {CUT_AT}: killed deltaserved, restarted it on "
                      f"port {daemon.port}; reader blocked after "
                      f"{'(timed out)' if drained is None else f'{drained:.2f} s'}; "
                      "the proxy drops the connection")
            except BaseException as e:  # noqa: B036 (SystemExit from d.fail included)
                cutter_error.append(repr(e))
            finally:
                proxy.cut()  # never leave the reader waiting on a stalled connection
        t = threading.Thread(target=run)
        t.start()
        return t

    def check_resumed(what, stats, thread):
        thread.join()
        d.log(f"{what}: {stats}")
        d.check(not cutter_error, f"{what}: restarting the daemon failed: {cutter_error}")
        d.check(proxy.stalled.is_set(), f"{what}: the stream never reached byte {CUT_AT}")
        d.check(stats.resumes >= 1, f"{what}: the stream was not resumed")
        d.check(BIG // 4 < stats.kept_bytes < BIG,
                f"{what}: kept_bytes {stats.kept_bytes}: the resume did not start at the "
                "byte where 'c.big' was cut")

    # 1. stream_weights.
    t = cut_mid_stream()
    got = {name: arr.tobytes() for name, arr in c.stream_weights("big", chunk_bytes=65536)}
    check_resumed("stream_weights", c.last_stream, t)
    d.check(list(got) == list(ref), f"stream_weights names {list(got)}")
    for name, data in got.items():
        d.check(data == ref[name], f"stream_weights {name}: bytes differ from deltactl pull")

    # 2. load_into (the path under test: DELTASERVE_NATIVE).
    target = {n: torch.zeros(s, dtype=torch.float16) for n, s in SHAPES.items()}
    t = cut_mid_stream()
    stats = c.load_into(target, "big")
    check_resumed("load_into", stats, t)
    for name, tensor in target.items():
        d.check(tensor.numpy().tobytes() == ref[name], f"load_into {name} differs")

    # 3. load_state_dict with a filter that skips the tensor after the first one.
    t = cut_mid_stream()
    sd = c.load_state_dict("big", include=FILTER)
    check_resumed("load_state_dict(include)", c.last_stream, t)
    d.check(list(sd) == ["a.small", "c.big", "d.tail"], f"load_state_dict names {list(sd)}")
    for name, tensor in sd.items():
        d.check(tensor.numpy().tobytes() == ref[name], f"load_state_dict {name} differs")
    d.check(daemon.stop() == 0, "deltaserved did not exit 0 on SIGTERM")
    d.log("PASS: streams cut mid-tensor resume at the byte where they stopped, bit-identical")
