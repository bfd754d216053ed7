"""The labeled text set for the USE-lite finetune: Debian `fortunes` files labeled by category.

Source: Debian 12 package `fortunes` 1:1.99.1-7.3 (install: apt-get install fortunes), files
/usr/share/games/fortunes/<category> (entries separated by lines holding only "%").
Label set: the 8 largest topical categories of that package (catch-all files such as
cookie, people, miscellaneous, platitudes, knghtbrd are left out):
computers, definitions, men-women, politics, science, songs-poems, work, zippy.
Cleaning: terminal overstrikes (backspace) resolved, whitespace runs collapsed to one space,
entries shorter than 20 characters dropped, texts occurring more than once (anywhere in the
8 files) dropped entirely. Then each category is shuffled with random.Random(SEED) and cut to
PER_CLASS entries; split per class 70/10/20 into train/validation/test (stratified), each split
shuffled with the same generator. The exact result (split, text, label) is hashed; a different
hash raises DataMismatchError instead of silently evaluating something else.
"""
import hashlib
import json
import os
import random

FORTUNES_DIR = "/usr/share/games/fortunes"
CATEGORIES = ["computers", "definitions", "men-women", "politics", "science", "songs-poems",
              "work", "zippy"]
SEED = 20261129
PER_CLASS = 500
MIN_CHARS = 20
FRACTIONS = (0.7, 0.1)  # train, validation; the rest is test
# SHA-256 of json.dumps([[split, text, label], ...]) over train, validation, test in order.
EXPECTED_SHA256 = "5cf9f79aaf6d732666ab08fd9c0577a3992aa4005a7b6f9e8201386ddd0b5d8d"


class DataMismatchError(RuntimeError):
    pass


def _overstrike(line):
    """Resolves backspace overstrikes ('_\\bx' underline, 'x\\bx' bold, "'\\be" accent)."""
    buf, pos = [], 0
    for c in line:
        if c == "\b":
            pos = max(0, pos - 1)
        elif pos < len(buf):
            buf[pos] = buf[pos] if c == "_" else c
            pos += 1
        else:
            buf.append(c)
            pos += 1
    return "".join(buf)


def clean(text):
    return " ".join(" ".join(_overstrike(line) for line in text.split("\n")).split())


def read_category(name, directory=FORTUNES_DIR):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} is missing: install the Debian package `fortunes` (apt-get install fortunes)")
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    entries, cur = [], []
    for line in raw.split("\n"):
        if line == "%":
            entries.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    if any(s.strip() for s in cur):
        entries.append("\n".join(cur))
    return [clean(e) for e in entries]


def build(directory=FORTUNES_DIR):
    per_cat = {c: [t for t in read_category(c, directory) if len(t) >= MIN_CHARS]
               for c in CATEGORIES}
    counts = {}
    for texts in per_cat.values():
        for t in texts:
            counts[t] = counts.get(t, 0) + 1
    rng = random.Random(SEED)
    splits = {"train": [], "validation": [], "test": []}
    for label, c in enumerate(CATEGORIES):
        texts = [t for t in per_cat[c] if counts[t] == 1]
        rng.shuffle(texts)
        texts = texts[:PER_CLASS]
        n_tr = int(round(len(texts) * FRACTIONS[0]))
        n_va = int(round(len(texts) * FRACTIONS[1]))
        splits["train"] += [(t, label) for t in texts[:n_tr]]
        splits["validation"] += [(t, label) for t in texts[n_tr:n_tr + n_va]]
        splits["test"] += [(t, label) for t in texts[n_tr + n_va:]]
    for k in ("train", "validation", "test"):
        rng.shuffle(splits[k])
    return splits


def digest(splits):
    rows = [[k, t, CATEGORIES[y]] for k in ("train", "validation", "test") for t, y in splits[k]]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()


def load_dataset(directory=FORTUNES_DIR, check=True):
    """Returns {"train"|"validation"|"test": [(text, label)], "sha256": hex, "labels": [...]}."""
    splits = build(directory)
    h = digest(splits)
    if check and EXPECTED_SHA256 and h != EXPECTED_SHA256:
        raise DataMismatchError(
            f"fortunes data set from {directory} hashes to {h}, expected {EXPECTED_SHA256}: the "
            f"installed `fortunes` package differs from 1:1.99.1-7.3 or data.py changed")
    splits["sha256"] = h
    splits["labels"] = list(CATEGORIES)
    return splits


if __name__ == "__main__":
    ds = load_dataset(check=False)
    print({k: len(ds[k]) for k in ("train", "validation", "test")}, ds["sha256"])
