"""The faceres pair: base faceres.json, finetuned faceres-deep.json (shared/models/faceres)
and the network-output metrics of a reconstructed model against the finetuned one.

Outputs compared on the face photographs of faces.py (as @vladmandic/human reads them):
  descriptor  global_pooling/Mean, 1024-D: cosine similarity to the finetuned model's
  gender      gender_pred/Sigmoid > 0.5 is "male": agreement with the finetuned model
  age         human's estimate from age_pred/Softmax (argmax bin i, plus p[i+1] or minus
              p[i-1], whichever neighbour is larger, rounded to 0.1 year): mean absolute
              difference in years to the finetuned model's estimate
"""
import os

import numpy as np

import faceres_torch
import faces
import tensors_io

OUT_DESC = "global_pooling/Mean"
OUT_GENDER = "gender_pred/Sigmoid"
OUT_AGE = "age_pred/Softmax"
BATCH = 16


def human_age(p):
    """@vladmandic/human faceres.ts age: argmax index refined by its larger neighbour."""
    ages = []
    for row in p:
        i = int(np.argmax(row))
        lo = row[i - 1] if i > 0 else -1.0
        hi = row[i + 1] if i + 1 < len(row) else -1.0
        ages.append(round(10 * i - 100 * lo) / 10 if lo > hi else round(10 * i + 100 * hi) / 10)
    return np.array(ages)


class FaceresPair:
    def __init__(self, model_dir, max_lfw=faces.LFW_FACES):
        self.model_dir = model_dir
        self.model_json, self.ft = tensors_io.load_tfjs_graph(
            os.path.join(model_dir, "faceres-deep.json"))
        _, self.base = tensors_io.load_tfjs_graph(os.path.join(model_dir, "faceres.json"))
        self.labels, self.images, self.image_hashes = faces.load_faces(max_lfw)
        self.ref = self.outputs(self.ft)

    def write_safetensors(self, cache_dir):
        """base (float16, as stored) and finetuned (float32) safetensors for deltactl.

        Float tensors only, like `deltactl convert` (the int32 reduction indices of the
        Mean op are graph constants, identical in both models)."""
        os.makedirs(cache_dir, exist_ok=True)
        base_st = os.path.join(cache_dir, "faceres_base.safetensors")
        ft_st = os.path.join(cache_dir, "faceres_ft.safetensors")
        base16 = {k: v.astype(np.float16) for k, v in self.base.items()
                  if v.dtype == np.float32}
        for k, v in self.base.items():
            if v.dtype == np.float32 and not np.array_equal(base16[k].astype(np.float32), v):
                raise ValueError("faceres base tensor %s is not exactly float16" % k)
        tensors_io.write_safetensors(base_st, base16)
        tensors_io.write_safetensors(ft_st, {k: v for k, v in self.ft.items()
                                             if v.dtype == np.float32})
        return base_st, ft_st

    def outputs(self, weights):
        graph = faceres_torch.TfjsGraph(self.model_json, weights, [OUT_DESC, OUT_GENDER, OUT_AGE])
        outs = [graph(self.images[i:i + BATCH]) for i in range(0, len(self.images), BATCH)]
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}

    def metrics(self, weights):
        o = self.outputs(weights)
        a, b = o[OUT_DESC], self.ref[OUT_DESC]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        g = o[OUT_GENDER][:, 0] > 0.5
        g_ref = self.ref[OUT_GENDER][:, 0] > 0.5
        age_diff = np.abs(human_age(o[OUT_AGE]) - human_age(self.ref[OUT_AGE]))
        return {"desc_cos_mean": float(cos.mean()), "desc_cos_min": float(cos.min()),
                "gender_agree": float((g == g_ref).mean()),
                "age_mae_years": float(age_diff.mean())}
