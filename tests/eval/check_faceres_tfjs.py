"""Checks the torch interpreter (faceres_torch.py) against TensorFlow.js in node.

Runs both faceres.json (base) and faceres-deep.json (finetuned) on a few real face
inputs with pure-JS TensorFlow.js (tfjs_run.js, CPU backend) and with torch, and
returns the max abs difference per output. Needs node and @tensorflow/tfjs installed
in tests/eval/.cache/npm (setup.sh).
"""
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

import faceres_torch
import tensors_io

HERE = os.path.dirname(os.path.abspath(__file__))
NPM_DIR = os.path.join(HERE, ".cache", "npm")
OUTPUTS = ["global_pooling/Mean", "gender_pred/Sigmoid", "age_pred/Softmax"]


def tfjs_available():
    return shutil.which("node") is not None and os.path.isdir(
        os.path.join(NPM_DIR, "node_modules", "@tensorflow", "tfjs"))


def run_tfjs(model_json, x):
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "x.f32")
        out = os.path.join(tmp, "out.json")
        np.ascontiguousarray(x, "<f4").tofile(inp)
        env = dict(os.environ, NODE_PATH=os.path.join(NPM_DIR, "node_modules"))
        subprocess.run(["node", os.path.join(HERE, "tfjs_run.js"), model_json, inp,
                        *map(str, x.shape), out, *OUTPUTS], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        res = json.load(open(out))
    return {k: np.array(res[k], np.float32).reshape(res["shapes"][k]) for k in OUTPUTS}, \
        res["version"], res["backend"]


def check(model_dir, x):
    """Returns a list of (model file, output, max abs diff, max abs value), and tfjs info."""
    rows, info = [], None
    for fname in ("faceres.json", "faceres-deep.json"):
        path = os.path.join(model_dir, fname)
        model, weights = tensors_io.load_tfjs_graph(path)
        ours = faceres_torch.TfjsGraph(model, weights, OUTPUTS)(x)
        theirs, version, backend = run_tfjs(path, x)
        info = "TensorFlow.js %s, backend %s" % (version, backend)
        for k in OUTPUTS:
            rows.append((fname, k, float(np.abs(ours[k] - theirs[k]).max()),
                         float(np.abs(theirs[k]).max())))
    return rows, info
