"""python_deltactl_out_dir: `deltactl pull --out-dir` and `deltactl decompress --out-dir`
write the same Hugging Face checkpoint directory: model-0000i-of-0000N.safetensors
shards of at most --shard-bytes of tensor data (a larger tensor alone), tensors in
container order, each shard with the merged model's metadata, and
model.safetensors.index.json whose weight_map names every tensor's shard; the tensors
are exactly those of `pull --out FILE`. --out with --out-dir is a usage error."""
import json
import os
import tempfile

import live_daemon as ld
from live_daemon import d

from deltaserve import safetensors as st

SHAPES = {"a.weight": (64, 128), "b.weight": (128, 64), "b.bias": (64,), "c.weight": (256, 64),
          "d.weight": (32, 32)}  # 16384, 16384, 128, 32768 (> a shard) and 2048 bytes in fp16

with tempfile.TemporaryDirectory(prefix="py-outdir-") as tmp:
    base, ft, _ = ld.model_pair(tmp, SHAPES)
    delta = ld.compress(tmp, base, ft)
    daemon = ld.LiveDaemon(tmp, base)
    ld.deltactl(["push", "--task", "t", "--in", delta], addr=daemon.addr)
    single = os.path.join(tmp, "single.safetensors")
    ld.deltactl(["pull", "--task", "t", "--out", single], addr=daemon.addr)
    ref, ref_meta = st.read_file(single)
    pulled, offline = os.path.join(tmp, "pulled"), os.path.join(tmp, "offline")
    ld.deltactl(["pull", "--task", "t", "--out-dir", pulled, "--shard-bytes", "20000"],
                addr=daemon.addr)
    ld.deltactl(["decompress", "--base", base, "--delta", delta, "--out-dir", offline,
                 "--shard-bytes", "20000"])

    # The expected shards: the tensors in container order packed greedily into 20000 bytes.
    names = sorted(os.listdir(pulled))
    d.check(names == sorted(os.listdir(offline)), f"pull {names} vs decompress "
            f"{sorted(os.listdir(offline))}")
    for n in names:
        with open(os.path.join(pulled, n), "rb") as f1, open(os.path.join(offline, n), "rb") as f2:
            d.check(f1.read() == f2.read(), f"{n}: pull --out-dir != decompress --out-dir")
    with open(os.path.join(pulled, "model.safetensors.index.json")) as f:
        index = json.load(f)
    want_map, used, shards = {}, 0, [[]]
    for name, _, _, buf in ref:
        if shards[-1] and used + buf.size > 20000:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += buf.size
    for i, group in enumerate(shards):
        for name in group:
            want_map[name] = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    d.check(index["weight_map"] == want_map, f"weight_map {index['weight_map']} != {want_map}")
    d.check(names == sorted(set(want_map.values())) + ["model.safetensors.index.json"],
            f"files {names}")
    got = {}
    for shard_name in sorted(set(want_map.values())):
        tensors, meta = st.read_file(os.path.join(pulled, shard_name))
        d.check(meta == ref_meta, f"{shard_name}: metadata {meta} != {ref_meta}")
        for name, _, _, buf in tensors:
            got[name] = buf.tobytes()
    for name, _, _, buf in ref:
        d.check(got[name] == buf.tobytes(), f"{name}: shard bytes != pull --out")
    d.log(f"{len(shards)} shards, weight_map {want_map}")

    r = d.run([d.need_binary("DELTACTL_BIN", "deltactl"), "pull", "--server", daemon.addr,
               "--task", "t", "--out", single, "--out-dir", pulled], env=d.clean_env(),
              check_rc=False)
    d.check(r.returncode == 2 and "excludes" in r.stderr.lower(),
            f"--out with --out-dir: exit {r.returncode} {r.stderr}")
    r = d.run([d.need_binary("DELTACTL_BIN", "deltactl"), "decompress", "--base", base,
               "--delta", delta], env=d.clean_env(), check_rc=False)
    d.check(r.returncode == 2 and "Exactly 1 option from [--out,--out-dir] is required" in r.stderr,
            f"neither --out nor --out-dir: exit {r.returncode} {r.stderr}")
    d.check(daemon.stop() == 0, "deltaserved did not exit 0 on SIGTERM")
    d.log("PASS: pull --out-dir == decompress --out-dir, sharded like save_pretrained, "
          "tensors == pull --out")
