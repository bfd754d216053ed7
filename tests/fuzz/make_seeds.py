#!/usr/bin/python3
"""Seed corpora for the libFuzzer targets, from real files where there are some.

Usage: make_seeds.py OUT_DIR DELTACTL SHARED_MODELS_DIR REPO_DIR
Writes OUT_DIR/<target>/<seed> for every target of tests/fuzz/CMakeLists.txt:
safetensors headers of the real faceres model (converted with deltactl) and small
files of every dtype; a sharded index; containers deltactl compresses from a small
pair (DCT, raw, unchanged, I64 records); their DCT payloads; the real TF.js manifests
(faceres, use-lite) and a small one; the example tenants config; PutDelta streams.
"""
import json
import os
import struct
import subprocess
import sys


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def put_delta_stream(task, container, chunk):
    meta = field(2, 2, task.encode()) + field(4, 0, varint(len(container)))
    msgs = [field(1, 2, meta)]
    for i in range(0, len(container), chunk):
        msgs.append(field(2, 2, container[i:i + chunk]))
    return b"".join(varint(len(m)) + m for m in msgs)


def dct_payloads(container, encoding=2):
    """(rows, cols, payload) of every record of a container with `encoding` (2 dct,
    3 ecq; FORMAT.md)."""
    out = []
    off = struct.unpack_from("<I", container, 12)[0]
    while container[off:off + 4] == b"DRec":
        length = struct.unpack_from("<Q", container, off + 4)[0]
        p = off + 12
        name_len = struct.unpack_from("<H", container, p)[0]
        p += 2 + name_len
        enc, rank, brank = container[p + 1], container[p + 2], container[p + 3]
        p += 4 + 8 * (rank + brank)
        rows, cols, plen = struct.unpack_from("<qqQ", container, p)
        p += 32
        if enc == encoding:
            out.append((rows, cols, container[p:p + plen]))
        off += length
    return out


def forged_containers(container, repo):
    """The second new-user trial's forgeries of `container` (the seed pair's d0),
    made by tests/python/forged_container.py: {seed name: bytes}; {} without the
    xxhash module."""
    sys.path.insert(0, os.path.join(repo, "tests", "python"))
    try:
        from forged_container import forge, unchanged
    except ImportError:
        return {}
    return {
        "unchanged_i32": forge(container, b"w", unchanged(5)),     # F32 base, I32 record
        "unchanged_f64": forge(container, b"bias", unchanged(3)),  # 4 F32 as 4 F64
        "no_base": forge(container, b"w", lambda f: dict(f, name=b"ghost")),
        "reshaped": forge(container, b"w", unchanged(0, [32, 128])),
    }

def main():
    out, deltactl, models, repo = sys.argv[1:5]
    tmp = os.path.join(out, "work")
    os.makedirs(tmp, exist_ok=True)

    # safetensors: the real faceres header (data cut to 4 KiB) and small files.
    faceres = os.path.join(models, "faceres", "faceres.json")
    st = os.path.join(tmp, "faceres.safetensors")
    if os.path.exists(faceres):
        subprocess.run([deltactl, "convert", "--in", faceres, "--out", st], check=True,
                       stdout=subprocess.DEVNULL)
        with open(st, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            f.seek(0)
            write(f"{out}/safetensors/faceres_header", f.read(8 + n + 4096))
    small = [("w", "F32", [2, 2], struct.pack("<4f", 1, -2, 0.5, 3)),
             ("ids", "I64", [2], struct.pack("<2q", 16777217, -1)),
             ("mask", "BOOL", [3], b"\x01\x00\x01"),
             ("h", "F16", [2], b"\x00\x3c\x00\xc0"),
             ("b", "BF16", [1], b"\x80\x3f"),
             ("q", "F8_E4M3", [2], b"\x38\x40")]
    write(f"{out}/safetensors/small", safetensors(small, {"format": "pt"}))
    write(f"{out}/safetensors/empty", safetensors([]))

    # index: matches the shards the target writes (a: a.safetensors; b, c: b.safetensors).
    write(f"{out}/safetensors_index/index", json.dumps(
        {"metadata": {"total_size": 22},
         "weight_map": {"a": "a.safetensors", "b": "b.safetensors",
                        "c": "b.safetensors"}}).encode())

    # containers from a small pair: DCT, raw, unchanged and I64 records.
    import random
    rnd = random.Random(1)
    w = [rnd.gauss(0, 1) for _ in range(64 * 64)]
    wf = [x + rnd.gauss(0, 0.01) for x in w]
    base = [("w", "F32", [64, 64], struct.pack(f"<{len(w)}f", *w)),
            ("bias", "F32", [4], struct.pack("<4f", 1, 2, 3, 4)),
            ("ids", "I64", [2], struct.pack("<2q", 0, 1))]
    ft = [("w", "F32", [64, 64], struct.pack(f"<{len(wf)}f", *wf)),
          ("bias", "F32", [4], struct.pack("<4f", 1, 2, 3, 4.5)),
          ("ids", "I64", [2], struct.pack("<2q", 16777217, -1))]
    write(f"{tmp}/b.safetensors", safetensors(base))
    write(f"{tmp}/f.safetensors", safetensors(ft))
    containers = []
    for i, args in enumerate([[], ["--patch", "8", "--schedule", "2:0.5,1:0.25,0:0.25"],
                              ["--quantizer", "minmax", "--separate-dc"],
                              ["--bits", "2"], ["--bits", "0.5", "--patch", "8"]]):
        dds = f"{tmp}/d{i}.dds"
        subprocess.run([deltactl, "compress", "--base", f"{tmp}/b.safetensors", "--finetuned",
                        f"{tmp}/f.safetensors", "--out", dds, "--min-dct-elements", "1024"]
                       + args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(dds, "rb") as f:
            containers.append(f.read())
        write(f"{out}/container/d{i}", containers[-1])
        for j, (rows, cols, payload) in enumerate(dct_payloads(containers[-1])):
            view = struct.pack("<HH", (rows - 1) % 256, (cols - 1) % 256)
            write(f"{out}/dct_payload/d{i}_{j}", view + payload)
        for j, (rows, cols, payload) in enumerate(dct_payloads(containers[-1], 3)):
            view = struct.pack("<HH", (rows - 1) % 256, (cols - 1) % 256)
            write(f"{out}/ecq_payload/d{i}_{j}", view + payload)
        write(f"{out}/put_delta_stream/d{i}", put_delta_stream("t", containers[-1], 4096))
    for seed, forged in forged_containers(containers[0], repo).items():
        write(f"{out}/container/forged_{seed}", forged)

    # ecq with low-rank factors (flag bit 0): a rank-2 delta of white factors.
    u = [[rnd.gauss(0, 1) for _ in range(64)] for _ in range(2)]
    v = [[rnd.gauss(0, 1) for _ in range(64)] for _ in range(2)]
    wl = [w[r * 64 + c] + 0.01 * (u[0][r] * v[0][c] + 0.5 * u[1][r] * v[1][c])
          + rnd.gauss(0, 0.0005) for r in range(64) for c in range(64)]
    write(f"{tmp}/fl.safetensors", safetensors([("w", "F32", [64, 64],
                                                  struct.pack(f"<{len(wl)}f", *wl))] + ft[1:]))
    dds = f"{tmp}/lr.dds"
    subprocess.run([deltactl, "compress", "--base", f"{tmp}/b.safetensors", "--finetuned",
                    f"{tmp}/fl.safetensors", "--out", dds, "--min-dct-elements", "1024",
                    "--bits", "1"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with open(dds, "rb") as f:
        lr = f.read()
    write(f"{out}/container/lr", lr)
    for j, (rows, cols, payload) in enumerate(dct_payloads(lr, 3)):
        view = struct.pack("<HH", (rows - 1) % 256, (cols - 1) % 256)
        write(f"{out}/ecq_payload/lr_{j}", view + payload)

    # TF.js: the real manifests and a small one over w.bin.
    for src in [faceres, os.path.join(models, "faceres", "faceres-deep.json"),
                os.path.join(models, "use-lite", "model.json")]:
        if os.path.exists(src):
            with open(src, "rb") as f:
                write(f"{out}/tfjs/{os.path.basename(os.path.dirname(src))}_"
                      f"{os.path.basename(src)}", f.read())
    write(f"{out}/tfjs/small", json.dumps({"weightsManifest": [{"paths": ["w.bin"], "weights": [
        {"name": "a", "shape": [2, 2], "dtype": "float32"},
        {"name": "b", "shape": [4], "dtype": "float32",
         "quantization": {"dtype": "float16", "original_dtype": "float32"}},
        {"name": "c", "shape": [2], "dtype": "float32",
         "quantization": {"dtype": "uint8", "min": -1, "scale": 0.01,
                          "original_dtype": "float32"}},
        {"name": "d", "shape": [3], "dtype": "int32"}]}]}).encode())

    # tenants config: the example and one naming a token file.
    with open(os.path.join(repo, "deploy", "secrets.example", "tenants.json"), "rb") as f:
        write(f"{out}/tenants_config/example", f.read())
    write(f"{out}/tenants_config/token_file", json.dumps(
        {"tenants": [{"name": "acme", "tokens": [{"token_file": "tokens.txt"}],
                      "quota_bytes": 1 << 30}], "tokens_files": ["tokens.txt"]}
    ).encode())


if __name__ == "__main__":
    main()
