"""python_side_files: a task's side files (config.json, tokenizer files, ...) against a
live deltaserved (port 0) with a tenants config whose quota is tight: pushed by
Client.push(side_files=...) and `deltactl push --side-file/--side-files-from`, listed by
task_info and `deltactl info`, read back byte for byte (Client.side_file), written
beside the shards by `deltactl pull --out-dir` and Client.pull_dir (the same bytes in
every file; same tensors as
deltactl's directory, index metadata.total_size = the sum of tensor bytes) and by
offline `deltactl decompress --out-dir --side-file`; a file above the per-file limit
and bad names refused naming the file; a wrong checksum is DATA_LOSS; the quota counts
side files; delete removes them."""
import json
import os
import tempfile

import grpc
import xxhash

import live_daemon as ld
from live_daemon import d

from deltaserve import Client
from deltaserve import safetensors as st
from deltaserve.checkpoint import side_files_from
from deltaserve.v1 import delta_service_pb2 as pb

SHAPES = {"a.weight": (64, 128), "b.weight": (128, 64), "b.bias": (64,)}
C = grpc.StatusCode
CONFIG = {"tenants": [{"name": "acme", "tokens": ["tok"], "quota_bytes": 0},
                      {"name": "wide", "tokens": ["tok2"], "quota_bytes": 0}]}

with tempfile.TemporaryDirectory(prefix="py-side-") as tmp:
    base, ft, _ = ld.model_pair(tmp, SHAPES)
    delta = ld.compress(tmp, base, ft)
    container_bytes = os.path.getsize(delta)
    ckpt = os.path.join(tmp, "ckpt")
    os.makedirs(ckpt)
    files = {"config.json": b'{"model_type": "toy", "hidden_size": 64}\n',
             "tokenizer.json": bytes(range(256)) * 40 + "é".encode(),  # not text: bytes as they are
             "merges.txt": b"",
             "README.md": b"not a side file by default\n"}
    for name, data in files.items():
        with open(os.path.join(ckpt, name), "wb") as f:
            f.write(data)
    side_total = sum(len(v) for k, v in files.items() if k != "README.md")
    # Quota: room for the two tasks below (containers and side files), no more.
    CONFIG["tenants"][0]["quota_bytes"] = (2 * container_bytes + 2 * side_total +
                                           len(files["README.md"]) + 100)
    config = os.path.join(tmp, "tenants.json")
    with open(config, "w") as f:
        json.dump(CONFIG, f)
    daemon = ld.LiveDaemon(tmp, base, config=config)
    c = Client(daemon.addr, token="tok", timeout=30)

    # Python push: picked from the directory (README.md is not a checkpoint side file).
    picked = side_files_from(ckpt)
    d.check(sorted(picked) == ["config.json", "merges.txt", "tokenizer.json"], f"picked {picked}")
    info = c.push("py", delta, side_files=picked)
    listed = {f.name: (f.size_bytes, f.xxh3_64) for f in c.task_info("py").side_files}
    want = {k: (len(v), xxhash.xxh3_64_intdigest(v)) for k, v in files.items() if k in picked}
    d.check(listed == want, f"task_info side files {listed} != {want}")
    d.check(info.side_file_bytes == side_total, f"side_file_bytes {info.side_file_bytes}")
    for name in picked:
        d.check(c.side_file("py", name) == files[name], f"{name}: bytes differ")
    # A slice-wise read of a file larger than one GetSideFile answer (4 MiB - 1 KiB), in
    # a tenant without a quota.
    wide = Client(daemon.addr, token="tok2", timeout=30)
    big = os.urandom(5 << 20)
    wide.push("big", delta, side_files={"tokenizer.model": big})
    d.check(wide.side_file("big", "tokenizer.model") == big, "5 MiB side file differs")
    d.check(wide.delete("big") == container_bytes + len(big), "freed bytes count side files")

    # deltactl push --side-file / --side-files-from, info lists them.
    ld.deltactl(["push", "--task", "cli", "--in", delta, "--side-files-from", ckpt,
                 "--side-file", os.path.join(ckpt, "README.md")], addr=daemon.addr, token="tok")
    out = ld.deltactl(["info", "--task", "cli"], addr=daemon.addr, token="tok").stdout
    for name in ["config.json", "tokenizer.json", "merges.txt", "README.md"]:
        d.check(f"side file {name}: {len(files[name])} bytes" in out, f"info lacks {name}: {out}")

    # Quota: py and cli fill it (containers and side files); a third push with side
    # files does not fit.
    usage = c.list_tasks()
    d.check(usage.stored_bytes == 2 * container_bytes + 2 * side_total + len(files["README.md"]),
            f"stored_bytes {usage.stored_bytes}")
    ld.expect_error(lambda: c.push("third", delta, side_files=picked), C.RESOURCE_EXHAUSTED,
                    "quota")

    # pull --out-dir and Client.pull_dir: shards + index + side files.
    cli_dir, py_dir = os.path.join(tmp, "cli-dir"), os.path.join(tmp, "py-dir")
    ld.deltactl(["pull", "--task", "py", "--out-dir", cli_dir, "--shard-bytes", "20000"],
                addr=daemon.addr, token="tok")
    result = c.pull_dir("py", py_dir, shard_bytes=20000)
    for out_dir in (cli_dir, py_dir):
        for name in picked:
            with open(os.path.join(out_dir, name), "rb") as f:
                d.check(f.read() == files[name], f"{out_dir}/{name} differs")
        with open(os.path.join(out_dir, "model.safetensors.index.json")) as f:
            index = json.load(f)
        tensors = {}
        for shard in sorted(set(index["weight_map"].values())):
            for name, _, _, buf in st.read_file(os.path.join(out_dir, shard))[0]:
                tensors[name] = buf.tobytes()
        d.check(index["metadata"]["total_size"] == sum(len(b) for b in tensors.values()),
                f"{out_dir}: total_size {index['metadata']['total_size']}")
        if out_dir == cli_dir:
            cli_tensors, cli_index = tensors, index
    d.check(tensors == cli_tensors, "pull_dir tensors != deltactl pull --out-dir tensors")
    d.check(index["weight_map"] == cli_index["weight_map"], "weight_map differs")
    # Byte for byte the same directory: shards (headers included), index, side files.
    listing = sorted(os.listdir(cli_dir))
    d.check(sorted(os.listdir(py_dir)) == listing, f"pull_dir wrote {sorted(os.listdir(py_dir))}, "
            f"deltactl pull --out-dir {listing}")
    for name in listing:
        with open(os.path.join(cli_dir, name), "rb") as f1, open(os.path.join(py_dir, name), "rb") as f2:
            d.check(f1.read() == f2.read(), f"{name}: pull_dir != deltactl pull --out-dir bytes")
    d.check(sorted(result["side_files"]) == sorted(picked), f"pull_dir result {result}")
    # Every shard says "format": "pt" (transformers refuses a file without it).
    for out_dir in (cli_dir, py_dir):
        for shard in sorted(set(index["weight_map"].values())):
            md = st.read_file(os.path.join(out_dir, shard))[1]
            d.check(md.get("format") == "pt", f"{out_dir}/{shard}: metadata {md}")
    # A second pull into the same directory with one shard removes the earlier shards
    # and a single model.safetensors of an older layout (transformers would load it
    # instead of the index), and keeps the side files: a loader sees one model.
    with open(os.path.join(py_dir, "model.safetensors"), "wb") as f:
        f.write(b"old weights")
    result = c.pull_dir("py", py_dir)
    shard_files = sorted(n for n in os.listdir(py_dir) if n.endswith(".safetensors"))
    d.check(shard_files == ["model-00001-of-00001.safetensors"] == result["shards"],
            f"pull_dir over an earlier pull left {shard_files}")
    d.check(all(os.path.exists(os.path.join(py_dir, n)) for n in picked), "side files gone")
    leftovers = [n for n in os.listdir(py_dir) if n.startswith(".deltaserve-staging-")]
    d.check(not leftovers, f"pull_dir left its staging directory {leftovers}")

    # Offline decompress --out-dir --side-files-from writes the same side files.
    off_dir = os.path.join(tmp, "offline")
    ld.deltactl(["decompress", "--base", base, "--delta", delta, "--out-dir", off_dir,
                 "--side-files-from", ckpt])
    for name in picked:
        with open(os.path.join(off_dir, name), "rb") as f:
            d.check(f.read() == files[name], f"offline {name} differs")

    # Refusals name the file: above the per-file limit, bad names; nothing stored.
    huge = b"x" * ((32 << 20) + 1)
    ld.expect_error(lambda: wide.push("bad", delta, side_files={"tokenizer.json": huge}),
                    C.RESOURCE_EXHAUSTED, "side file 'tokenizer.json'", f"{len(huge)} bytes")
    for bad in ["../config.json", "sub/config.json", "..", "model.safetensors"]:
        ld.expect_error(lambda: c.push("bad", delta, side_files={bad: b"{}"}),
                        C.INVALID_ARGUMENT, "side file '")
    ld.expect_error(lambda: c.task_info("bad"), C.NOT_FOUND)

    # A side file whose bytes do not match its declared XXH3-64: DATA_LOSS naming it.
    with open(delta, "rb") as f:
        container = f.read()
    meta = pb.PutDeltaMetadata(task=b"bad", total_bytes=len(container),
                               xxh3_64=xxhash.xxh3_64_intdigest(container),
                               side_files=[pb.SideFileDecl(name=b"config.json", size_bytes=2,
                                                           xxh3_64=12345)])
    reqs = [pb.PutDeltaRequest(metadata=meta), pb.PutDeltaRequest(side_file_chunk=b"{}"),
            pb.PutDeltaRequest(chunk=container)]
    try:
        wide._stub.PutDelta(iter(reqs), timeout=20, metadata=wide._metadata)
        d.fail("a wrong side file checksum was accepted")
    except grpc.RpcError as e:
        d.check(e.code() == C.DATA_LOSS and "side file 'config.json'" in e.details(),
                f"wrong checksum: {e.code()} {e.details()}")

    # Delete removes them (and gives their bytes back).
    freed = c.delete("py")
    d.check(freed == container_bytes + side_total, f"freed {freed}")
    ld.expect_error(lambda: c.side_file("py", "config.json"), C.NOT_FOUND)
    c.push("py", delta)  # same name again, without side files
    d.check(list(c.task_info("py").side_files) == [], "side files survived the delete")
    ld.expect_error(lambda: c.side_file("py", "config.json"), C.NOT_FOUND, "no side file")
    daemon.stop()
    d.log("ok: side files round trip, limits, names, checksum, quota, delete")
