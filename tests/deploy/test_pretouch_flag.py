"""deploy_pretouch_flag: deltaserved --pretouch-cache (ServerOptions::pretouch_cache).

The flag, or DELTASERVE_PRETOUCH_CACHE=true / 1, turns it on: the serving line says
pretouch_cache=on, then one 'pretouch' line says end=done with the bytes of the base's
tensors of at least 256 KiB (here one 256 x 512 F32 matrix: 524288 bytes; the 64 x 64 one
is below the pool's size), and /metrics reads deltaserve_pretouch_bytes 524288. Without
it, or with DELTASERVE_PRETOUCH_CACHE=false / 0, the serving line says pretouch_cache=off,
no 'pretouch' line comes and /metrics has no deltaserve_pretouch_* (as single node has
no deltaserve_cluster_*: the dashboard shows every family a default daemon exports). The command line wins over the variable.
A value other than true/false, yes/no, on/off or 1/0 (any case) is a usage error (exit 2)
naming the flag, or the variable that set it."""
import os
import random
import re
import tempfile

import deploy_lib as d

deltaserved = d.need_binary("DELTASERVED_BIN", "deltaserved")

# New-user trial: "2" was taken as true (CLI11 reads any integer, "t", "+", "enable").
# Every boolean flag takes true/false, yes/no, on/off or 1/0 only, from the variable too.
for flag in ("--pretouch-cache", "--base-mapped"):
    env = "DELTASERVE_" + flag[2:].upper().replace("-", "_")
    for bad in ("maybe", "2", "-1", "t", "enable"):
        d.refused_at_parse(deltaserved, [f"{flag}={bad}"],
                           f"{flag}: want true/false, yes/no, on/off or 1/0, got '{bad}'")
        d.refused_at_parse(deltaserved, [], f"that value came from {env}", {env: bad})

PRETOUCH_BYTES = 256 * 512 * 4


def write_base(path):
    rng = random.Random(3)
    tensors = {"layers.0.big.weight": ((256, 512), [rng.gauss(0, 0.05) for _ in range(256 * 512)]),
               "layers.0.small.weight": ((64, 64), [rng.gauss(0, 0.05) for _ in range(64 * 64)])}
    d.write_safetensors(path, tensors)


def run_daemon(tmp, name, base, flags, env_extra):
    """Starts deltaserved, waits for SERVING; returns (serving line, pretouch lines, metric)."""
    daemon = d.Daemon([deltaserved, "--base", base, "--db", os.path.join(tmp, name), "--listen",
                       "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--drain-seconds",
                       "1"] + flags, os.path.join(tmp, name + ".log"), env=d.clean_env(env_extra))
    try:
        port, metrics_port = d.serving_ports(daemon)
        addr = f"127.0.0.1:{port}"
        d.wait_until(lambda: d.healthcheck(addr)[0] == 0, 30, f"deltaserved on {addr}", daemon)
        serving = [l for l in daemon.log_text().splitlines() if " serving " in l]
        d.check(serving, f"no serving line:\n{daemon.log_text()}")
        on = "pretouch_cache=on" in serving[-1]
        if on:  # the thread runs at idle priority: give it time on a busy machine
            d.wait_until(lambda: " pretouch " in daemon.log_text(), 30, "the pretouch line", daemon)
        status, text = d.http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        d.check(status == 200, f"/metrics -> {status}")
        m = re.search(r"^deltaserve_pretouch_bytes (\S+)$", text, re.M)
        pretouch = [l for l in daemon.log_text().splitlines() if " pretouch " in l]
        return serving[-1], pretouch, float(m.group(1)) if m else None
    finally:
        d.check(daemon.terminate() == 0, f"{name}: deltaserved did not exit 0 on SIGTERM")
        daemon.stop()


with tempfile.TemporaryDirectory(prefix="deploy-pretouch-") as tmp:
    base = os.path.join(tmp, "base.safetensors")
    write_base(base)
    cases = [("flag", ["--pretouch-cache"], {}, True),
             ("env-true", [], {"DELTASERVE_PRETOUCH_CACHE": "true"}, True),
             ("flag-on", ["--pretouch-cache=ON"], {}, True),
             ("env-1", [], {"DELTASERVE_PRETOUCH_CACHE": "1"}, True),
             ("unset", [], {}, False),
             ("env-false", [], {"DELTASERVE_PRETOUCH_CACHE": "false"}, False),
             ("env-0", [], {"DELTASERVE_PRETOUCH_CACHE": "0"}, False),
             ("env-no", [], {"DELTASERVE_PRETOUCH_CACHE": "No"}, False),
             ("flag-over-env", ["--pretouch-cache"], {"DELTASERVE_PRETOUCH_CACHE": "0"}, True)]
    for name, flags, env, want_on in cases:
        serving, pretouch, gauge = run_daemon(tmp, name, base, flags, env)
        want = "on" if want_on else "off"
        d.check(f"pretouch_cache={want}" in serving, f"{name}: wanted pretouch_cache={want}: {serving}")
        if want_on:
            d.check(len(pretouch) == 1 and "end=done" in pretouch[0] and
                    f"bytes={PRETOUCH_BYTES} " in pretouch[0] and "mappings=1 " in pretouch[0],
                    f"{name}: wanted one pretouch line, end=done, bytes={PRETOUCH_BYTES}: {pretouch}")
            d.check(gauge == PRETOUCH_BYTES, f"{name}: deltaserve_pretouch_bytes {gauge}")
        else:
            d.check(not pretouch, f"{name}: a pretouch line without the flag: {pretouch}")
            d.check(gauge is None, f"{name}: deltaserve_pretouch_bytes {gauge} without the flag")
        d.log(f"{name}: pretouch_cache={want}; {pretouch[0].split(' pretouch ')[1] if pretouch else ''}")
    d.log("PASS: --pretouch-cache and DELTASERVE_PRETOUCH_CACHE parsed; bad values refused")
