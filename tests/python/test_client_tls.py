"""python_client_tls: Client(ca=PEM) talks TLS to a live deltaserved (port 0) started with
--tls-cert/--tls-key (a self-signed certificate made by openssl): unary calls and a
verified stream work; a plaintext client and a TLS client trusting only the system roots
are refused with UNAVAILABLE; a missing CA file is NOT_FOUND."""
import os
import tempfile

import grpc

import live_daemon as ld
from live_daemon import d

from deltaserve import Client

openssl = d.need_tool("openssl")
SHAPES = {"w": (64, 128), "b": (64,)}

with tempfile.TemporaryDirectory(prefix="py-tls-") as tmp:
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    d.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
           "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], what="openssl req")
    base, ft, _ = ld.model_pair(tmp, SHAPES)
    delta = ld.compress(tmp, base, ft)
    daemon = ld.LiveDaemon(tmp, base, extra=["--tls-cert", cert, "--tls-key", key])
    c = Client(f"localhost:{daemon.port}", ca=cert, timeout=20)
    c.push("t", delta)
    names = [n for n, _ in c.stream_weights("t")]
    d.check(names == ["b", "w"], f"stream over TLS: {names}")
    d.check([t.name for t in c.list_tasks().tasks] == ["t"], "list over TLS")
    d.log(f"TLS: push, list and a verified stream work ({c.last_stream})")
    sd = c.load_state_dict("t")  # the path under test (DELTASERVE_NATIVE)
    d.check(list(sd) == ["b", "w"] and c.last_stream.tensors == 2, f"load_state_dict over TLS: "
            f"{list(sd)}, {c.last_stream}")
    ld.expect_error(lambda: Client(f"localhost:{daemon.port}", tls=True, timeout=5)
                    .load_state_dict("t"), grpc.StatusCode.UNAVAILABLE, "StreamWeights 't'")
    ld.expect_error(lambda: Client(daemon.addr, timeout=5).list_tasks(), grpc.StatusCode.UNAVAILABLE,
                    "ListTasks")
    ld.expect_error(lambda: Client(f"localhost:{daemon.port}", tls=True, timeout=5).list_tasks(),
                    grpc.StatusCode.UNAVAILABLE, "ListTasks")
    ld.expect_error(lambda: Client(daemon.addr, ca=os.path.join(tmp, "missing.pem")),
                    grpc.StatusCode.NOT_FOUND, "cannot read TLS root certificate")
    d.check(daemon.stop() == 0, "deltaserved did not exit 0 on SIGTERM")
    d.log("PASS: TLS with a given CA works; plaintext and untrusted TLS refused")
