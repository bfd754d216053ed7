"""python_input_hints: the conversions deltactl suggests for a model that is not
safetensors work with what Debian 12 ships (python3-torch, python3-numpy and deltaserve's
own package; not PyPI's `safetensors`, which Debian 12 lacks), and such an input is a
usage error (exit 2, as a bad flag value).

New-user trial: the `.pt` hint said `from safetensors.torch import save_file`, which fails
on Debian 12 (ModuleNotFoundError), and deltactl exited 1. Each case: a torch.save / numpy
file given to `deltactl convert --in`: exit 2 and a hint with a python3 -c one-liner; the
one-liner, run as the hint says (PYTHONPATH = the built package), writes
model.safetensors; `deltactl convert` then reads it, and every tensor is the original,
bit for bit (bfloat16 included)."""
import os
import re
import subprocess
import tempfile

import numpy as np

from live_daemon import d
from deltaserve import safetensors as st

try:
    import torch
except ImportError:
    d.skip("no torch (python3-torch)")

deltactl = d.need_binary("DELTACTL_BIN", "deltactl")
pythonpath = os.environ["PYTHONPATH"]


def refused_with_hint(path, what):
    """deltactl convert --in path: exit 2 and the hint; returns the one-liner's code."""
    r = subprocess.run([deltactl, "convert", "--in", path, "--out", path + ".out.safetensors"],
                       capture_output=True, text=True, timeout=60, env=d.clean_env())
    d.check(r.returncode == 2, f"{what}: exit {r.returncode}, wanted 2 (a usage error):\n{r.stderr}")
    d.check("safetensors.torch" not in r.stderr and "safetensors.numpy" not in r.stderr,
            f"{what}: the hint needs PyPI's safetensors:\n{r.stderr}")
    m = re.search(r'PYTHONPATH=build/python python3 -c "([^"]*)"', r.stderr)
    d.check(m is not None, f"{what}: no one-liner in:\n{r.stderr}")
    d.check("[type.deltaserve" not in r.stderr, f"{what}: a status payload shown:\n{r.stderr}")
    return m.group(1)


def run_hint(code, cwd, what):
    r = subprocess.run(["/usr/bin/python3", "-c", code], cwd=cwd, capture_output=True,
                       text=True, timeout=120,
                       env=d.clean_env({"PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}))
    d.check(r.returncode == 0, f"{what}: the one-liner failed ({r.returncode}):\n{code}\n{r.stderr}")
    out = os.path.join(cwd, "model.safetensors")
    d.check(os.path.exists(out), f"{what}: no model.safetensors")
    # deltactl reads the result as a model.
    r = subprocess.run([deltactl, "convert", "--in", out, "--out", out + ".copy.safetensors"],
                       capture_output=True, text=True, timeout=60, env=d.clean_env())
    d.check(r.returncode == 0, f"{what}: deltactl convert of the result: {r.returncode}\n{r.stderr}")
    return st.load_file(out)


with tempfile.TemporaryDirectory(prefix="py-hints-") as tmp:
    g = torch.Generator().manual_seed(5)
    sd = {"layers.0.weight": torch.randn(8, 16, generator=g),
          "layers.0.bias": torch.randn(8, generator=g).to(torch.bfloat16),
          "head.weight": torch.randn(4, 8, generator=g).to(torch.float16).t()}  # not contiguous
    for name, obj in [("zip", sd), ("wrapped", {"state_dict": sd, "epoch": 3})]:
        case = os.path.join(tmp, name)
        os.mkdir(case)
        pt = os.path.join(case, "model.pt")
        torch.save(obj, pt)
        got = run_hint(refused_with_hint(pt, f"torch.save ({name})"), case, name)
        d.check(sorted(got) == sorted(sd), f"{name}: tensors {sorted(got)}")
        for k, v in sd.items():
            d.check(got[k].dtype == v.dtype and tuple(got[k].shape) == tuple(v.shape) and
                    torch.equal(got[k], v), f"{name}: {k} differs")
        d.log(f"{name}: exit 2, hint converts {len(got)} tensors bit for bit")

    # deltaserved --base: the same hint, exit 2 (it was 1, a failure to start).
    deltaserved = os.environ.get("DELTASERVED_BIN", "")
    if deltaserved:
        pt = os.path.join(tmp, "zip", "model.pt")
        r = subprocess.run([deltaserved, "--base", pt, "--db", os.path.join(tmp, "db"),
                            "--listen", "127.0.0.1:0", "--metrics-listen", ""],
                           capture_output=True, text=True, timeout=60, env=d.clean_env())
        d.check(r.returncode == 2 and "it is a PyTorch checkpoint" in r.stderr + r.stdout and
                "deltaserve.safetensors import write_file" in r.stderr + r.stdout,
                f"deltaserved --base model.pt: exit {r.returncode}:\n{r.stdout}{r.stderr}")

    # The legacy pickle format (torch.save(..., _use_new_zipfile_serialization=False)).
    case = os.path.join(tmp, "legacy")
    os.mkdir(case)
    pt = os.path.join(case, "pytorch_model.bin")
    torch.save(sd, pt, _use_new_zipfile_serialization=False)
    got = run_hint(refused_with_hint(pt, "legacy pickle"), case, "legacy")
    d.check(all(torch.equal(got[k], v) for k, v in sd.items()), "legacy: tensors differ")

    # numpy: .npz (named arrays) and .npy (one array, named 'weight').
    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.float16)}
    case = os.path.join(tmp, "npz")
    os.mkdir(case)
    np.savez(os.path.join(case, "w.npz"), **arrays)
    got = run_hint(refused_with_hint(os.path.join(case, "w.npz"), ".npz"), case, ".npz")
    d.check(sorted(got) == ["a", "b"] and all(np.array_equal(got[k].numpy(), v)
                                              for k, v in arrays.items()), f".npz: {got}")
    case = os.path.join(tmp, "npy")
    os.mkdir(case)
    np.save(os.path.join(case, "w.npy"), arrays["a"])
    got = run_hint(refused_with_hint(os.path.join(case, "w.npy"), ".npy"), case, ".npy")
    d.check(list(got) == ["weight"] and np.array_equal(got["weight"].numpy(), arrays["a"]),
            f".npy: {got}")
d.log("PASS: every hint's one-liner runs on Debian 12's Python; such inputs exit 2")
