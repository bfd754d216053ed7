"""python_client_inplace_rss: load_into writes into the model's existing storage, so a
worker's peak RSS stays within model bytes + 64 MiB over its baseline (measured: VmHWM
from /proc/self/status, reset through /proc/self/clear_refs after the baseline). The
model: 12 fp16 tensors of 2048 x 2048 (96 MiB: a second copy would break the bound)."""
import gc
import tempfile

import torch

import live_daemon as ld
from live_daemon import d

from deltaserve import Client

SHAPES = {f"layers.{i:02d}.weight": (2048, 2048) for i in range(12)}
MiB = 1 << 20


def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    d.skip(f"/proc/self/status has no {field}")


with tempfile.TemporaryDirectory(prefix="py-rss-") as tmp:
    base, ft, arrays = ld.model_pair(tmp, SHAPES)
    del arrays
    gc.collect()
    delta = ld.compress(tmp, base, ft)
    daemon = ld.LiveDaemon(tmp, base)
    c = Client(daemon.addr, timeout=30)
    c.push("big", delta)
    c.pin("big")  # the server decodes ahead; the worker's side is what is measured
    list(c.stream_weights("big", include="layers.00.*"))  # warm the channels and code paths
    c.load_state_dict("big", include="layers.00.*")  # the native path's (DELTASERVE_NATIVE)
    gc.collect()

    baseline = status_kib("VmRSS") * 1024
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError as e:
        d.skip(f"cannot reset the peak RSS: {e}")
    model = {n: torch.zeros(s, dtype=torch.float16) for n, s in SHAPES.items()}
    model_bytes = sum(t.numel() * t.element_size() for t in model.values())
    stats = c.load_into(model, "big")
    peak = status_kib("VmHWM") * 1024
    over = peak - baseline
    d.log(f"model {model_bytes / MiB:.1f} MiB; baseline RSS {baseline / MiB:.1f} MiB; peak "
          f"{peak / MiB:.1f} MiB; peak - baseline = {over / MiB:.1f} MiB = model + "
          f"{(over - model_bytes) / MiB:.1f} MiB; {stats}")
    d.check(stats.tensors == len(SHAPES), f"{stats}")
    d.check(not bool((model["layers.11.weight"] == 0).all()), "the model was not written")
    d.check(over <= model_bytes + 64 * MiB,
            f"peak RSS {over / MiB:.1f} MiB over the baseline > model + 64 MiB")
    d.check(daemon.stop() == 0, "deltaserved did not exit 0 on SIGTERM")
    d.log("PASS: in-place load within model bytes + 64 MiB of peak RSS")
