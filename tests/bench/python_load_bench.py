#!/usr/bin/python3
"""python_load_bench: seconds and GB/s for a Python worker to get stream_bench's 1 GB
Qwen2-0.5B-shaped task (218 fp16 tensors, 0.999 GB merged) into a torch state dict,
all in one run against one deltaserved on loopback:

  (a) StreamWeights, cached   Client.load_state_dict, every tensor from the server cache
  (b) StreamWeights, cold     the same right after the push (every tensor decoded)
  (c) StreamDelta + decode    Client.fetch_delta + apply_delta into a preallocated state
                              dict with a LocalBase (the base file, mapped and resident)
  (d) local safetensors       deltaserve.safetensors.load_file of the merged file
                              (`deltactl pull` output), page cache warm
  and `deltactl pull` (cached) in the same run, as the reference for (a).

  PYTHONPATH=build/python tests/bench/python_load_bench.py [--build build]
      [--models /tmp/deltaserve-stream-bench/24x896x4864x151936] [--workers 2]

--models is a stream_bench work directory (base.safetensors, task.dds); when it lacks
task.dds, build/tests/bench/stream_bench is run once to make it. 1 GB = 1e9 bytes of
tensor data. Goals (issue 8): (a) >= 80% of deltactl pull; (c) faster than (d).
"""
import argparse
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

from deltaserve import Client, LocalBase, apply_delta, dtypes
from deltaserve import safetensors as st

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPE_TAG = "24x896x4864x151936"


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def row(label, seconds, nbytes, extra=""):
    print(f"{label:<34} {seconds:7.3f} s  {nbytes / seconds / 1e9:6.3f} GB/s  {extra}", flush=True)
    return nbytes / seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--models", default=f"/tmp/deltaserve-stream-bench/{SHAPE_TAG}")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    deltaserved = os.path.join(args.build, "server", "deltaserved")
    deltactl = os.path.join(args.build, "client", "deltactl")
    base = os.path.join(args.models, "base.safetensors")
    delta = os.path.join(args.models, "task.dds")
    if not os.path.exists(delta):
        workdir = os.path.dirname(args.models.rstrip("/"))
        print(f"making the models with stream_bench --workdir {workdir}", flush=True)
        subprocess.run([os.path.join(args.build, "tests", "bench", "stream_bench"),
                        "--workdir", workdir], check=True)

    with tempfile.TemporaryDirectory(prefix="py-load-bench-") as tmp:
        log = open(os.path.join(tmp, "deltaserved.log"), "wb")
        daemon = subprocess.Popen([deltaserved, "--base", base, "--db", os.path.join(tmp, "db"),
                                   "--listen", "127.0.0.1:0", "--metrics-listen", "",
                                   "--workers", str(args.workers)], stdout=log, stderr=log)
        try:
            port = None
            for _ in range(600):
                m = re.search(rb"serving.*\bport=(\d+)", open(log.name, "rb").read())
                if m:
                    port = int(m.group(1))
                    break
                if daemon.poll() is not None:
                    sys.exit("deltaserved exited: " + open(log.name).read())
                time.sleep(0.1)
            addr = f"127.0.0.1:{port}"
            c = Client(addr, timeout=120)
            info = c.push("bench", delta)
            print(f"task: {info.num_tensors} tensors, {info.merged_bytes / 1e9:.3f} GB merged, "
                  f"container {info.container_bytes / 1e6:.1f} MB; server --workers "
                  f"{args.workers}; {os.cpu_count()} CPUs", flush=True)
            print(f"{'':<34} {'seconds':>9}  {'GB/s':>11}", flush=True)

            speed = {}
            for label in ("(b) StreamWeights cold", "(a) StreamWeights cached"):
                t = time.monotonic()
                sd = c.load_state_dict("bench")
                speed[label[:3]] = row(label, time.monotonic() - t, c.last_stream.bytes,
                                       f"first tensor {c.last_stream.first_tensor_seconds * 1e3:.0f} ms")
                del sd
                gc.collect()
            cold, cached = speed["(b)"], speed["(a)"]
            task = c.task_info("bench", tensors=True)
            sd = {x.name: torch.zeros(tuple(x.shape), dtype=dtypes.torch_dtype(x.dtype))
                  for x in task.tensors}  # the worker's model, allocated and touched
            t = time.monotonic()
            c.load_into(sd, "bench")
            into = row("    load_into cached (preallocated)", time.monotonic() - t,
                       c.last_stream.bytes, "the model's pages exist already")
            merged = os.path.join(tmp, "merged.safetensors")
            r = subprocess.run([deltactl, "pull", "--server", addr, "--task", "bench", "--json",
                                "--out", merged], capture_output=True, text=True, check=True)
            pull = json.loads(r.stdout)
            ref = row("    deltactl pull (cached)", pull["seconds"], pull["bytes"],
                      "stream only, writing the file excluded")
            print(f"    (a) / deltactl pull = {100 * cached / ref:.0f}%  (goal >= 80%); "
                  f"load_into / pull = {100 * into / ref:.0f}%; (b) / pull = "
                  f"{100 * cold / ref:.0f}%", flush=True)

            t = time.monotonic()
            local = LocalBase(base)
            h = local.hash  # reads the whole base once: its pages are now resident
            print(f"    LocalBase({os.path.basename(base)}): {local.total_bytes / 1e9:.3f} GB "
                  f"mapped, hash {h} in {time.monotonic() - t:.2f} s (once per worker)", flush=True)
            for v in sd.values():
                v.zero_()  # the same model, switched to the task by local decode
            rss0 = rss_mib()
            t = time.monotonic()
            container = c.fetch_delta("bench")
            t_fetch = time.monotonic() - t
            cpu = time.process_time()
            apply_delta(sd, container, local)
            cpu = time.process_time() - cpu
            decode = row("(c) StreamDelta + local decode", time.monotonic() - t, task.merged_bytes,
                         f"fetch {t_fetch:.3f} s of {len(container) / 1e6:.1f} MB; decode + "
                         f"merge {cpu:.2f} CPU-s on {len(os.sched_getaffinity(0))} threads; RSS +"
                         f"{rss_mib() - rss0:.0f} MiB over the allocated model")
            del sd, container
            gc.collect()

            with open(merged, "rb") as f:  # warm the page cache
                while f.read(64 << 20):
                    pass
            t, cpu = time.monotonic(), time.process_time()
            sd = st.load_file(merged)
            local_read = row("(d) safetensors from disk (warm)", time.monotonic() - t,
                             sum(v.numel() * v.element_size() for v in sd.values()),
                             f"{time.process_time() - cpu:.2f} CPU-s")
            del sd
            print(f"    (c) / (d) = {decode / local_read:.2f}x  (goal > 1)", flush=True)
        finally:
            daemon.terminate()
            daemon.wait()


if __name__ == "__main__":
    main()
