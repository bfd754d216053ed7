#!/usr/bin/python3
"""python_load_bench: seconds and GB/s for a Python worker to get stream_bench's 1 GB
Qwen2-0.5B-shaped task (218 fp16 tensors, 0.999 GB merged) into a torch state dict,
all in one run against one deltaserved on loopback:

  (a) StreamWeights, cached   Client.load_state_dict, every tensor from the server cache
                              (through the C++ client, deltaserve._pull, when built;
                              also once through grpcio, native=False)
  (b) StreamWeights, cold     the same right after the push (every tensor decoded)
  (c) StreamDelta + decode    Client.load_delta_into into a preallocated state dict with
                              a LocalBase (the base file, mapped and resident): records
                              decoded + merged while the rest of the container arrives;
                              also fetch_delta then apply_delta, phase by phase
  (d) local safetensors       deltaserve.safetensors.load_file of the merged file
                              (`deltactl pull` output), page cache warm: a new state
                              dict (fresh memory), as the issue defines it
  (d') the same file read into the preallocated model (readinto): what (c) is compared
       with when both write into the worker's existing model
  and `deltactl pull` (cached) in the same run, as the reference for (a): its own
  "seconds" (--json), which time its StreamWeights stream, the pwrite of every chunk
  into the output file's page cache included (fresh page-cache pages, as (a) fills
  fresh anonymous memory); its process start, GetTask, creating the file, fsync and
  rename are not in them. (a) is the wall time of load_state_dict (the stream, then the
  state dict's views); its own stream seconds are shown beside it, and the CPU seconds
  of the thread that receives, checks and copies the stream (the critical path on an
  idle machine; the pages of the new state dict are faulted in on another thread).

On a shared machine the wall clock mostly measures the other processes: (a) and
`deltactl pull`, and (c) and (d), are measured alternately --rounds times and compared
by their medians, and every row gives the CPU seconds (user + sys) it used: the cost
that does not depend on the load. deltactl's are its own (RUSAGE_CHILDREN).

  PYTHONPATH=build/python tests/bench/python_load_bench.py [--build build]
      [--models /tmp/deltaserve-stream-bench/24x896x4864x151936] [--workers 2] [--rounds 3]

--models is a stream_bench work directory (base.safetensors, task.dds); when it lacks
task.dds, build/tests/bench/stream_bench is run once to make it. 1 GB = 1e9 bytes of
tensor data. Goals (issue 8): (a) >= 80% of deltactl pull; (c) faster than (d).
"""
import argparse
import gc
import json
import os
import re
import resource
import statistics
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


def cpu(who=resource.RUSAGE_SELF):
    r = resource.getrusage(who)
    return r.ru_utime, r.ru_stime


def cpu_text(before, who=resource.RUSAGE_SELF):
    """'CPU u+s' since `before` (a cpu() reading)."""
    after = cpu(who)
    return f"CPU {after[0] - before[0]:.2f}+{after[1] - before[1]:.2f} s"


def timed(fn, who=resource.RUSAGE_SELF):
    """(result, wall seconds, CPU text) of fn()."""
    c0, t = cpu(who), time.monotonic()
    out = fn()
    return out, time.monotonic() - t, cpu_text(c0, who)


def read_into(path, model):
    """Reads safetensors file `path` into the existing tensors of `model` ({name:
    tensor}, same shapes and dtypes): one copy from the page cache, no allocation."""
    header, _, start = st.read_header(path)
    with open(path, "rb") as f:
        for name, e in header.items():
            f.seek(start + e["data_offsets"][0])
            f.readinto(memoryview(dtypes.torch_bytes(model[name])))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--models", default=f"/tmp/deltaserve-stream-bench/{SHAPE_TAG}")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
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
            print(f"load_state_dict / load_into path: "
                  f"{'C++ client (deltaserve._pull)' if c.native else 'grpcio'}; load average "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
            print(f"{'':<34} {'seconds':>9}  {'GB/s':>11}", flush=True)

            sd, wall, used = timed(lambda: c.load_state_dict("bench"))
            cold = row("(b) StreamWeights cold", wall, c.last_stream.bytes,
                       f"{used}; first tensor {c.last_stream.first_tensor_seconds * 1e3:.0f} ms")
            del sd
            gc.collect()
            merged = os.path.join(tmp, "merged.safetensors")
            pull_argv = [deltactl, "pull", "--server", addr, "--task", "bench", "--json",
                         "--out", merged]
            cached, ref = [], []
            for _ in range(args.rounds):  # alternately: the load hits both alike
                own = time.thread_time()
                sd, wall, used = timed(lambda: c.load_state_dict("bench"))
                own = time.thread_time() - own
                cached.append(row("(a) StreamWeights cached", wall, c.last_stream.bytes,
                                  f"{used}, {own:.2f} s of it on the receiving thread; stream "
                                  f"{c.last_stream.seconds:.3f} s; first tensor "
                                  f"{c.last_stream.first_tensor_seconds * 1e3:.0f} ms"))
                del sd
                gc.collect()
                r, _, used = timed(lambda: subprocess.run(pull_argv, capture_output=True,
                                                          text=True, check=True),
                                   resource.RUSAGE_CHILDREN)
                pull = json.loads(r.stdout)
                ref.append(row("    deltactl pull (cached)", pull["seconds"], pull["bytes"],
                               f"{used} (whole process); its stream seconds: pwrite into "
                               "the page cache in, GetTask/create/fsync/rename out"))
            task = c.task_info("bench", tensors=True)
            sd = {x.name: torch.zeros(tuple(x.shape), dtype=dtypes.torch_dtype(x.dtype))
                  for x in task.tensors}  # the worker's model, allocated and touched
            _, wall, used = timed(lambda: c.load_into(sd, "bench"))
            into = row("    load_into cached (preallocated)", wall, c.last_stream.bytes,
                       f"{used}; the model's pages exist already")
            # The same two through grpcio (deltaserve/_stream.py, the fallback path).
            slow = Client(addr, timeout=120, native=False)
            sd2, wall, used = timed(lambda: slow.load_state_dict("bench"))
            row("    (a) through grpcio (native=False)", wall, slow.last_stream.bytes, used)
            del sd2
            gc.collect()
            _, wall, used = timed(lambda: slow.load_into(sd, "bench"))
            row("    load_into through grpcio", wall, slow.last_stream.bytes, used)
            ratios = [a / p for a, p in zip(cached, ref)]
            print(f"    (a) / deltactl pull, median of {args.rounds} = "
                  f"{100 * statistics.median(ratios):.0f}% (each: "
                  f"{', '.join(f'{100 * x:.0f}%' for x in ratios)}; goal >= 80%); load_into / "
                  f"pull = {100 * into / statistics.median(ref):.0f}%; (b) / pull = "
                  f"{100 * cold / statistics.median(ref):.0f}%", flush=True)

            t = time.monotonic()
            local = LocalBase(base)
            h = local.hash  # reads the whole base once: its pages are now resident
            print(f"    LocalBase({os.path.basename(base)}): {local.total_bytes / 1e9:.3f} GB "
                  f"mapped, hash {h} in {time.monotonic() - t:.2f} s (once per worker)", flush=True)
            threads = len(os.sched_getaffinity(0))
            # Phase by phase, once: the transfer, then decode + merge (the codec's kernels).
            for v in sd.values():
                v.zero_()  # the same model, switched to the task by local decode
            container, t_fetch, fetch_cpu = timed(lambda: c.fetch_delta("bench"))
            _, t_merge, merge_cpu = timed(lambda: apply_delta(sd, container, local))
            row("    fetch_delta, then apply_delta", t_fetch + t_merge, task.merged_bytes,
                f"fetch {t_fetch:.3f} s of {len(container) / 1e6:.1f} MB ({fetch_cpu}); "
                f"decode + merge {t_merge:.3f} s ({merge_cpu}, {threads} threads, "
                f"{task.total_weights / 1e6:.0f} M weights)")
            want = {n: v.clone() for n, v in sd.items()}
            container = None  # the container bytes go
            with open(merged, "rb") as f:  # warm the page cache
                while f.read(64 << 20):
                    pass
            decode, local_read, same = [], [], True
            for _ in range(args.rounds):  # alternately, as (a) and deltactl pull
                for v in sd.values():
                    v.zero_()
                rss0 = rss_mib()
                _, wall, used = timed(lambda: c.load_delta_into(sd, "bench", local))
                decode.append(row("(c) StreamDelta + local decode", wall, task.merged_bytes,
                                  f"{used}, load_delta_into; RSS {rss_mib() - rss0:+.0f} MiB "
                                  "over the allocated model"))
                same = same and all(torch.equal(sd[n], want[n]) for n in sd)
                gc.collect()
                loaded, wall, used = timed(lambda: st.load_file(merged))
                local_read.append(row("(d) safetensors from disk (warm)", wall,
                                      sum(v.numel() * v.element_size() for v in loaded.values()),
                                      used))
                del loaded
                gc.collect()
                _, wall, used = timed(lambda: read_into(merged, sd))
                row("    (d') the same file into the model", wall, task.merged_bytes,
                    f"{used}; readinto the preallocated tensors (no fresh memory, as (c))")
            ratios = [x / y for x, y in zip(decode, local_read)]
            print(f"    (c) / (d), median of {args.rounds} = {statistics.median(ratios):.2f}x "
                  f"(each: {', '.join(f'{x:.2f}' for x in ratios)}; goal > 1); load_delta_into "
                  f"== apply_delta: {same}", flush=True)
            print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
                  flush=True)
        finally:
            daemon.terminate()
            daemon.wait()


if __name__ == "__main__":
    main()
