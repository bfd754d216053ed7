"""The comparison at equal bytes, for one base -> finetuned pair.

For each Delta-DCT point (budget, patch size) the DCT backend gives the set S of
tensors that Delta-DCT codes lossily, their reconstructed deltas and the payload bits.
Every baseline codes exactly the same set S, viewed as the same 2-D matrices, at a
target of the Delta-DCT point's measured bits per weight at the reference patch size
(so "equal bytes" means equal to what Delta-DCT really spent); every tensor outside S is
kept exact by every method. bits per weight = bits / (number of weights in S).
"""
import math
import time
from collections import OrderedDict

import numpy as np

import baselines
import dct_standin

# Bit schedules per nominal budget (bits per weight). "uniform": every kept patch at the
# same width, the codec's default family (None = the codec's default, "1:1" at p=32);
# run at every patch size. "mixed": the paper's mixed-precision schedules, run at the
# reference patch size only.
SCHEDULES = OrderedDict([
    (0.25, "1:0.25,0:0.75"),
    (0.5, "1:0.5,0:0.5"),
    (0.75, "1:0.75,0:0.25"),
    (1.0, None),
    (1.5, "2:0.5,1:0.5"),
    (2.0, "2:1"),
    (3.0, "3:1"),
    (4.0, "4:1"),
])
MIXED_SCHEDULES = OrderedDict([
    (0.5, "2:0.25,0:0.75"),
    (1.0, "2:0.5,0:0.5"),
    (2.0, "4:0.25,2:0.5,0:0.25"),
    (4.0, "6:0.25,4:0.5,2:0.25"),
])
PATCHES = (16, 32, 64)
REF_PATCH = 32  # the codec's default patch size (codec/delta_dct.h)


def errors(deltas, recon, ft):
    """Per-tensor and total relative delta error and relative weight error over `deltas`."""
    per, num, den, wden = OrderedDict(), 0.0, 0.0, 0.0
    for name, d in deltas.items():
        r = recon[name].reshape(d.shape)
        e = float(np.square(r.astype(np.float64) - d).sum())
        dn = float(np.square(d.astype(np.float64)).sum())
        wn = float(np.square(ft[name].astype(np.float64)).sum())
        per[name] = {"rel_delta_err": math.sqrt(e / dn) if dn else 0.0,
                     "rel_weight_err": math.sqrt(e / wn) if wn else 0.0}
        num, den, wden = num + e, den + dn, wden + wn
    return per, math.sqrt(num / den), math.sqrt(num / wden)


def merged_weights(base, ft, recon):
    """Finetuned tensors, with those in `recon` replaced by base + reconstructed delta."""
    out = OrderedDict()
    for name, w in ft.items():
        if name in recon:
            out[name] = (base[name].astype(np.float32) + recon[name].reshape(w.shape)).astype(
                np.float32)
        else:
            out[name] = w
    return out


METHODS = ("delta-dct", "ecq", "ecq-mse", "ecq-nolr", "zero", "sign", "lowrank", "topk", "dare")


def run_pair(pair_name, base, ft, backend, evaluate, budgets, patches, log,
             ref_patch=REF_PATCH, dare_seeds=baselines.DARE_SEEDS, eval_dct_all=True,
             mixed=True, methods=METHODS, targets=None):
    """Returns a list of result rows (dicts) for one pair.

    evaluate(weights: name -> array) -> dict of task metrics (or None to skip).
    methods: the row methods to run (METHODS). Without "delta-dct", the baselines need
    `targets` (budget -> bits per weight of Delta-DCT at the reference patch, from an
    earlier run) and the tensor set comes from the first codec v2 run.
    """
    rows = []
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError("unknown methods %s (known: %s)" % (sorted(unknown), ", ".join(METHODS)))

    def add(method, budget, patch, schedule, bits, n, recon_list, t0, variant=None):
        per_list, tot, wtot, metrics = [], [], [], []
        for recon in recon_list:
            per, e, we = errors(deltas, recon, ft)
            per_list.append(per)
            tot.append(e)
            wtot.append(we)
            if evaluate is not None and (method != "delta-dct" or eval_dct_all or
                                         patch == ref_patch):
                metrics.append(evaluate(merged_weights(base, ft, recon)))
        per = OrderedDict((k, {m: float(np.mean([p[k][m] for p in per_list]))
                               for m in per_list[0][k]}) for k in per_list[0])
        row = {"pair": pair_name, "method": method, "budget": budget, "patch": patch,
               "variant": variant, "schedule": schedule, "bits": float(np.mean(bits)), "weights": n,
               "bpw": float(np.mean(bits)) / n, "rel_delta_err": float(np.mean(tot)),
               "rel_weight_err": float(np.mean(wtot)), "per_tensor": per,
               "seeds": len(recon_list), "seconds": time.time() - t0}
        if metrics:
            row["metrics"] = {k: float(np.mean([m[k] for m in metrics])) for k in metrics[0]}
            if len(metrics) > 1:
                row["metrics_std"] = {k: float(np.std([m[k] for m in metrics]))
                                      for k in metrics[0]}
        rows.append(row)
        log("  %-10s %-7s budget %-4s p=%-3s bpw %.4f  rel delta err %.4f  %s  (%.1fs)" % (
            method, variant or "", budget, patch if patch else "-", row["bpw"], row["rel_delta_err"],
            " ".join("%s=%.4f" % kv for kv in row.get("metrics", {}).items()),
            row["seconds"]))

    deltas, n = None, None

    def set_deltas(res):
        nonlocal deltas, n
        deltas = OrderedDict()
        for name in ft:
            if name in res.recon:
                rows_, cols = dct_standin.matrix_view(ft[name].shape, ref_patch)
                d = ft[name].astype(np.float32) - base[name].astype(np.float32)
                deltas[name] = d.reshape(rows_, cols)
        n = sum(d.size for d in deltas.values())
        log("  %s: %d tensors coded lossily, %d weights; backend %s" % (
            pair_name, len(deltas), n, backend.name))

    run_dct = "delta-dct" in methods
    targets = OrderedDict() if run_dct else OrderedDict(targets or {})
    configs = [(b, p, SCHEDULES[b], "uniform") for b in budgets for p in patches]
    if not run_dct:
        configs = []
    elif mixed:
        configs += [(b, ref_patch, MIXED_SCHEDULES[b], "mixed") for b in budgets
                    if b in MIXED_SCHEDULES]
    for budget, patch, schedule, variant in configs:
        t0 = time.time()
        res = backend.run(patch, schedule)
        if deltas is None:
            set_deltas(res)
        if set(res.recon) != set(deltas):
            raise RuntimeError("Delta-DCT coded a different tensor set at p=%d" % patch)
        recon = {k: v.reshape(deltas[k].shape) for k, v in res.recon.items()}
        add("delta-dct", budget, patch, res.schedule, [res.bits], n, [recon], t0, variant)
        rows[-1]["container_bytes"] = res.container_bytes
        rows[-1]["payload_bpw"] = res.payload_bits / n
        rows[-1]["tool_rel_delta_err"] = res.tool_rel_delta_err
        if variant == "uniform" and patch == ref_patch:
            targets[budget] = res.bits / n
    baselines_run = set(methods) & {"zero", "sign", "lowrank", "topk", "dare"}
    if not targets and (run_dct or baselines_run):
        raise ValueError("the reference patch size %d is not among %s" % (ref_patch, patches))
    # Codec v2 (ecq, container encoding 3) at each budget exactly (`deltactl compress
    # --bits B`), the bits counted as for Delta-DCT.
    if hasattr(backend, "run_ecq"):
        for budget in budgets if "ecq" in methods else []:
            t0 = time.time()
            res = backend.run_ecq(budget)
            if deltas is None:
                set_deltas(res)
            if set(res.recon) != set(deltas):
                raise RuntimeError("ecq coded a different tensor set at %s bits" % budget)
            recon = {k: v.reshape(deltas[k].shape) for k, v in res.recon.items()}
            add("ecq", budget, None, res.schedule, [res.bits], n, [recon], t0)
            rows[-1]["container_bytes"] = res.container_bytes
            rows[-1]["payload_bpw"] = res.payload_bits / n
            rows[-1]["tool_rel_delta_err"] = res.tool_rel_delta_err
            rows[-1]["transforms"] = dict(getattr(backend, "last_transforms", {}))
        # The one-step (total squared error) weighting, at the classic budgets only.
        for budget in [b for b in budgets if b in (0.5, 1.0, 2.0, 4.0) and "ecq-mse" in methods]:
            t0 = time.time()
            res = backend.run_ecq(budget, weighting="mse")
            recon = {k: v.reshape(deltas[k].shape) for k, v in res.recon.items()}
            add("ecq-mse", budget, None, res.schedule, [res.bits], n, [recon], t0)
            rows[-1]["transforms"] = dict(getattr(backend, "last_transforms", {}))
        # Without the low-rank factors + residual transform (--no-low-rank): what it buys.
        for budget in [b for b in budgets if b in (0.5, 1.0, 2.0, 4.0) and "ecq-nolr" in methods]:
            t0 = time.time()
            res = backend.run_ecq(budget, low_rank=False)
            recon = {k: v.reshape(deltas[k].shape) for k, v in res.recon.items()}
            add("ecq-nolr", budget, None, res.schedule, [res.bits], n, [recon], t0)
            rows[-1]["transforms"] = dict(getattr(backend, "last_transforms", {}))

    if deltas is None:
        raise ValueError("methods %s code nothing to take the tensor set from: add "
                         "delta-dct or ecq" % sorted(methods))
    if "zero" in methods:
        t0 = time.time()
        add("zero", None, None, None, [0], n, [{k: np.zeros_like(d) for k, d in deltas.items()}],
            t0)
    if "sign" in methods:
        t0 = time.time()
        recon, bits = baselines.sign_scale(deltas)
        add("sign", None, None, None, [bits], n, [recon], t0)
    lowrank = baselines.LowRank(deltas) if "lowrank" in methods else None
    for budget, target in targets.items():
        if budget not in budgets:
            continue
        for method in ("lowrank", "topk", "dare"):
            if method not in methods:
                continue
            t0 = time.time()
            if method == "dare":
                runs = [baselines.dare(deltas, target, s) for s in dare_seeds]
                add("dare", budget, None, None, [b for _, b in runs], n, [r for r, _ in runs], t0)
            else:
                recon, bits = lowrank(target) if method == "lowrank" else baselines.topk(
                    deltas, target)
                add(method, budget, None, None, [bits], n, [recon], t0)
            rows[-1]["target_bpw"] = target
    return rows, deltas
