#!/usr/bin/python3
"""Smoke version of the fidelity harness (ctest eval_smoke, < 60 s).

faceres pair, one budget (the codec's default schedule "1:1" at p = 32, ~1 bit per weight),
through the real deltactl; the four baselines at Delta-DCT's measured size; the network
on three photos. Asserts what the full run measured (RESULTS.md), with margins:
  - every baseline's bits per weight is within 2% of its target (sign: of 1 bit);
  - the set Delta-DCT codes lossily is the 13 large faceres matrices (pointwise
    conv_pw_3..13, feats, age_pred), 3,417,088 weights;
  - relative delta errors of each method stay in the measured bands, and their order
    on the pointwise matrices is the measured one (EXPECT below);
  - the descriptor cosine of the Delta-DCT reconstruction to the finetuned model.
Exit 0 pass, 1 fail, 77 skip (missing /work/shared models, Python packages, deltactl).
"""
import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
SKIP = 77

# Measured by the full run (RESULTS.md) at the default schedule, p = 32; bands are
# margins around those values, not targets. A codec change that moves Delta-DCT out of
# its band fails here on purpose: re-run run_eval.sh and update these from RESULTS.md.
EXPECT = {
    "num_tensors": 13,
    "num_weights": 3417088,
    "dct_bpw": (1.02, 1.06),  # measured 1.0391
    "err": {  # relative delta error over the 13 matrices (measured)
        "delta-dct": (0.58, 0.63),  # 0.6083
        "sign": (0.64, 0.67),       # 0.6535
        "lowrank": (0.78, 0.83),    # 0.8066
        "topk": (0.78, 0.83),       # 0.8077
        "dare": (4.2, 4.8),         # 4.4763 (seed 0)
    },
    # (better, worse, margin) on the 11 pointwise matrices conv_pw_3..13 together
    "pw_order": [("delta-dct", "sign", 0.02), ("sign", "lowrank", 0.05),
                 ("delta-dct", "topk", 0.05)],
    "dct_desc_cos": 0.77,  # measured 0.8039 on the 3 photos
}


def skip(msg):
    print("SKIP: " + msg)
    sys.exit(SKIP)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deltactl", default="")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(os.path.dirname(
        os.path.dirname(HERE))), "shared"))
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    model_dir = os.path.join(args.shared, "models", "faceres")
    if not os.path.isfile(os.path.join(model_dir, "faceres-deep.json")):
        skip("faceres models not found under %s" % model_dir)
    try:
        import numpy as np
        import torch
        import PIL  # noqa: F401
    except ImportError as e:
        skip("python package missing (%s): install python3-numpy python3-torch python3-pil" % e)
    import faces
    if faces.missing_sources():
        skip("face photos missing (%s): install python3-skimage" %
             ", ".join(faces.missing_sources()))
    if not args.deltactl or not os.access(args.deltactl, os.X_OK):
        skip("deltactl not built (%r)" % args.deltactl)
    torch.set_num_threads(1)
    import dct_backends
    import faceres_pair
    import harness

    t0 = time.time()
    work = args.work or tempfile.mkdtemp(prefix="eval_smoke_")
    os.makedirs(work, exist_ok=True)
    pair = faceres_pair.FaceresPair(model_dir, max_lfw=0)
    base_st, ft_st = pair.write_safetensors(work)
    backend = dct_backends.DeltactlBackend(args.deltactl, base_st, ft_st,
                                           os.path.join(work, "dds"), pair.base, pair.ft)
    rows, deltas = harness.run_pair("faceres", pair.base, pair.ft, backend, pair.metrics,
                                    [1.0], [32], print, dare_seeds=(0,), mixed=False)
    by = {r["method"]: r for r in rows}
    failures = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    dct = by["delta-dct"]
    check(len(deltas) == EXPECT["num_tensors"] and dct["weights"] == EXPECT["num_weights"],
          "Delta-DCT codes %d tensors, %d weights (expect %d, %d)" % (
              len(deltas), dct["weights"], EXPECT["num_tensors"], EXPECT["num_weights"]))
    lo, hi = EXPECT["dct_bpw"]
    check(lo <= dct["bpw"] <= hi, "Delta-DCT bits/weight %.4f in [%g, %g]" % (dct["bpw"], lo, hi))
    for m in ("lowrank", "topk", "dare"):
        r = by[m]
        check(abs(r["bpw"] - r["target_bpw"]) <= 0.02 * r["target_bpw"],
              "%s bits/weight %.4f within 2%% of target %.4f" % (m, r["bpw"], r["target_bpw"]))
    check(abs(by["sign"]["bpw"] - 1.0) <= 0.02, "sign bits/weight %.4f within 2%% of 1" %
          by["sign"]["bpw"])
    for m, (lo, hi) in EXPECT["err"].items():
        e = by[m]["rel_delta_err"]
        check(lo <= e <= hi, "%s rel. delta error %.4f in [%g, %g]" % (m, e, lo, hi))
    check(abs(dct["tool_rel_delta_err"] - dct["rel_delta_err"]) < 1e-4,
          "deltactl eval's rel. delta error %.5f equals the harness's %.5f (decompress)" % (
              dct["tool_rel_delta_err"], dct["rel_delta_err"]))
    pw = [n for n in deltas if n.startswith("conv_pw_")]

    def pw_err(r):
        num = sum((r["per_tensor"][n]["rel_delta_err"] ** 2) * float(np.square(
            deltas[n].astype(np.float64)).sum()) for n in pw)
        return (num / sum(float(np.square(deltas[n].astype(np.float64)).sum())
                          for n in pw)) ** 0.5

    print("pointwise matrices, rel. delta error: " + ", ".join(
        "%s %.4f" % (m, pw_err(by[m])) for m in ("delta-dct", "sign", "lowrank", "topk", "dare")))
    for better, worse, margin in EXPECT["pw_order"]:
        a, b = pw_err(by[better]), pw_err(by[worse])
        check(a + margin < b, "pointwise matrices: %s rel. delta error %.4f < %s %.4f - %g" % (
            better, a, worse, b, margin))
    cos = dct["metrics"]["desc_cos_mean"]
    check(cos >= EXPECT["dct_desc_cos"], "Delta-DCT descriptor cosine %.4f >= %g" % (
        cos, EXPECT["dct_desc_cos"]))
    zero = by["zero"]["metrics"]["desc_cos_mean"]
    check(cos > zero + 0.2, "Delta-DCT descriptor cosine %.4f > zero delta's %.4f + 0.2" % (
        cos, zero))
    print("smoke test %s in %.1fs" % ("FAILED" if failures else "passed", time.time() - t0))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
