"""A numpy re-implementation of Delta-DCT, used ONLY as a stand-in while `deltactl` is
not built (run_eval.py --standin). Reported numbers come from deltactl.

Follows codec/delta_dct.h: p x p patches (zero-padded), ranked by L2 norm, bit-widths
from a schedule (floor of cumulative fraction boundaries), orthonormal 2-D DCT-II per
kept patch, uniform quantization over a clipped [min, max] range (grid search of the
clip factor) with two bfloat16-sized parameters per kept patch. Bits counted: a
ceil(log2(levels))-bit level code per patch (the allocation map), 32 bits of parameters
per kept patch, the packed codes, and a 16-byte header per matrix.
"""
import math

import numpy as np


def parse_schedule(text):
    levels = []
    for tok in text.split(","):
        b, f = tok.split(":")
        levels.append((int(b), float(f)))
    return levels


def schedule_counts(levels, num):
    counts, cum, prev = [], 0.0, 0
    for i, (_, f) in enumerate(levels):
        cum += f
        end = num if i == len(levels) - 1 else int(math.floor(cum * num + 1e-9))
        counts.append(end - prev)
        prev = end
    return counts


def matrix_view(shape, p):
    """2-D view used by codec::MatrixView: split minimizing padded area, ties -> larger k."""
    best = None
    for k in range(1, len(shape)):
        r = int(np.prod(shape[:k]))
        c = int(np.prod(shape[k:]))
        area = (-(-r // p) * p) * (-(-c // p) * p)
        if best is None or area <= best[0]:
            best = (area, r, c)
    return best[1], best[2]


def dct_matrix(p):
    n = np.arange(p)
    c = np.sqrt(2.0 / p) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * p))
    c[0] /= np.sqrt(2.0)
    return c


def encode_decode(delta, p, schedule):
    """Returns (reconstruction float32, bits) for one 2-D delta matrix."""
    rows, cols = delta.shape
    pr, pc = -(-rows // p), -(-cols // p)
    pad = np.zeros((pr * p, pc * p), np.float64)
    pad[:rows, :cols] = delta
    patches = pad.reshape(pr, p, pc, p).transpose(0, 2, 1, 3).reshape(-1, p, p)
    norms = np.sqrt((patches ** 2).sum(axis=(1, 2)))
    order = np.argsort(-norms, kind="stable")
    levels = parse_schedule(schedule)
    counts = schedule_counts(levels, len(order))
    c = dct_matrix(p)
    rec = np.zeros_like(patches)
    bits = 16 * 8 + math.ceil(math.log2(len(levels))) * len(order)
    start = 0
    for (b, _), cnt in zip(levels, counts):
        idx = order[start:start + cnt]
        start += cnt
        if b == 0 or cnt == 0:
            continue
        coef = np.einsum("ij,njk,lk->nil", c, patches[idx], c)
        lo0 = coef.min(axis=(1, 2), keepdims=True)
        hi0 = coef.max(axis=(1, 2), keepdims=True)
        best, best_err = None, None
        # Clipped quantizer: the range [min, max] shrunk about its centre by the factor
        # (searched on a grid) with the least squared error; 1.0 is plain min-max.
        for f in np.linspace(0.05, 1.0, 20):
            mid, half = (lo0 + hi0) / 2, (hi0 - lo0) / 2 * f
            lo = mid - half
            scale = 2 * half / (2 ** b - 1)
            scale[scale == 0] = 1.0
            q = np.clip(np.round((coef - lo) / scale), 0, 2 ** b - 1)
            deq = lo + q * scale
            err = ((deq - coef) ** 2).sum(axis=(1, 2))
            if best is None:
                best, best_err = deq, err
            else:
                better = err < best_err
                best[better] = deq[better]
                best_err = np.minimum(err, best_err)
        rec[idx] = np.einsum("ji,njk,kl->nil", c, best, c)
        bits += cnt * (32 + p * p * b)
    out = rec.reshape(pr, pc, p, p).transpose(0, 2, 1, 3).reshape(pr * p, pc * p)
    return out[:rows, :cols].astype(np.float32), bits
