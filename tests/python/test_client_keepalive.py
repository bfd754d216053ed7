"""python_client_keepalive: Client(keepalive=, keepalive_timeout=) against a live
deltaserved (port 0) behind a proxy that can freeze a connection (live_daemon.StallingProxy:
open, passing nothing more to the client). Before, load_state_dict from a frozen server
(`kill -STOP`) hung until the server came back.

- frozen mid-stream, no retries: UNAVAILABLE "the server stopped answering";
- frozen mid-stream with retries: the load resumes over a new connection and gives the
  same tensors as an undisturbed load;
- a reader that pauses for three keepalive periods is not cut (tests/client/
  client_keepalive_test.cc has a server that stalls mid-stream while answering pings);
- bad keepalive arguments and variables are INVALID_ARGUMENT naming them."""
import os
import tempfile

import grpc
import numpy as np
import torch

import live_daemon as ld
from live_daemon import d

from deltaserve import Client

# About 768 KiB of f16 weights: the proxy freezes the stream at 256 KiB.
SHAPES = {f"layer{i}.weight": (256, 256) for i in range(6)}
FREEZE_AT = 256 << 10


def same(a, b):
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def main(tmp):
    base, ft, _ = ld.model_pair(tmp, SHAPES)
    delta = ld.compress(tmp, base, ft)
    # Pings every second are allowed (the default, 5 s, would answer GOAWAY too_many_pings).
    daemon = ld.LiveDaemon(tmp, base, extra=["--min-client-ping-seconds", "0.5"])
    Client(daemon.addr, timeout=30).push("chat", delta)
    want = Client(daemon.addr, timeout=30).load_state_dict("chat")
    d.check(len(want) == len(SHAPES), f"reference load: {sorted(want)}")

    proxy = ld.StallingProxy(daemon.port)
    # A 4 s ping timeout: a loaded machine can take more than 1 s to answer a ping, and
    # a timeout that fires on a live connection spends the retries (seen at load 20).
    fast = dict(keepalive=1, keepalive_timeout=4, timeout=30)

    # 1. Frozen, no retries: the load fails instead of hanging.
    c = Client(proxy.addr, retries=0, **fast)
    proxy.arm(FREEZE_AT)
    ld.expect_error(lambda: c.load_state_dict("chat"), grpc.StatusCode.UNAVAILABLE,
                    "the server stopped answering")
    d.check(proxy.stalled.is_set(), "the proxy never froze the stream")
    proxy.cut()
    c.close()

    # 2. Frozen with retries: resumed over a new connection, the same tensors.
    c = Client(proxy.addr, retries=3, **fast)
    proxy.arm(FREEZE_AT)
    got = c.load_state_dict("chat")
    d.check(proxy.stalled.is_set(), "the proxy never froze the stream")
    d.check(same(got, want), "a load resumed after a frozen connection differs")
    d.check(c.last_stream.resumes >= 1, f"resumes {c.last_stream.resumes}, want >= 1")
    proxy.cut()
    c.close()

    # 3. A paused reader is not cut (a ping timeout far above an answer's time on a loaded
    # machine; the pause is the condition, not a deadline).
    c = Client(daemon.addr, retries=0, keepalive=1, keepalive_timeout=20, timeout=30)
    paused = []

    def pause(name):
        if not paused:
            paused.append(name)
            ld.wait(3.5)

    got = c.load_state_dict("chat", progress=pause)
    d.check(paused and same(got, want), "a paused load differs")
    d.check(c.last_stream.resumes == 0, f"the paused load was cut: resumes "
            f"{c.last_stream.resumes}")
    c.close()

    # 4. Arguments and variables.
    for kwargs, words in (({"keepalive": -1}, "keepalive must be 0 (no pings) or a positive"),
                          ({"keepalive_timeout": 0}, "keepalive_timeout must be a positive"),
                          ({"keepalive": "soon"}, "got 'soon'")):
        ld.expect_error(lambda: Client(daemon.addr, **kwargs), grpc.StatusCode.INVALID_ARGUMENT,
                        words)
    os.environ["DELTASERVE_CLIENT_KEEPALIVE_SECONDS"] = "nan"
    ld.expect_error(lambda: Client(daemon.addr), grpc.StatusCode.INVALID_ARGUMENT,
                    "DELTASERVE_CLIENT_KEEPALIVE_SECONDS must be 0 (no pings)")
    os.environ["DELTASERVE_CLIENT_KEEPALIVE_SECONDS"] = "0"
    c = Client(daemon.addr)
    d.check((c.keepalive, c.keepalive_timeout) == (0.0, 20.0),
            f"keepalive from the variable: {(c.keepalive, c.keepalive_timeout)}")
    d.check(same(c.load_state_dict("chat"), want), "a load without keepalive differs")
    del os.environ["DELTASERVE_CLIENT_KEEPALIVE_SECONDS"]
    d.check((Client(daemon.addr).keepalive, Client(daemon.addr).keepalive_timeout) ==
            (30.0, 20.0), "keepalive defaults")
    daemon.stop()


with tempfile.TemporaryDirectory(prefix="py-keepalive-") as tmp:
    os.environ.pop("DELTASERVE_CLIENT_KEEPALIVE_SECONDS", None)
    os.environ.pop("DELTASERVE_CLIENT_KEEPALIVE_TIMEOUT_SECONDS", None)
    main(tmp)
    d.log("PASS: a frozen server fails or resumes the load; a paused one is not cut")
