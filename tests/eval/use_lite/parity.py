"""Checks the torch USE-lite (use_model.py) against the real TF.js graph run by node.

Usage: /usr/bin/python3 tests/eval/use_lite/parity.py [--fortunes N] [--all-ids]
Needs `npm install @tensorflow/tfjs @tensorflow-models/universal-sentence-encoder` in
tests/eval/use_lite/.cache (see README.md). Prints token-id agreement of the Python tokenizer
with the JS one and the max abs difference of the 512-d embeddings (batched and one by one).
Exit status 1 if ids differ or the embedding difference exceeds 1e-4.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import use_model  # noqa: E402

EDGE_CASES = [
    "Hello world.",
    "The quick brown fox jumps over the lazy dog, twice!",
    "  leading and trailing spaces  ",
    "Tabs\tand\nnewlines are not spaces",
    "Ünïcödé: café, naïve, ﬁ ligature, ２ full-width digits",
    "Emoji 😀 and CJK 漢字 are unknown pieces",
    "x",
    "Numbers 3.14159 and 2026-11-29, e-mail a@b.org, URL http://debian.org/",
    " ".join(["long"] * 150),  # more than 128 pieces: the graph clips positions >= 128
]


def run_tfjs(texts, ids_only=False):
    with tempfile.TemporaryDirectory() as d:
        src, dst = os.path.join(d, "in.json"), os.path.join(d, "out.json")
        with open(src, "w", encoding="utf-8") as f:
            json.dump({"texts": texts}, f)
        cmd = ["node", os.path.join(HERE, "parity.js"), use_model.model_dir(), src, dst]
        cmd += ["ids-only"] if ids_only else []
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
        with open(dst, encoding="utf-8") as f:
            return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fortunes", type=int, default=40,
                    help="also check this many texts of the finetuning data set")
    ap.add_argument("--all-ids", action="store_true",
                    help="only compare token ids, on every text of the data set")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.all_ids:
        import data
        ds = data.load_dataset()
        texts = [t for k in ("train", "validation", "test") for t, _ in ds[k]]
        js = run_tfjs(texts, ids_only=True)
        tok = use_model.Tokenizer.load()
        bad = [t for t, ids in zip(texts, js["ids"]) if tok.encode(t) != ids]
        print(f"tokenizer: {len(texts) - len(bad)}/{len(texts)} data-set texts give identical "
              f"ids ({sum(len(x) for x in js['ids'])} tokens)")
        for t in bad[:5]:
            print(f"  mismatch on {t!r}")
        return 1 if bad else 0
    texts = list(EDGE_CASES)
    if args.fortunes:
        import data
        ds = data.load_dataset()
        texts += [t for t, _ in ds["test"][:args.fortunes]]
    js = run_tfjs(texts)
    tok = use_model.Tokenizer.load()
    py_ids = [tok.encode(t) for t in texts]
    mismatches = [i for i, (a, b) in enumerate(zip(py_ids, js["ids"])) if a != b]
    model = use_model.UseLite(use_model.load_tfjs_weights())
    model.eval()
    with torch.no_grad():
        batched = model.embed(js["ids"]).numpy()
        single = np.concatenate([model.embed([x]).numpy() for x in js["ids"]])
    ref_b = np.asarray(js["embeddings"], dtype=np.float32)
    ref_s = np.asarray(js["single"], dtype=np.float32)
    d_batch = float(np.abs(batched - ref_b).max())
    d_single = float(np.abs(single - ref_s).max())
    d_js = float(np.abs(ref_b - ref_s).max())
    unk = sum(1 for x in js["ids"] if 0 in x)
    cos = float(np.min(np.sum(batched * ref_b, 1)))
    print(f"tfjs {js['tfjs_version']}, tokenizer of universal-sentence-encoder "
          f"{js['tokenizer_version']}: {len(texts)} texts ({unk} with id-0 pieces), "
          f"{sum(len(x) for x in js['ids'])} tokens")
    print(f"tokenizer: {len(texts) - len(mismatches)}/{len(texts)} texts give identical ids")
    print(f"embeddings max|torch - tfjs|: batched {d_batch:.3g}, one-by-one {d_single:.3g}; "
          f"tfjs batched vs one-by-one {d_js:.3g}; min cosine {cos:.7f}")
    for i in mismatches[:5]:
        print(f"  id mismatch on {texts[i]!r}:\n    py {py_ids[i]}\n    js {js['ids'][i]}")
    ok = not mismatches and max(d_batch, d_single) <= 1e-4
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
