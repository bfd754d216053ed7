"""python_client_inplace_rss: load_into writes into the model's existing storage, so a
worker's peak RSS stays within model bytes + 64 MiB over its baseline (measured: VmHWM
from /proc/self/status, reset through /proc/self/clear_refs after the baseline). The
model: 12 fp16 tensors of 2048 x 2048 (96 MiB: a second copy would break the bound).
Then load_state_dict: a fresh state dict (on the native path one buffer, faulted in by a
thread of its own beside the stream) also peaks within model bytes + 64 MiB; its tensors
are ordinary writable, contiguous tensors that outlive the client and hold the bytes
load_into wrote; and their memory goes back (RSS falls by the model's bytes) once they
are deleted (native path), also when one tensor outlived the others."""
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

    # A fresh state dict: the peak is the new tensors (+ 64 MiB), and deleting them frees it.
    baseline = status_kib("VmRSS") * 1024
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    sd = c.load_state_dict("big")
    over = status_kib("VmHWM") * 1024 - baseline
    d.log(f"load_state_dict: peak - baseline = {over / MiB:.1f} MiB = model + "
          f"{(over - model_bytes) / MiB:.1f} MiB; {c.last_stream}")
    d.check(over <= model_bytes + 64 * MiB,
            f"load_state_dict: peak RSS {over / MiB:.1f} MiB over the baseline > model + 64 MiB")
    native = c.native
    c.close()
    del c
    gc.collect()
    for name, t in model.items():
        d.check(torch.equal(sd[name], t), f"load_state_dict {name} != load_into's bytes")
        d.check(sd[name].is_contiguous() and sd[name].dtype == torch.float16, f"{name}: layout")
    last = sd["layers.11.weight"]
    last[7, :] = 1.5  # writable, in place
    d.check(bool((last[7] == 1.5).all()) and torch.equal(last[6], model["layers.11.weight"][6]),
            "a write to a loaded tensor did not read back")
    del model
    gc.collect()
    before = status_kib("VmRSS") * 1024
    del sd
    gc.collect()
    held = status_kib("VmRSS") * 1024
    d.check(float(last.double().sum()) != 0.0, "the surviving tensor lost its bytes")
    del last
    gc.collect()
    after = status_kib("VmRSS") * 1024
    d.log(f"RSS {before / MiB:.1f} MiB with the state dict, {held / MiB:.1f} MiB with one "
          f"tensor left, {after / MiB:.1f} MiB after it went")
    # The native path's buffer is one mapping of ours, unmapped with its last tensor; the
    # grpcio path's tensors are numpy's (malloc may keep freed memory for later).
    d.check(not native or before - after >= model_bytes - 8 * MiB,
            f"deleting the state dict freed {(before - after) / MiB:.1f} MiB of "
            f"{model_bytes / MiB:.1f} MiB")
    d.check(daemon.stop() == 0, "deltaserved did not exit 0 on SIGTERM")
    d.log("PASS: in-place load and a fresh state dict within model bytes + 64 MiB of peak "
          "RSS; the fresh tensors are writable, outlive the client, and free their memory")
