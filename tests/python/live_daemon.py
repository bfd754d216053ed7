"""Helpers of the Python client tests (tests/python/test_*.py): a live deltaserved on
port 0 (the port it picked is read from its "serving ... port=N" log line), deltactl,
and synthetic models. Built on tests/deploy/deploy_lib.py (processes, skips, checks).

Environment (set by tests/python/CMakeLists.txt): DELTASERVED_BIN, DELTACTL_BIN,
DELTASERVE_SOURCE_DIR, and PYTHONPATH holding the built package (<build>/python).
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy"))
import deploy_lib as d  # noqa: E402

import numpy as np  # noqa: E402

try:
    from deltaserve import safetensors as st  # noqa: E402
except ImportError as e:
    d.skip(f"the deltaserve package is not importable ({e}); build target deltaserve_python "
           "and install python3-grpcio python3-protobuf python3-xxhash")


# The path of Client.load_state_dict / load_into under test (tests/python/CMakeLists.txt
# runs those tests twice): DELTASERVE_NATIVE=1 the C++ client (deltaserve._pull, which
# must then be there), 0 grpcio.
if os.environ.get("DELTASERVE_NATIVE") == "1":
    from deltaserve import _native  # noqa: E402
    d.check(_native.available(), "DELTASERVE_NATIVE=1 but deltaserve._pull is not importable")
    d.log("load_state_dict / load_into path: the C++ client (deltaserve._pull)")
elif os.environ.get("DELTASERVE_NATIVE") == "0":
    d.log("load_state_dict / load_into path: grpcio (deltaserve._stream)")


def model_pair(directory, shapes, seed=3, dtype=np.float16):
    """A synthetic base and finetuned model {name: shape}: base ~ N(0, 0.05), finetuned =
    base + a smooth delta (DCT-friendly) for 2-D tensors and a small one for 1-D.
    Returns (base_path, finetuned_path, finetuned arrays)."""
    rng = np.random.default_rng(seed)
    base, ft = {}, {}
    for name, shape in shapes.items():
        b = rng.normal(0, 0.05, size=shape).astype(np.float32)
        if len(shape) >= 2:
            r = np.arange(shape[0])[:, None] % 7 - 3
            c = np.arange(shape[-1])[None, :] % 5 - 2
            delta = (0.004 * r + 0.002 * c).reshape([shape[0]] + [1] * (len(shape) - 2) + [shape[-1]])
            f = b + delta + rng.normal(0, 0.0005, size=shape).astype(np.float32)
        else:
            f = b + 0.001
        base[name], ft[name] = b.astype(dtype), f.astype(dtype)
    bp, fp = os.path.join(directory, "base.safetensors"), os.path.join(directory, "ft.safetensors")
    st.write_file(bp, dict(sorted(base.items())), {"format": "pt"})
    st.write_file(fp, dict(sorted(ft.items())), {"format": "pt"})
    return bp, fp, ft


class LiveDaemon:
    """deltaserved --listen 127.0.0.1:<port or 0> on `base` with its RocksDB in `db`."""

    def __init__(self, tmp, base, db=None, port=0, config=None, extra=(), name="deltaserved"):
        self.bin = d.need_binary("DELTASERVED_BIN", "deltaserved")
        self.tmp, self.base = tmp, base
        self.db = db or os.path.join(tmp, "db")
        argv = [self.bin, "--base", base, "--db", self.db, "--listen", f"127.0.0.1:{port}",
                "--metrics-listen", "", "--workers", "2", "--drain-seconds", "2"]
        if config:
            argv += ["--config", config]
        self.argv = argv + list(extra)
        self.log_path = os.path.join(tmp, name + ".log")
        self.daemon = d.Daemon(self.argv, self.log_path, env=d.clean_env())
        self.port = d.wait_until(self._port, 30, "deltaserved 'serving' log line", self.daemon)
        self.addr = f"127.0.0.1:{self.port}"

    def _port(self):
        m = re.search(r"\bserving\b.*\bport=(\d+)", self.daemon.log_text())
        return int(m.group(1)) if m else None

    def kill(self):
        """SIGKILL (a crash: no drain)."""
        self.daemon.proc.kill()
        self.daemon.proc.wait()

    def stop(self):
        code = self.daemon.terminate(20)
        self.daemon.stop()
        return code


def deltactl(args, addr=None, token=None, timeout=60):
    argv = [d.need_binary("DELTACTL_BIN", "deltactl")] + args
    if addr:
        argv[2:2] = ["--server", addr] + (["--token", token] if token else [])
    return d.run(argv, timeout=timeout, env=d.clean_env(), what="deltactl " + args[0])


def compress(tmp, base, ft, name="task.dds"):
    out = os.path.join(tmp, name)
    # Delta-DCT: the fast encoder (codec v2, deltactl's default, takes longer).
    deltactl(["compress", "--codec", "dct", "--base", base, "--finetuned", ft, "--out", out])
    return out


def expect_error(fn, code, *substrings):
    """Runs fn(); it must raise DeltaserveError with `code` and every substring in its
    message. Returns the error."""
    from deltaserve import DeltaserveError
    try:
        fn()
    except DeltaserveError as e:
        d.check(e.code == code, f"expected {code.name}, got {e}")
        for s in substrings:
            d.check(s in e.message, f"expected {s!r} in the message: {e}")
        d.log(f"ok: {e}")
        return e
    d.fail(f"expected DeltaserveError {code.name}, got no error")


def wait(seconds):
    time.sleep(seconds)


def _runnable_threads(exclude):
    """Native ids of this process's threads in state R (running or waiting for a CPU),
    but `exclude`."""
    busy = []
    for tid in os.listdir("/proc/self/task"):
        if int(tid) == exclude:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # the thread ended meanwhile
        if state == "R":
            busy.append(int(tid))
    return busy


def wait_until_blocked(timeout=60.0, quiet_polls=10, interval=0.05):
    """Waits until every other thread of this process is blocked (no thread runnable in
    `quiet_polls` consecutive looks, `interval` s apart): a reader of a stalled stream
    has then handed on everything gRPC had buffered (up to its flow-control window,
    ~16 MiB and more on a loaded loopback) and waits for the next byte. A starved
    thread still counts as runnable (state R), so a loaded machine only makes this
    take longer. Returns the seconds it took, or None after `timeout`."""
    import threading
    me, start = threading.get_native_id(), time.monotonic()
    quiet = 0
    while quiet < quiet_polls:
        if time.monotonic() - start > timeout:
            return None
        quiet = 0 if _runnable_threads(me) else quiet + 1
        time.sleep(interval)
    return time.monotonic() - start


class StallingProxy:
    """A TCP proxy on 127.0.0.1:<port> in front of `target_port`, for cutting a stream at
    a byte the test chooses: after arm(n), the connection that carries the n-th byte
    from the server to the client (counted over every connection since arm) stops
    forwarding there (stalled is set): the client has received every byte before it and
    waits, also when the server goes away meanwhile. cut() then closes that connection;
    others and later ones are forwarded whole (to whatever listens on target_port then,
    e.g. a restarted daemon). connect_delay: seconds each new connection waits before it
    is forwarded (the client's TCP connect succeeds at once, the server's HTTP/2
    handshake comes that much later, as from a loaded server)."""

    def __init__(self, target_port, connect_delay=0.0):
        import socket
        import threading
        self._socket, self._threading = socket, threading
        self.target_port = target_port
        self.connect_delay = connect_delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._left = None  # bytes server -> client until the stall, once armed
        self._victim = None  # (client socket, server socket) of the stalled connection
        self.stalled = threading.Event()
        self._resume = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, n):
        with self._lock:
            self._left = n
            self.stalled.clear()
            self._resume.clear()

    def cut(self):
        """Closes the stalled connection (the client sees it drop)."""
        with self._lock:
            victim, self._victim = self._victim, None
        if victim:
            for s in victim:
                try:
                    s.shutdown(self._socket.SHUT_RDWR)
                except OSError:
                    pass
        self._resume.set()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            time.sleep(self.connect_delay)
            try:
                server = self._socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for args in ((client, server, False), (server, client, True)):
                self._threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(self, src, dst, downstream):
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    break
                if downstream:
                    with self._lock:
                        left = self._left
                        if left is not None:
                            if len(data) < left:
                                self._left = left - len(data)
                            else:  # this connection is the one cut
                                self._left = None
                                self._victim = (src, dst)
                                dst.sendall(data[:left])
                                self.stalled.set()
                                data = None
                    if data is None:
                        self._resume.wait()
                        break
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            stalled = self._victim is not None and src in self._victim
        if stalled:
            self._resume.wait()  # the client sees the stalled connection drop at cut()
        for s in (src, dst):
            try:
                s.shutdown(self._socket.SHUT_RDWR)
            except OSError:
                pass
        src.close()
