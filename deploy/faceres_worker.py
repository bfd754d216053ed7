#!/usr/bin/python3
"""A Python inference worker for the main job (deploy/main-job.sh): loads task
faceres-deep from deltaserved through the deltaserve package twice, runs the real
faceres network (tests/eval/faceres_torch.py, a torch forward of the TF.js graph) on
real face photos from Debian packages (tests/eval/faces.py) and prints the descriptor
cosine of each load to the finetuned model and to the base.

  1. StreamWeights: Client.load_into writes the merged weights into the worker's model
     (a dict of torch tensors, allocated once) in place, every tensor checksummed.
  2. StreamDelta + local decode: Client.fetch_delta (the compressed container) and
     deltaserve.apply_delta with a LocalBase (the base safetensors, mapped once) decode
     and merge in the worker through the C++ codec, into a second model in place.
Both loads must be bit-identical and give identical network outputs (exit 1 otherwise).

Usage: PYTHONPATH=build/python deploy/faceres_worker.py --models DIR --base BASE.safetensors
       [--task faceres-deep] [--server ADDR]  (server, token: $DELTASERVE_SERVER/_TOKEN)
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "eval"))
import faceres_torch  # noqa: E402
import faces  # noqa: E402
import tensors_io  # noqa: E402

from deltaserve import Client, LocalBase, apply_delta  # noqa: E402
from deltaserve import dtypes  # noqa: E402

OUT_DESC = "global_pooling/Mean"


def descriptors(model_json, weights, images):
    graph = faceres_torch.TfjsGraph(model_json, weights, [OUT_DESC])
    return np.concatenate([graph(images[i:i + 16])[OUT_DESC] for i in range(0, len(images), 16)])


def cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", required=True, help="dir with faceres.json, faceres-deep.json")
    ap.add_argument("--base", required=True, help="base safetensors the server serves")
    ap.add_argument("--task", default="faceres-deep")
    ap.add_argument("--server", default=None)
    args = ap.parse_args()
    missing = faces.missing_sources()
    if missing:
        print(f"SKIP worker: face photos missing ({missing}); deploy/install-deps.sh installs them")
        return 0

    model_json, ft_tfjs = tensors_io.load_tfjs_graph(os.path.join(args.models, "faceres-deep.json"))
    _, base_tfjs = tensors_io.load_tfjs_graph(os.path.join(args.models, "faceres.json"))
    labels, images, _ = faces.load_faces()
    client = Client(args.server)
    info = client.task_info(args.task, tensors=True)

    def empty_model():  # the worker's model, allocated once in the task's dtypes
        return {t.name: torch.empty(tuple(t.shape), dtype=dtypes.torch_dtype(t.dtype))
                for t in info.tensors}

    t0 = time.monotonic()
    streamed = empty_model()
    stats = client.load_into(streamed, args.task)
    t1 = time.monotonic()
    local_base = LocalBase(args.base)
    base_hash = local_base.hash
    t2 = time.monotonic()
    decoded = empty_model()
    container = client.fetch_delta(args.task)
    apply_delta(decoded, container, local_base)
    t3 = time.monotonic()

    identical = all(torch.equal(streamed[n].view(torch.int32), decoded[n].view(torch.int32))
                    if streamed[n].dtype == torch.float32 else torch.equal(streamed[n], decoded[n])
                    for n in streamed)

    def with_task(model):  # graph constants (int32 indices...) from the TF.js model
        w = dict(base_tfjs)
        w.update({n: t.float().numpy() for n, t in model.items()})
        return w

    ref = descriptors(model_json, ft_tfjs, images)
    d_stream = descriptors(model_json, with_task(streamed), images)
    d_delta = descriptors(model_json, with_task(decoded), images)
    d_base = descriptors(model_json, base_tfjs, images)
    same_outputs = np.array_equal(d_stream, d_delta)
    print(f"worker: {len(labels)} real face photos, task {args.task} ({info.num_tensors} tensors, "
          f"{info.merged_bytes} merged bytes, container {info.container_bytes} bytes)")
    print(f"worker: StreamWeights load_into      {t1 - t0:.3f} s ({stats.bytes} bytes, "
          f"checksums verified)")
    print(f"worker: StreamDelta + local decode  {t3 - t2:.3f} s ({len(container)} bytes on the "
          f"wire; LocalBase {local_base.total_bytes} bytes kept, hash {base_hash} in "
          f"{t2 - t1:.3f} s once)")
    for name, d in (("StreamWeights", d_stream), ("StreamDelta+decode", d_delta),
                    ("base alone", d_base)):
        c = cosine(d, ref)
        print(f"worker: descriptor cosine to finetuned, {name:<18} mean {c.mean():.4f} "
              f"min {c.min():.4f}")
    c = cosine(d_stream, d_base)
    print(f"worker: descriptor cosine of the served task to the base: mean {c.mean():.4f}")
    print(f"worker: both loads bit-identical: {'yes' if identical else 'NO'}; identical "
          f"descriptors: {'yes' if same_outputs else 'NO'}")
    return 0 if identical and same_outputs else 1


if __name__ == "__main__":
    sys.exit(main())
