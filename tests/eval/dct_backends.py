"""Delta-DCT for the harness: the real `deltactl` tool, or a numpy stand-in.

Both backends answer run(patch, schedule) with a DctResult: the reconstructed delta of
every tensor that Delta-DCT coded lossily (name -> float32 array in the tensor's shape),
the bits they take, and the schedule actually used.

DeltactlBackend drives the C++ tool end to end:
  deltactl compress   (base, finetuned safetensors -> .dds container)
  deltactl eval --json  bits = totals.bits_per_weight_lossy x totals.lossy_weights: every
                      byte of the lossy records (name, shapes, payload, checksum) plus their
                      share of the container header and trailer (deltactl's honest count);
                      its rel_delta_error_lossy is kept as a cross-check
  deltactl decompress (.dds + base -> merged safetensors): the reconstruction
It also reads the container's record table itself (codec/FORMAT.md) for the payload
bytes alone (payload_bits: the codec's own bytes, without container framing).
"""
import json
import os
import struct
import subprocess
from collections import namedtuple

import numpy as np

import dct_standin
import tensors_io

DctResult = namedtuple("DctResult", "recon bits schedule container_bytes payload_bits "
                       "tool_rel_delta_err")

ENC_UNCHANGED, ENC_RAW, ENC_DCT, ENC_ECQ = 0, 1, 2, 3
LOSSY = (ENC_DCT, ENC_ECQ)


def read_container_records(path, payload_heads=None):
    """Returns [(name, encoding, payload_length, record_length)] and header metadata.
    payload_heads, if a dict, receives name -> first 8 payload bytes."""
    data = open(path, "rb").read()
    if data[:8] != b"DSDELTA\x1a":
        raise ValueError("%s: not a deltaserve container" % path)
    header_len, = struct.unpack_from("<I", data, 12)
    tensor_count, meta_count = struct.unpack_from("<II", data, 32)
    meta, pos = {}, 40
    for _ in range(meta_count):
        kl, = struct.unpack_from("<I", data, pos)
        key = data[pos + 4:pos + 4 + kl].decode()
        pos += 4 + kl
        vl, = struct.unpack_from("<I", data, pos)
        meta[key] = data[pos + 4:pos + 4 + vl].decode()
        pos += 4 + vl
    pos = header_len
    records = []
    for _ in range(tensor_count):
        if data[pos:pos + 4] != b"DRec":
            raise ValueError("%s: bad record at offset %d" % (path, pos))
        rec_len, = struct.unpack_from("<Q", data, pos + 4)
        nl, = struct.unpack_from("<H", data, pos + 12)
        name = data[pos + 14:pos + 14 + nl].decode()
        q = pos + 14 + nl
        _dtype, enc, rank, base_rank = struct.unpack_from("<BBBB", data, q)
        q += 4 + 8 * rank + 8 * base_rank + 16
        payload_len, = struct.unpack_from("<Q", data, q)
        records.append((name, enc, payload_len, rec_len))
        if payload_heads is not None:
            payload_heads[name] = data[q + 16:q + 24]
        pos += rec_len
    return records, meta


class DeltactlBackend:
    def __init__(self, deltactl, base_st, ft_st, work_dir, base, ft):
        self.deltactl, self.base_st, self.ft_st = deltactl, base_st, ft_st
        self.work_dir, self.base, self.ft = work_dir, base, ft
        os.makedirs(work_dir, exist_ok=True)
        self.name = "deltactl"
        self.tool = None

    def _run(self, args):
        res = subprocess.run([self.deltactl] + args, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError("deltactl %s failed (%d): %s" % (
                " ".join(args), res.returncode, res.stderr.strip()[-2000:]))
        return res.stdout

    def run(self, patch, schedule):
        tag = "p%d_%s" % (patch, (schedule or "default").replace(":", "-").replace(",", "_"))
        args = ["--codec", "dct", "--patch", str(patch)]  # codec v2 is deltactl's default
        if schedule:
            args += ["--schedule", schedule]
        return self._compress_and_read(tag, args, schedule)

    def run_ecq(self, bits, weighting=None, low_rank=True):
        '''Codec v2 (container encoding 3) at `bits` bits per weight (deltactl --bits), with
        the default per-tensor weighting or `weighting` (--ecq-weighting); low_rank=False
        adds --no-low-rank (no low-rank factors + residual).'''
        extra = ["--ecq-weighting", weighting] if weighting else []
        extra += [] if low_rank else ["--no-low-rank"]
        return self._compress_and_read("ecq_%s%s_%g" % (weighting or "default",
                                                         "" if low_rank else "_nolr", bits),
                                       ["--bits", repr(float(bits))] + extra,
                                       "ecq --bits %g" % bits)

    def _compress_and_read(self, tag, extra, schedule):
        dds = os.path.join(self.work_dir, tag + ".dds")
        out = os.path.join(self.work_dir, tag + ".safetensors")
        args = ["compress", "--base", self.base_st, "--finetuned", self.ft_st, "--out", dds]
        self._run(args + extra)
        report = json.loads(self._run(["eval", "--base", self.base_st, "--finetuned",
                                       self.ft_st, "--delta", dds, "--json"]))
        totals = report["totals"]
        self._run(["decompress", "--base", self.base_st, "--delta", dds, "--out", out])
        heads = {}
        records, meta = read_container_records(dds, heads)
        merged = tensors_io.read_safetensors(out)
        recon, payload_bits = {}, 0
        self.last_transforms = {}
        for name, enc, payload_len, _ in records:
            if enc not in LOSSY:
                continue
            if enc == ENC_ECQ:  # payload byte 5: 0 identity, 1 DCT; byte 7 bit 0: low-rank
                # factors + that transform of the residual (codec/FORMAT.md)
                self.last_transforms[name] = ("dct" if heads[name][5] == 1 else "identity") + (
                    "+lowrank" if heads[name][7] & 1 else "")
            recon[name] = merged[name].astype(np.float32) - self.base[name].astype(np.float32)
            payload_bits += 8 * payload_len
        # *_lossy: deltactl since codec v2; *_dct: the same figures under the older names.
        lossy = "lossy" if "lossy_weights" in totals else "dct"
        weights = totals["%s_weights" % lossy]
        if weights != sum(r.size for r in recon.values()):
            raise RuntimeError("deltactl eval counts %d lossy weights, the container holds %d" % (
                weights, sum(r.size for r in recon.values())))
        bits = totals["bits_per_weight_%s" % lossy] * weights
        size = os.path.getsize(dds)
        self.tool = "%s (%s)" % (self.deltactl, meta.get("tool", "?"))
        os.remove(out)
        if "codec.ecq_target" in meta:
            schedule = "ecq %s %s" % (meta["codec.ecq_target"], meta.get("codec.ecq_weighting", ""))
        else:
            schedule = meta.get("codec.schedule", schedule)
        return DctResult(recon, bits, schedule, size, payload_bits,
                         totals.get("rel_delta_error_%s" % lossy))


class StandinBackend:
    """numpy re-implementation (dct_standin.py); development only, never reported."""

    def __init__(self, base, ft, min_dct_elements=16384):
        self.base, self.ft, self.min = base, ft, min_dct_elements
        self.name = "numpy stand-in"

    def run(self, patch, schedule):
        schedule = schedule or "1:1"
        recon, bits = {}, 0
        for name, w in self.ft.items():
            b = self.base.get(name)
            if b is None or w.ndim < 2 or w.size < self.min or np.array_equal(w, b):
                continue
            d = (w.astype(np.float32) - b.astype(np.float32))
            rows, cols = dct_standin.matrix_view(w.shape, patch)
            r, nb = dct_standin.encode_decode(d.reshape(rows, cols), patch, schedule)
            recon[name] = r.reshape(w.shape)
            bits += nb
        return DctResult(recon, bits, schedule, None, bits, None)
