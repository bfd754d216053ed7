"""Data-free delta compressors compared with Delta-DCT at equal bytes (numpy only).

Every method takes the same set of 2-D delta matrices (name -> float32 [rows, cols],
the tensors that Delta-DCT codes lossily; all other tensors are kept exact by every
method) and a target in bits per weight over that whole set, and returns the
reconstructed deltas and the exact number of bits it would store. Bit accounting
(everything that a decoder needs besides the matrix shapes, which every container
records anyway):

  sign      BitDelta without distillation: 1 bit per weight (sign, packed) + one fp16
            scale per matrix (mean |delta|, the L2-optimal scale for a sign matrix).
            Its size is fixed (~1 bit per weight); the target is ignored.
  lowrank   truncated SVD of each matrix, factors A = U sqrt(S) [rows, r] and
            B = sqrt(S) V^T [r, cols] stored in fp16 (reconstruction uses the rounded
            factors) + a 16-bit rank per matrix. Each matrix first gets the largest rank
            that fits its share (target * rows * cols bits); the bits left over are
            then spent one rank at a time on the matrix whose next singular value gives
            the largest energy gain per bit, while it fits.
  topk      magnitude top-k per matrix: k values in fp16 + the positions, counted as
            ceil(log2 C(n, k)) bits (the size of an enumerative / arithmetic code of a
            k-subset of n positions, the least any position code can spend; Golomb-Rice
            coding of the sorted gaps is within a few percent of it) + 32 bits for k.
            k is the largest that fits the matrix's share of the target.
  dare      DARE: keep k uniformly random positions (same k and the same bit count as
            topk: fp16 values + enumerative positions + k), rescale kept values by n/k.
            Reported as the mean over seeds 0, 1, 2.

All functions are deterministic given the seed.
"""
import math

import numpy as np

FP16_BITS = 16


def _fp16(x):
    return x.astype(np.float16).astype(np.float32)


def _log2_binom(n, k):
    if k <= 0 or k >= n:
        return 0.0
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def sparse_bits(n, k):
    """Bits for k fp16 values among n positions (rule in the module docstring)."""
    return FP16_BITS * k + math.ceil(_log2_binom(n, k)) + 32


def _largest_k(n, budget_bits):
    """Largest k in [0, n] with sparse_bits(n, k) <= budget_bits (monotone in k)."""
    lo, hi = 0, n
    if sparse_bits(n, 0) > budget_bits:
        return 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sparse_bits(n, mid) <= budget_bits:
            lo = mid
        else:
            hi = mid - 1
    return lo


def sign_scale(deltas, target_bpw=None):
    """Returns (recon dict, total bits). Ignores target_bpw (fixed ~1 bit/weight)."""
    out, bits = {}, 0
    for name, d in deltas.items():
        scale = np.float32(np.float16(np.abs(d).mean()))
        out[name] = np.where(d >= 0, scale, -scale).astype(np.float32)
        bits += 8 * ((d.size + 7) // 8) + FP16_BITS
    return out, bits


class LowRank:
    """Caches the SVD of each matrix so that several budgets reuse it."""

    def __init__(self, deltas):
        self.deltas = deltas
        self.svd = {}
        for name, d in deltas.items():
            u, s, vt = np.linalg.svd(d.astype(np.float64), full_matrices=False)
            self.svd[name] = (u, s, vt)

    def ranks(self, target_bpw):
        """Rank per matrix for the target (module docstring), and the total bits."""
        ranks, used, total = {}, 0, 0
        for name, d in self.deltas.items():
            rows, cols = d.shape
            share = target_bpw * d.size
            step = FP16_BITS * (rows + cols)
            r = int(max(0, (share - 16) // step))
            r = min(r, min(rows, cols))
            ranks[name] = r
            used += 16 + r * step
            total += share
        left = total - used
        while True:
            best, best_gain = None, 0.0
            for name, d in self.deltas.items():
                rows, cols = d.shape
                r, step = ranks[name], FP16_BITS * (rows + cols)
                s = self.svd[name][1]
                if r < len(s) and step <= left:
                    gain = s[r] ** 2 / step
                    if gain > best_gain:
                        best, best_gain = name, gain
            if best is None:
                break
            rows, cols = self.deltas[best].shape
            ranks[best] += 1
            left -= FP16_BITS * (rows + cols)
            used += FP16_BITS * (rows + cols)
        return ranks, used

    def __call__(self, target_bpw):
        ranks, bits = self.ranks(target_bpw)
        out = {}
        for name, d in self.deltas.items():
            r = ranks[name]
            if r == 0:
                out[name] = np.zeros_like(d)
                continue
            u, s, vt = self.svd[name]
            root = np.sqrt(s[:r])
            a = _fp16((u[:, :r] * root).astype(np.float32))
            b = _fp16((root[:, None] * vt[:r]).astype(np.float32))
            out[name] = a @ b
        return out, bits


def _sparse(deltas, target_bpw, pick):
    """k values per matrix (the largest k that fits), at positions pick(flat, k)."""
    out, bits = {}, 0
    for name, d in deltas.items():
        n = d.size
        k = _largest_k(n, target_bpw * n)
        flat = d.reshape(-1)
        rec = np.zeros(n, np.float32)
        if k > 0:
            idx, gain = pick(flat, k)
            rec[idx] = _fp16(flat[idx] * gain)
        out[name] = rec.reshape(d.shape)
        bits += sparse_bits(n, k)
    return out, bits


def topk(deltas, target_bpw):
    return _sparse(deltas, target_bpw,
                   lambda flat, k: (np.argpartition(-np.abs(flat), k - 1)[:k], 1.0))


def dare(deltas, target_bpw, seed):
    rng = np.random.default_rng(seed)
    return _sparse(deltas, target_bpw,
                   lambda flat, k: (rng.choice(flat.size, size=k, replace=False),
                                    flat.size / k))


DARE_SEEDS = (0, 1, 2)
