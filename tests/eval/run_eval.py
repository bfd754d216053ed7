#!/usr/bin/python3
"""Fidelity harness: Delta-DCT (deltactl) against data-free baselines at equal bytes on
two real base -> finetuned pairs (faceres; USE-lite finetuned by tests/eval/use_lite).

Full run (writes tests/eval/RESULTS.md, results.json, rd_plot.png):
    tests/eval/run_eval.sh                     # = setup.sh, then this script
    /usr/bin/python3 tests/eval/run_eval.py --deltactl build/client/deltactl
Options: --standin (numpy Delta-DCT instead of deltactl; development only, the output
is marked as such), --pairs faceres,use_lite, --budgets 0.5,1,2,4, --patches 16,32,64, --lfw 50.
Rerun only what changed: --methods ecq,ecq-mse,ecq-nolr --reuse tests/eval/results.json
runs those methods and takes every other row from the earlier run's results.json.
The smoke test of the suite is smoke_test.py.
"""
import argparse
import datetime
import json
import os
import pickle
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import dct_backends  # noqa: E402
import harness  # noqa: E402
import report  # noqa: E402
import tensors_io  # noqa: E402

DEFAULT_SHARED = os.path.join(os.path.dirname(ROOT), "shared")


def log(msg):
    print(msg, flush=True)


def find_deltactl(explicit):
    cands = [explicit] if explicit else []
    cands += [os.path.join(ROOT, "build", "client", "deltactl")]
    cands += sorted(os.path.join(ROOT, d, "client", "deltactl") for d in os.listdir(ROOT)
                    if d.startswith("build"))
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def make_backend(args, name, base, ft, base_st, ft_st):
    if args.standin:
        return dct_backends.StandinBackend(base, ft)
    return dct_backends.DeltactlBackend(args.deltactl, base_st, ft_st,
                                        os.path.join(args.cache, name + "_dds"), base, ft)


def run_faceres(args, out):
    import check_faceres_tfjs
    import faceres_pair
    t0 = time.time()
    pair = faceres_pair.FaceresPair(os.path.join(args.shared, "models", "faceres"), args.lfw)
    log("faceres: %d face images, finetuned outputs computed (%.1fs)" % (
        len(pair.images), time.time() - t0))
    if check_faceres_tfjs.tfjs_available() and not args.no_tfjs_check:
        t0 = time.time()
        rows, info = check_faceres_tfjs.check(pair.model_dir, pair.images[:6])
        out["faceres_tfjs_check"] = {"info": info, "rows": rows, "images": pair.labels[:6]}
        log("faceres: torch vs %s, max abs diff %.3g (%.1fs)" % (
            info, max(r[2] for r in rows), time.time() - t0))
    else:
        log("faceres: TensorFlow.js check skipped (node or @tensorflow/tfjs missing)")
    base_st, ft_st = pair.write_safetensors(args.cache)
    out["faceres_inputs"] = {"labels": pair.labels, "hashes": pair.image_hashes}
    out["faceres_base_metrics"] = pair.metrics(pair.base)
    backend = make_backend(args, "faceres", pair.base, pair.ft, base_st, ft_st)
    rows, deltas = harness.run_pair("faceres", pair.base, pair.ft, backend, pair.metrics,
                                    args.budgets, args.patches, log, methods=args.methods,
                                    targets=reused_targets(args, "faceres"))
    out["rows"] += rows
    out["tool"] = getattr(backend, "tool", None) or backend.name
    out["faceres_deltas"] = deltas
    out["faceres_ft"] = pair.ft


def use_log_probs(use_pair, weights_path, bs=64):
    """log-softmax outputs of the USE-lite model in `weights_path` on the test texts."""
    ids, _ = use_pair._split_ids("test")
    model = use_pair.load_model(weights_path)
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = None
    with torch.no_grad():
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            lp = torch.log_softmax(model([list(ids[i]) for i in idx]), 1).double().numpy()
            if out is None:
                out = np.zeros((len(ids), lp.shape[1]))
            out[idx] = lp
    return out


def run_use_lite(args, out):
    sys.path.insert(0, os.path.join(HERE, "use_lite"))
    try:
        import pair as use_pair  # tests/eval/use_lite/pair.py (helper eval-use)
    except ImportError as e:
        out["use_lite_missing"] = "tests/eval/use_lite/pair.py not importable: %s" % e
        log("use_lite: skipped (%s)" % out["use_lite_missing"])
        return
    t0 = time.time()
    # The pair's own default cache (shared with its CLI and tests): trained once.
    cache = getattr(use_pair, "DEFAULT_CACHE", os.path.join(args.cache, "use_lite"))
    os.makedirs(cache, exist_ok=True)
    base_st, ft_st = use_pair.prepare(cache)
    cache = os.path.join(args.cache, "use_lite")
    os.makedirs(cache, exist_ok=True)
    base = tensors_io.read_safetensors(base_st)
    ft = tensors_io.read_safetensors(ft_st)
    eval_path = os.path.join(cache, "eval_weights.safetensors")

    ft_path = os.path.join(cache, "ft_weights.safetensors")
    tensors_io.write_safetensors(ft_path, ft)
    ref_logp = use_log_probs(use_pair, ft_path)

    def evaluate(weights):
        """Test accuracy, and paired metrics against the finetuned model on the same
        texts: agreement of the predicted class, mean KL(finetuned || this) in nats."""
        tensors_io.write_safetensors(eval_path, weights)
        logp = use_log_probs(use_pair, eval_path)
        p_ref = np.exp(ref_logp)
        return {"accuracy": float(use_pair.accuracy(eval_path, split="test")),
                "agreement": float((logp.argmax(1) == ref_logp.argmax(1)).mean()),
                "kl": float((p_ref * (ref_logp - logp)).sum(1).mean())}

    try:
        out["use_lite_test_examples"] = len(use_pair._split_ids("test")[1])
    except Exception:  # noqa: BLE001 - informational only (private helper of the pair)
        pass
    out["use_lite_ref"] = {"finetuned": evaluate(ft)["accuracy"],
                           "head_only": float(use_pair.head_only_accuracy())}
    log("use_lite: finetuned acc %.4f, head-only acc %.4f (%.1fs)" % (
        out["use_lite_ref"]["finetuned"], out["use_lite_ref"]["head_only"], time.time() - t0))
    backend = make_backend(args, "use_lite", base, ft, base_st, ft_st)
    rows, deltas = harness.run_pair("use_lite", base, ft, backend, evaluate, args.budgets,
                                    args.patches, log, methods=args.methods,
                                    targets=reused_targets(args, "use_lite"))
    out["rows"] += rows
    out["tool"] = getattr(backend, "tool", None) or backend.name
    out["use_lite_deltas"] = deltas
    out["use_lite_ft"] = ft


def reused_targets(args, pair):
    """budget -> Delta-DCT bits per weight at the reference patch, from --reuse's rows."""
    return {r["budget"]: r["bpw"] for r in args.reused_rows
            if r["pair"] == pair and r["method"] == "delta-dct" and
            r["patch"] == harness.REF_PATCH and r.get("variant") == "uniform"}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deltactl", help="path of deltactl (default: build*/client/deltactl)")
    ap.add_argument("--standin", action="store_true", help="numpy Delta-DCT (development)")
    ap.add_argument("--shared", default=DEFAULT_SHARED)
    ap.add_argument("--pairs", default="faceres,use_lite")
    ap.add_argument("--budgets", default="0.25,0.5,0.75,1,1.5,2,3,4")
    ap.add_argument("--patches", default="32")
    ap.add_argument("--lfw", type=int, default=50,
                    help="number of LFW face crops (0..100) besides the 3 photos")
    ap.add_argument("--out", default=HERE, help="directory for RESULTS.md etc.")
    ap.add_argument("--cache", default=os.path.join(HERE, ".cache"))
    ap.add_argument("--no-tfjs-check", action="store_true")
    ap.add_argument("--methods", default=",".join(harness.METHODS),
                    help="row methods to run (default: all): " + ",".join(harness.METHODS))
    ap.add_argument("--reuse", help="results.json of an earlier run: its rows of the methods "
                    "not in --methods (and of pairs not run) are kept")
    ap.add_argument("--render-only", action="store_true",
                    help="re-render RESULTS.md and the plot from the last run's saved state")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.budgets = [float(b) for b in args.budgets.split(",")]
    args.patches = [int(p) for p in args.patches.split(",")]
    args.methods = args.methods.split(",")
    args.reused_rows = []
    if args.reuse:
        with open(args.reuse) as f:
            args.reused_rows = json.load(f)["rows"]
    elif set(args.methods) != set(harness.METHODS):
        sys.exit("--methods without all methods needs --reuse (the rows of the others)")
    if not args.standin and not args.render_only:
        args.deltactl = find_deltactl(args.deltactl)
        if not args.deltactl:
            sys.exit("deltactl not found: build it (ninja -C build deltactl) or pass "
                     "--deltactl PATH (or --standin for the numpy stand-in)")
    os.makedirs(args.cache, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    state = os.path.join(args.cache, "last_run.pickle")
    if args.render_only:
        with open(state, "rb") as f:
            out, args.standin = pickle.load(f)
        write_outputs(args, out)
        return
    started = time.time()
    pairs = args.pairs.split(",")
    out = {"rows": [r for r in args.reused_rows
                    if r["pair"] not in pairs or r["method"] not in args.methods]}
    if "faceres" in pairs:
        run_faceres(args, out)
    if "use_lite" in pairs:
        run_use_lite(args, out)
    out["seconds"] = time.time() - started
    # Saved first: a rendering error must not lose a long run (fix, then --render-only).
    out["meta"] = run_meta(args)
    with open(state, "wb") as f:
        pickle.dump((out, args.standin), f)
    write_outputs(args, out)
    log("done in %.0fs: %s" % (out["seconds"], os.path.join(args.out, "RESULTS.md")))


def run_meta(args):
    """This invocation's command, date and machine (RESULTS.md's header)."""
    return {
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "reused": args.reuse and "rows of methods other than %s from %s" % (
            ",".join(args.methods), args.reuse),
        "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
        "machine": "%s, %d cores, torch %s threads=1, numpy %s" % (
            platform.machine(), os.cpu_count(), torch.__version__, np.__version__),
        "standin": args.standin}


def write_outputs(args, out):
    import results_md
    meta = out.get("meta") or run_meta(args)
    out["meta"] = meta  # --render-only keeps the run's own command and date
    keep = {k: v for k, v in out.items() if not k.endswith(("_deltas", "_ft"))}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(keep, f, indent=1, default=float)
    ref_lines = {}
    if "faceres_base_metrics" in out:
        ref_lines["faceres"] = {
            "finetuned (1.0)": (1.0, "gray"),
            "base model, no delta (%.3f)" % out["faceres_base_metrics"]["desc_cos_mean"]:
                (out["faceres_base_metrics"]["desc_cos_mean"], "brown")}
    if "use_lite_ref" in out:
        ref_lines["use_lite"] = {
            "finetuned (%.3f)" % out["use_lite_ref"]["finetuned"]:
                (out["use_lite_ref"]["finetuned"], "gray"),
            "base + head only (%.3f)" % out["use_lite_ref"]["head_only"]:
                (out["use_lite_ref"]["head_only"], "brown")}
    report.plot(out["rows"], os.path.join(args.out, "rd_plot.png"), ref_lines)
    with open(os.path.join(args.out, "RESULTS.md"), "w") as f:
        f.write(results_md.render(out, meta))


if __name__ == "__main__":
    main()
