"""A real base -> finetuned transformer pair: USE-lite finetuned on fortunes categories.

API for the tests/eval harness:
  prepare(cache_dir, smoke=False) -> (base_safetensors, finetuned_safetensors)
      Trains once (about 4 CPU-minutes on one core; more wall time on a busy machine) and
      caches under cache_dir/use_lite-<data sha256[:12]>-s<seed>-<recipe>/ (with train.json,
      the training log); later calls return at once. smoke=True: a small pair (SMOKE_TRAIN
      examples, 1 epoch) with the same tensors, for tests under a minute.
  accuracy(weights_safetensors, split="test", limit=None) -> float
      Classification accuracy of any weights file with the tensor names below (base, finetuned
      or a reconstructed/compressed variant). `limit` evaluates the first `limit` examples only.
  head_only_accuracy(cache_dir=None, split="test", limit=None, smoke=False) -> float
      Accuracy of the pretrained encoder, frozen, with a head trained on its embeddings: this
      is exactly the base file (what the finetune delta buys is accuracy(ft) - this).
      cache_dir None: the one of the last prepare() in this process.

Recipe (linear probe, then full finetune; "LP-FT"):
  1. head-only: classifier [512 -> 8] on the frozen, L2-normalized USE embeddings of the train
     split (texts cut to MAX_TOKENS pieces), full-batch Adam. base = pretrained + this head.
  2. finetune: from base, ALL weights (embeddings, both transformer layers, layer norms,
     tanh layer, head) with Adam (encoder LR_ENCODER, head LR_HEAD, linear decay to 0),
     EPOCHS epochs, batch 32, cross-entropy, no weight decay (never-seen embedding rows stay
     bit-identical). LR_ENCODER 3e-4 was picked over 1e-4 by validation accuracy
     (0.8300 vs 0.8275, head-only 0.7875; a tie within noise; 3e-4 gives the larger delta).
Both files hold every float32 tensor of the TF.js graph under its TF.js weight name
(6,975,877 values, 133 of them constants that never change) plus the head,
"classifier/kernel" [512, 8] and "classifier/bias" [8]; all float32.

CLI: /usr/bin/python3 tests/eval/use_lite/pair.py [--cache DIR] [--smoke]
"""
import argparse
import functools
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import data  # noqa: E402
import tensors_io  # noqa: E402  (tests/eval/tensors_io.py)
import use_model  # noqa: E402

SEED = 1
RECIPE = "lpft2"
MAX_TOKENS = 48
BATCH = 32
EPOCHS = 3
LR_ENCODER = 3e-4
LR_HEAD = 1e-3
HEAD_STEPS = 400
HEAD_LR = 0.05
HEAD_WEIGHT_DECAY = 1e-4
SMOKE_LIMIT = 200
SMOKE_TRAIN = 320
DEFAULT_CACHE = os.path.join(HERE, ".cache", "pair")


_last_cache = [None]  # the cache_dir of the last prepare() in this process


@functools.lru_cache(maxsize=None)
def _dataset():
    return data.load_dataset()


@functools.lru_cache(maxsize=None)
def _tokenizer():
    return use_model.Tokenizer.load()


@functools.lru_cache(maxsize=None)
def _split_ids(split):
    ds = _dataset()
    if split not in ("train", "validation", "test"):
        raise ValueError(f"unknown split {split!r}")
    tok = _tokenizer()
    ids = tuple(tuple(tok.encode(t)[:MAX_TOKENS]) for t, _ in ds[split])
    labels = tuple(y for _, y in ds[split])
    return ids, labels


def _cache_path(cache_dir, smoke=False):
    tag = "-smoke" if smoke else ""
    return os.path.join(cache_dir, f"use_lite-{_dataset()['sha256'][:12]}-s{SEED}-{RECIPE}{tag}")


def _batches(ids, order):
    """Batches of BATCH in `order`, sorted by length inside windows of 8 batches."""
    out = []
    win = BATCH * 8
    for s in range(0, len(order), win):
        chunk = sorted(order[s:s + win], key=lambda i: len(ids[i]))
        out += [chunk[k:k + BATCH] for k in range(0, len(chunk), BATCH)]
    return out


def _predict(model, ids, bs=64):
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pred = np.zeros(len(ids), dtype=np.int64)
    with torch.no_grad():
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            pred[idx] = model([list(ids[i]) for i in idx]).argmax(1).numpy()
    return pred


def _embed(model, ids, bs=64):
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(ids), bs):
            out.append(model.embed([list(x) for x in ids[s:s + bs]]))
    return torch.cat(out)


def _train_head(feats, labels, n_classes):
    g = torch.Generator().manual_seed(SEED)
    w = (torch.randn(512, n_classes, generator=g) * 0.01).requires_grad_()
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=HEAD_LR, weight_decay=HEAD_WEIGHT_DECAY)
    y = torch.tensor(labels)
    for _ in range(HEAD_STEPS):
        loss = torch.nn.functional.cross_entropy(feats @ w + b, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def _sorted(d):
    return {k: d[k] for k in sorted(d)}


def _log(msg):
    print(f"[use_lite] {msg}", flush=True)


def _train(out_dir, n_train=None, epochs=EPOCHS, n_val=None):
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    ds = _dataset()
    n_classes = len(ds["labels"])
    tr_ids, tr_y = _split_ids("train")
    if n_train:
        tr_ids, tr_y = tr_ids[:n_train], tr_y[:n_train]
    va_ids, va_y = _split_ids("validation")
    if n_val:
        va_ids, va_y = va_ids[:n_val], va_y[:n_val]
    weights = use_model.load_tfjs_weights()
    t0 = time.time()
    c0 = time.process_time()

    model = use_model.UseLite(weights, num_classes=n_classes)
    feats = _embed(model, tr_ids)
    w, b = _train_head(feats, tr_y, n_classes)
    with torch.no_grad():
        model.params[use_model.CLASSIFIER_W].copy_(w)
        model.params[use_model.CLASSIFIER_B].copy_(b)
    base_state = model.state_numpy()
    va_base = float((_predict(model, va_ids) == np.array(va_y)).mean())
    t_head = time.time() - t0
    _log(f"head-only: validation accuracy {va_base:.4f} ({t_head:.1f} s)")

    head = [p for k, p in model.params.items() if k.startswith("classifier/")]
    enc = [p for k, p in model.params.items() if not k.startswith("classifier/")]
    opt = torch.optim.Adam([{"params": enc, "lr": LR_ENCODER}, {"params": head, "lr": LR_HEAD}])
    rng = np.random.RandomState(SEED)
    steps_per_epoch = len(_batches(tr_ids, list(range(len(tr_ids)))))
    total = steps_per_epoch * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / total)
    y_all = torch.tensor(tr_y)
    history = []
    for epoch in range(epochs):
        model.train()
        te = time.time()
        batches = _batches(tr_ids, list(rng.permutation(len(tr_ids))))
        rng.shuffle(batches)
        run_loss = 0.0
        for idx in batches:
            logits = model([list(tr_ids[i]) for i in idx])
            loss = torch.nn.functional.cross_entropy(logits, y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            run_loss += float(loss) * len(idx)
        va = float((_predict(model, va_ids) == np.array(va_y)).mean())
        history.append({"epoch": epoch + 1, "train_loss": run_loss / len(tr_ids),
                        "validation_accuracy": va, "seconds": time.time() - te})
        _log(f"epoch {epoch + 1}: train loss {run_loss / len(tr_ids):.4f}, "
             f"validation accuracy {va:.4f} ({time.time() - te:.1f} s)")
    ft_state = model.state_numpy()
    t_total = time.time() - t0
    c_total = time.process_time() - c0

    meta = {"dataset": "Debian package fortunes 1:1.99.1-7.3, /usr/share/games/fortunes",
            "labels": ",".join(ds["labels"]), "data_sha256": ds["sha256"], "seed": str(SEED),
            "recipe": RECIPE, "max_tokens": str(MAX_TOKENS)}
    os.makedirs(out_dir, exist_ok=True)
    base_p = os.path.join(out_dir, "base.safetensors")
    ft_p = os.path.join(out_dir, "finetuned.safetensors")
    # write_safetensors writes via a temporary file and renames (no half-written cache).
    tensors_io.write_safetensors(base_p, _sorted(base_state), dict(meta, role="base"))
    tensors_io.write_safetensors(ft_p, _sorted(ft_state), dict(meta, role="finetuned"))
    info = dict(meta, splits={k: len(ds[k]) for k in ("train", "validation", "test")},
                train_examples_used=len(tr_ids),
                head_seconds=t_head, train_seconds=t_total, train_cpu_seconds=c_total,
                history=history,
                head_only_validation_accuracy=va_base,
                hparams={"epochs": epochs, "batch": BATCH, "lr_encoder": LR_ENCODER,
                         "lr_head": LR_HEAD, "head_steps": HEAD_STEPS, "head_lr": HEAD_LR})
    with open(os.path.join(out_dir, "train.json"), "w") as f:
        json.dump(info, f, indent=1)
    return base_p, ft_p


def prepare(cache_dir=DEFAULT_CACHE, smoke=False):
    """Returns (base, finetuned) safetensors paths, training first if not cached. smoke=True
    makes a small pair instead (first SMOKE_TRAIN train examples, 1 epoch, ~20 s): same
    tensors and names, for tests that must finish in under a minute; its accuracies are not
    the headline figures."""
    _last_cache[0] = cache_dir
    out = _cache_path(cache_dir, smoke)
    base_p = os.path.join(out, "base.safetensors")
    ft_p = os.path.join(out, "finetuned.safetensors")
    if not (os.path.exists(base_p) and os.path.exists(ft_p)):
        _log(f"training the {'smoke ' if smoke else ''}pair into {out}")
        if smoke:
            _train(out, n_train=SMOKE_TRAIN, epochs=1, n_val=SMOKE_LIMIT)
        else:
            _train(out)
    return base_p, ft_p


def load_model(weights_path):
    """UseLite with a head from a safetensors file; constants missing from it are taken from the
    pretrained graph, any other missing or mis-shaped tensor raises ValueError."""
    tensors = {k: np.asarray(v, dtype=np.float32)
               for k, v in tensors_io.read_safetensors(weights_path).items()}
    ref = use_model.float_weights(use_model.load_tfjs_weights())
    for k, v in ref.items():
        if k not in tensors:
            if use_model.is_trainable(k, v):
                raise ValueError(f"{weights_path}: tensor {k} is missing")
            tensors[k] = v
        elif tuple(tensors[k].shape) != tuple(v.shape):
            raise ValueError(f"{weights_path}: tensor {k} has shape {list(tensors[k].shape)}, "
                             f"expected {list(v.shape)}")
    if use_model.CLASSIFIER_W not in tensors or use_model.CLASSIFIER_B not in tensors:
        raise ValueError(f"{weights_path}: classifier/kernel or classifier/bias is missing")
    n_classes = tensors[use_model.CLASSIFIER_W].shape[1]
    return use_model.UseLite(tensors, num_classes=n_classes)


def accuracy(weights_path, split="test", limit=None):
    torch.set_num_threads(1)
    ids, labels = _split_ids(split)
    if limit:
        ids, labels = ids[:limit], labels[:limit]
    model = load_model(weights_path)
    return float((_predict(model, ids) == np.array(labels)).mean())


def head_only_accuracy(cache_dir=None, split="test", limit=None, smoke=False):
    """cache_dir None: the one of the last prepare() call in this process, else DEFAULT_CACHE."""
    base_p, _ = prepare(cache_dir or _last_cache[0] or DEFAULT_CACHE, smoke)
    return accuracy(base_p, split, limit)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=DEFAULT_CACHE)
    ap.add_argument("--smoke", action="store_true",
                    help=f"small pair (first {SMOKE_TRAIN} train examples, 1 epoch) evaluated "
                    f"on the first {SMOKE_LIMIT} test examples")
    args = ap.parse_args()
    t = time.time()
    base_p, ft_p = prepare(args.cache, args.smoke)
    t_prep = time.time() - t
    limit = SMOKE_LIMIT if args.smoke else None
    ds = _dataset()
    t = time.time()
    acc_ft = accuracy(ft_p, "test", limit)
    acc_base = accuracy(base_p, "test", limit)
    n = limit or len(ds["test"])
    print(f"data: fortunes ({len(ds['labels'])} classes) sha256 {ds['sha256']}, "
          f"train/validation/test {len(ds['train'])}/{len(ds['validation'])}/{len(ds['test'])}")
    print(f"base:      {base_p}\nfinetuned: {ft_p}  (prepare {t_prep:.1f} s)")
    print(f"test accuracy on {n} examples: finetuned {acc_ft:.4f}, head-only (base) "
          f"{acc_base:.4f}, chance {1 / len(ds['labels']):.4f}  (eval {time.time() - t:.1f} s)")


if __name__ == "__main__":
    main()
