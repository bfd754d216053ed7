"""Smoke test of the USE-lite pair (< 60 s on one free core): tokenizer
ids fixed by the TF.js tokenizer, torch vs TF.js graph (when node and the npm cache are
there), and a small finetune (pair.prepare(smoke=True)) whose files hold every tensor under its
TF.js name, with every trainable tensor changed and the constants unchanged.

Usage: /usr/bin/python3 tests/eval/use_lite/smoke_test.py [--work DIR] [--shared DIR]
Exit 0 pass, 1 fail, 77 skipped (models, Debian package fortunes or torch missing).
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# Ids from @tensorflow-models/universal-sentence-encoder@1.3.3's tokenizer (parity.js).
EXPECTED_IDS = {
    "Hello world.": [341, 4125, 311, 6],
    "The quick brown fox jumps over the lazy dog, twice!":
        [34, 2280, 3744, 1394, 152, 2009, 7, 132, 9, 6266, 959, 8, 2890, 78],
}

failures = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what, flush=True)
    if not cond:
        failures.append(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=None, help="cache directory for the smoke pair")
    ap.add_argument("--shared", default=None, help="the shared/ directory (models/use-lite)")
    args = ap.parse_args()
    if args.shared:
        os.environ["DELTASERVE_SHARED_DIR"] = args.shared
    try:
        import numpy as np
        import torch
    except ImportError as e:
        print(f"SKIP: {e} (install python3-numpy python3-torch)")
        return 77
    import data
    import use_model
    if not os.path.exists(os.path.join(use_model.model_dir(), "model.json")):
        print(f"SKIP: {use_model.model_dir()}/model.json missing")
        return 77
    if not os.path.exists(os.path.join(data.FORTUNES_DIR, data.CATEGORIES[0])):
        print("SKIP: Debian package fortunes is not installed (apt-get install fortunes)")
        return 77
    torch.set_num_threads(1)
    t0 = time.time()

    tok = use_model.Tokenizer.load()
    for text, ids in EXPECTED_IDS.items():
        check(tok.encode(text) == ids, f"tokenizer ids of {text!r}")

    weights = use_model.load_tfjs_weights()
    n = sum(v.size for v in use_model.float_weights(weights).values())
    check(n == 6975877, f"float parameters in model.json: {n} (expected 6975877)")

    if os.path.isdir(os.path.join(HERE, ".cache", "node_modules", "@tensorflow", "tfjs")):
        r = subprocess.run([sys.executable, os.path.join(HERE, "parity.py"), "--fortunes", "8"],
                           capture_output=True, text=True)
        print(r.stdout.strip())
        check(r.returncode == 0, "torch forward == TF.js graph (parity.py)")
    else:
        print("skip  TF.js parity: run `npm install` in tests/eval/use_lite/.cache (README.md)")

    import pair
    work = args.work or os.path.join(HERE, ".cache", "smoke")
    base_p, ft_p = pair.prepare(work, smoke=True)
    base = use_model.tensors_io.read_safetensors(base_p, as_float32=False)
    ft = use_model.tensors_io.read_safetensors(ft_p, as_float32=False)
    ref = use_model.float_weights(weights)
    names = set(ref) | {use_model.CLASSIFIER_W, use_model.CLASSIFIER_B}
    check(set(base) == names and set(ft) == names, f"{len(names)} tensors named as in TF.js")
    check(all(v.dtype == np.float32 for v in list(base.values()) + list(ft.values())),
          "all tensors float32")
    same_base = all(np.array_equal(base[k], ref[k]) for k in ref)
    check(same_base, "base encoder == pretrained TF.js weights")
    consts = [k for k in ref if not use_model.is_trainable(k, ref[k])]
    check(all(np.array_equal(ft[k], ref[k]) for k in consts), f"{len(consts)} constants unchanged")
    changed = [k for k in names if k not in consts and not np.array_equal(ft[k], base[k])]
    check(len(changed) == len(names) - len(consts),
          f"finetune changed {len(changed)}/{len(names) - len(consts)} trainable tensors")
    acc_ft = pair.accuracy(ft_p, "test", limit=pair.SMOKE_LIMIT)
    acc_base = pair.head_only_accuracy(work, "test", limit=pair.SMOKE_LIMIT, smoke=True)
    print(f"smoke pair accuracy on {pair.SMOKE_LIMIT} test examples: finetuned {acc_ft:.3f}, "
          f"head-only {acc_base:.3f} (chance 0.125)")
    check(acc_ft > 0.4 and acc_base > 0.4, "smoke pair well above chance")
    print(f"{'PASS' if not failures else 'FAIL'} ({time.time() - t0:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
