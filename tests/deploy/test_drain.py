"""deploy_drain: what `docker stop` / a pod termination does to a running stream. deltaserved
runs through docker/entrypoint.sh (drain deadline 20 s, below compose's stop_grace_period
and the pod's terminationGracePeriodSeconds). A `deltactl pull` of a 48 MiB task is
paused after 1 MiB (it reads through a proxy that stops forwarding: a client that stops
reading, so the stream is held by flow control) and SIGTERM comes while the stream is in
flight. Asserts: the health check fails
once the daemon has the signal (NOT_SERVING or refused: Kubernetes readiness drops the pod, Docker marks it
unhealthy), the client, continued 3 s later, still receives every tensor with verified
checksums, and the daemon exits 0 once the stream is done, before the drain deadline.
(curl as a gRPC client is not used here: curl 7.88 ends such a stream after the server's
GOAWAY without the trailers.)"""
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")
deltactl = d.need_binary("DELTACTL_BIN", "deltactl")
try:
    import numpy as np
except ImportError:
    d.skip("python3-numpy is not installed")

DRAIN = 20
ROWS, COLS, N = 2048, 2048, 3  # 3 x 16 MiB of float32: more than the HTTP/2 windows hold


def write_np_safetensors(path, tensors):
    import json
    header, offset = {}, 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())


class PausingProxy:
    """127.0.0.1:<port> forwarding to 127.0.0.1:`target_port`; on each connection the
    bytes from the server stop after `after` of them (paused is set) until resume()."""

    def __init__(self, target_port, after):
        self.target_port, self.after = target_port, after
        self.paused, self._go = threading.Event(), threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def resume(self):
        self._go.set()

    def _accept(self):
        while True:
            client, _ = self._listener.accept()
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            for args in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(self, src, dst, from_server):
        sent = 0
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if from_server and not self._go.is_set() and sent + len(data) >= self.after:
                    head, data = data[:self.after - sent], data[self.after - sent:]
                    dst.sendall(head)
                    sent += len(head)
                    self.paused.set()
                    self._go.wait()
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


with tempfile.TemporaryDirectory(prefix="deploy-drain-") as tmp:
    rng = np.random.default_rng(3)
    base = {f"layers.{i}.weight": rng.normal(0, 0.05, (ROWS, COLS)).astype(np.float32) for i in range(N)}
    ramp = np.outer(np.linspace(-1, 1, ROWS), np.linspace(-1, 1, COLS)).astype(np.float32) * 0.01
    ft = {k: v + ramp for k, v in base.items()}
    base_path, ft_path = os.path.join(tmp, "base.safetensors"), os.path.join(tmp, "ft.safetensors")
    write_np_safetensors(base_path, base)
    write_np_safetensors(ft_path, ft)
    # Port 0: the daemon picks free ports and logs them (serving_ports).
    env = d.clean_env({"DELTASERVE_BASE": base_path, "DELTASERVE_DB": os.path.join(tmp, "db"),
                       "DELTASERVE_LISTEN": "127.0.0.1:0",
                       "DELTASERVE_METRICS_LISTEN": "127.0.0.1:0",
                       "DELTASERVE_CONFIG": d.EXAMPLE_CONFIG, "DELTASERVE_WORKERS": "2",
                       "DELTASERVE_DRAIN_SECONDS": str(DRAIN), "DELTASERVED_BIN": deltaserved})
    dm = d.Daemon([os.path.join(d.DOCKER_DIR, "entrypoint.sh")], os.path.join(tmp, "daemon.log"), env=env)
    port, mport = d.serving_ports(dm)
    addr = f"127.0.0.1:{port}"
    d.wait_until(lambda: d.healthcheck(addr, env)[0] == 0, 30, "SERVING", dm)
    delta = os.path.join(tmp, "t.dds")
    d.run([deltactl, "compress", "--codec", "dct", "--base", base_path, "--finetuned", ft_path,
           "--out", delta],
          env=d.clean_env(), what="deltactl compress")
    d.run([deltactl, "push", "--server", addr, "--token", d.ACME_TOKEN, "--task", "drain", "--in", delta],
          env=d.clean_env(), what="deltactl push")

    out = os.path.join(tmp, "pulled.safetensors")
    # The client reads through a proxy that stops forwarding after 1 MiB: a reader that
    # stops reading with its stream in flight, whatever the machine's speed (a stopped
    # client, SIGSTOP once the stream showed in the metrics, could finish first on a
    # fast machine).
    proxy = PausingProxy(port, 1 << 20)
    client = subprocess.Popen([deltactl, "pull", "--server", f"127.0.0.1:{proxy.port}", "--token",
                               d.ACME_TOKEN, "--task", "drain", "--out", out],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=d.clean_env())
    d.kill_at_exit(client)
    d.wait_until(proxy.paused.is_set, 30, "the stream paused at 1 MiB", dm, interval=0.05)

    def in_flight():
        status, text = d.http_get(f"http://127.0.0.1:{mport}/metrics")
        return d.sample_values(text, "deltaserve_streams_in_flight").get("", 0) >= 1 if status == 200 else False
    d.check(in_flight(), "no stream in flight while the client's stream is paused")
    d.check(client.poll() is None, "the client finished before SIGTERM")
    t_term = time.monotonic()
    dm.proc.send_signal(signal.SIGTERM)
    # As soon as the daemon has taken the signal (a loaded machine may run its handler a
    # moment after the kill() returns); the stopped stream holds the drain for 20 s.
    checks = []

    def unhealthy():
        checks.append(d.healthcheck(addr, env))
        return checks[-1][0] != 0
    d.wait_until(unhealthy, 10, "the health check to fail while draining", interval=0.05)
    d.check(dm.poll() is None, "the daemon exited while a stream was still in flight")
    d.log(f"during drain: {checks[-1][1]} ({len(checks)} checks)")
    time.sleep(3)
    d.check(dm.poll() is None, "the daemon exited while a stream was still in flight")
    proxy.resume()
    client.wait(timeout=DRAIN + 15)
    t_client = time.monotonic()
    try:
        code = dm.proc.wait(timeout=DRAIN + 5)
    except subprocess.TimeoutExpired:
        d.fail(f"deltaserved still running {DRAIN + 5} s after SIGTERM")
    t_exit = time.monotonic()
    stdout, stderr = client.stdout.read(), client.stderr.read()
    d.check(client.returncode == 0, f"the pull must finish: deltactl exit {client.returncode}\n{stderr[-1500:]}")
    got, want = d.safetensors_data_bytes(out), N * ROWS * COLS * 4
    d.log(f"pull: {stdout.strip()}")
    d.log(f"client done {t_client - t_term:.1f} s after SIGTERM; daemon exit {code} "
          f"{t_exit - t_term:.1f} s after SIGTERM (drain deadline {DRAIN} s)")
    d.check(got == want, f"pulled {got} tensor bytes, want {want}")
    d.check(code == 0, f"exit code {code} after the drain\n{dm.log_text()}")
    d.check(t_exit - t_term < DRAIN, "the daemon waited for the drain deadline though the stream had ended")
    d.log("PASS: SIGTERM drained a running stream to completion, health failed while draining, exit 0")
