"""Universal Sentence Encoder lite (TF.js graph model) in torch: weights, tokenizer, forward.

The forward mirrors the graph in ../shared/models/use-lite/model.json op for op (checked against
the graph executed by TensorFlow.js, see parity.py):
  ids (per sentence, clipped to 128 positions) -> dense [B, L] with -1 padding, mask = ids >= 0
  x0 = 2 * Embeddings[ids] + timing_signal(position)  on real positions, 0 on padding (the graph
       adds the scattered embedding to AddTimingSignal's own scatter of embedding + signal)
  layer 0: a = MHA(LN(x0)) (4 heads x 64, scale 0.125, key bias -1e9 on padding)
           h = a + scatter(dense_256x512(x0));  h += scatter(FFN(LN(h)))
  layer 1: a = MHA(LN(h)) (4 heads x 128, scale 1/sqrt(128));  h = a + h;  h += scatter(FFN(LN(h)))
  pool: mean over the first count(mask) positions;  tanh(dense 512x512);  L2 normalize.
LN is x -> (x - mean) * rsqrt(var + 1e-6) * scale + bias over the last axis.
"""
import json
import os
import sys
import unicodedata

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tensors_io  # noqa: E402  (tests/eval/tensors_io.py: TF.js and safetensors readers)

MODEL_DIR_ENV = "DELTASERVE_SHARED_DIR"
_P = "module_apply_default/Encoder_en/KonaTransformer/Encode/"
_S = _P + "TransformerStack/"
EMBEDDINGS = "module/Embeddings_en"
TIMING = _S + "Layer_0/AddTimingSignal/TimingSignal/ExpandDims_1"
TANH_W = "module/Encoder_en/hidden_layers/tanh_layer_0/weights"
TANH_B = "module/Encoder_en/hidden_layers/tanh_layer_0/bias"
MAX_POSITIONS = 128  # ClipToMaxLength/Less/y
NUM_HEADS = 4        # split_heads/split_last_dimension/Reshape/shape/2


def model_dir():
    """Directory of the TF.js files: $DELTASERVE_SHARED_DIR/models/use-lite or ../shared."""
    shared = os.environ.get(MODEL_DIR_ENV)
    if not shared:
        here = os.path.dirname(os.path.abspath(__file__))
        shared = os.path.normpath(os.path.join(here, "..", "..", "..", "..", "shared"))
    return os.path.join(shared, "models", "use-lite")


def layer_names(i):
    """TF.js weight names of transformer layer i (0 or 1)."""
    lp = _P + f"Layer_{i}/TransformerLayer/"
    mp = f"module/Encoder_en/KonaTransformer/Encode/Layer_{i}/TransformerLayer/MultiheadAttention/"
    sp = _S + f"Layer_{i}/TransformerLayer/"
    fl = lp + "FFN/layer_prepostprocess/layer_norm/"
    n = {
        "ln_s": lp + "layer_prepostprocess/layer_norm/layer_norm_scale/ConcatPartitions/concat",
        "ln_b": lp + "layer_prepostprocess/layer_norm/layer_norm_bias/ConcatPartitions/concat",
        "qkv_k": mp + "qkv_transform_single/kernel/part_0",
        "qkv_b": lp + "MultiheadAttention/qkv_transform_single/bias/ConcatPartitions/concat",
        "out_k": mp + "output_transform_single/kernel/part_0",
        "out_b": lp + "MultiheadAttention/output_transform_single/bias/ConcatPartitions/concat",
        "ffn_ln_s": fl + "layer_norm_scale/ConcatPartitions/concat",
        "ffn_ln_b": fl + "layer_norm_bias/ConcatPartitions/concat",
        "conv1_k": sp + "FFN/conv1/Tensordot/Reshape_1",
        "conv1_b": lp + "FFN/conv1/bias/ConcatPartitions/concat",
        "conv2_k": sp + "FFN/conv2/Tensordot/Reshape_1",
        "conv2_b": lp + "FFN/conv2/bias/ConcatPartitions/concat",
        "scale": sp + "MultiheadAttention/mul/y",
    }
    if i == 0:
        n["dense_k"] = lp + "dense/kernel/ConcatPartitions/concat"
        n["dense_b"] = lp + "dense/bias/ConcatPartitions/concat"
    return n


LN_EPS = _S + "Layer_1/TransformerLayer/FFN/layer_prepostprocess/layer_norm/Cast/x"
PAD_BIAS = (_S + "Layer_1/TransformerLayer/MultiheadAttention/DotProductAttention/"
            "attention_bias_ignore_padding/mul/y")
L2_EPS = "module_apply_default/Encoder_en/hidden_layers/l2_normalize/Maximum/y"


def load_tfjs_weights(directory=None):
    """name -> numpy array of every weight in model.json's weightsManifest (float32, int32),
    read by tests/eval/tensors_io.py (groups' shards concatenated, manifest order)."""
    path = os.path.join(directory or model_dir(), "model.json")
    return dict(tensors_io.load_tfjs_graph(path)[1])


def float_weights(all_weights):
    """The float32 tensors of the graph (what the safetensors files hold)."""
    return {k: v for k, v in all_weights.items() if v.dtype == np.float32}


def is_trainable(name, arr):
    """Constants that happen to be stored as weights (scalars, the timing signal) stay fixed."""
    return arr.ndim >= 1 and name != TIMING


# ---------------------------------------------------------------------------- tokenizer

def _utf16_units(s):
    """JS strings index UTF-16 code units; the TF.js tokenizer iterates those."""
    b = s.encode("utf-16-le", "surrogatepass")
    return "".join(chr(b[i] | (b[i + 1] << 8)) for i in range(0, len(b), 2))


class Tokenizer:
    """Port of @tensorflow-models/universal-sentence-encoder@1.3.3 dist/tokenizer (SentencePiece
    EncodeAsIds): NFKC, prefix U+2581 and replace ' ' with it, Viterbi over piece scores where an
    unmatched character becomes id 0 with score 0, consecutive id-0 pieces merged. Quirks kept:
    best-score 0 means "unset", ties go to the later start, reserved ids 0..5 are never matched."""

    def __init__(self, vocab, reserved=6):
        self.vocab = vocab
        self.pieces = {}
        self.prefixes = set()
        self.lengths = [len(_utf16_units(p)) for p, _ in vocab]
        for i in range(reserved, len(vocab)):
            key = _utf16_units(vocab[i][0])
            if not key:
                continue
            self.pieces[key] = (float(vocab[i][1] or 0.0), i)  # JS: null + x == x
            for L in range(1, len(key)):
                self.prefixes.add(key[:L])
        self.maxlen = max(len(k) for k in self.pieces)

    @classmethod
    def load(cls, directory=None):
        with open(os.path.join(directory or model_dir(), "vocab.json"), encoding="utf-8") as f:
            return cls(json.load(f))

    def encode(self, text):
        norm = unicodedata.normalize("NFKC", text)
        if norm:
            norm = "\u2581" + norm.replace(" ", "\u2581")
        sym = _utf16_units(norm)
        n = len(sym)
        incoming = [[] for _ in range(n + 1)]
        for i in range(n):
            found = False
            for L in range(1, min(self.maxlen, n - i) + 1):
                key = sym[i:i + L]
                hit = self.pieces.get(key)
                if hit is not None:
                    incoming[i + L].append((L, hit[0], hit[1]))
                    found = True
                if key not in self.prefixes:
                    break
            if not found:
                incoming[i + 1].append((1, 0.0, 0))
        best = [0.0] * (n + 1)
        words = [0] * (n + 1)
        for end in range(n + 1):
            for L, score, idx in incoming[end]:  # appended in ascending start order
                s = score + best[end - L]
                if best[end] == 0 or s >= best[end]:
                    best[end] = s
                    words[end] = idx
        results = []
        it = n
        while it > 0:
            results.append(words[it])
            it -= self.lengths[words[it]]
        merged = []
        prev_unk = False
        for idx in results:
            if not (prev_unk and idx == 0):
                merged.append(idx)
            prev_unk = idx == 0
        return merged[::-1]


# ---------------------------------------------------------------------------- model

class UseLite(torch.nn.Module):
    """Parameters are registered under their TF.js names ('/' kept; torch only forbids '.').
    `num_classes` > 0 adds a classification head (CLASSIFIER_W [512, C], CLASSIFIER_B [C])
    applied to the L2-normalized 512-d embedding."""

    def __init__(self, weights, num_classes=0):
        super().__init__()
        self.params = torch.nn.ParameterDict()
        self.consts = {}
        for name, arr in float_weights(weights).items():
            t = torch.from_numpy(np.array(arr, dtype=np.float32))
            if is_trainable(name, arr):
                self.params[name] = torch.nn.Parameter(t)
            else:
                self.consts[name] = t
        self.num_classes = num_classes
        if num_classes:
            if CLASSIFIER_W in weights:
                w = torch.from_numpy(np.array(weights[CLASSIFIER_W], dtype=np.float32))
                b = torch.from_numpy(np.array(weights[CLASSIFIER_B], dtype=np.float32))
            else:
                w = torch.zeros(512, num_classes)
                b = torch.zeros(num_classes)
            self.params[CLASSIFIER_W] = torch.nn.Parameter(w)
            self.params[CLASSIFIER_B] = torch.nn.Parameter(b)

    def _get(self, name):
        return self.params[name] if name in self.params else self.consts[name]

    def state_numpy(self):
        """All float tensors (trainable and constant) under their TF.js names."""
        out = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.params.items()}
        out.update({k: v.numpy().astype(np.float32) for k, v in self.consts.items()})
        return out

    def _ln(self, x, s, b):
        eps = self._get(LN_EPS)
        mu = x.mean(-1, keepdim=True)
        d = x - mu
        return self._get(s) * torch.rsqrt((d * d).mean(-1, keepdim=True) + eps) * d + self._get(b)

    def _mha(self, x, n, key_bias):
        B, L, _ = x.shape
        k = self._get(n["qkv_k"])
        qkv = x @ k.reshape(k.shape[-2], k.shape[-1]) + self._get(n["qkv_b"])
        q, kk, v = qkv.chunk(3, dim=-1)
        hd = q.shape[-1] // NUM_HEADS

        def heads(t):
            return t.reshape(B, L, NUM_HEADS, hd).permute(0, 2, 1, 3)
        q, kk, v = heads(q) * self._get(n["scale"]), heads(kk), heads(v)
        w = torch.softmax(q @ kk.transpose(-1, -2) + key_bias, dim=-1)
        o = (w @ v).permute(0, 2, 1, 3).reshape(B, L, NUM_HEADS * hd)
        ok = self._get(n["out_k"])
        return o @ ok.reshape(ok.shape[-2], ok.shape[-1]) + self._get(n["out_b"])

    def _ffn(self, h, n, m):
        y = self._ln(h, n["ffn_ln_s"], n["ffn_ln_b"])
        y = torch.relu(y @ self._get(n["conv1_k"]) + self._get(n["conv1_b"]))
        return (y @ self._get(n["conv2_k"]) + self._get(n["conv2_b"])) * m

    def embed(self, batch_ids):
        """batch_ids: list of token-id lists. Returns [B, 512] L2-normalized embeddings."""
        clipped = [ids[:MAX_POSITIONS] for ids in batch_ids]
        B = len(clipped)
        L = max(1, max((len(c) for c in clipped), default=0))
        dense = torch.full((B, L), -1, dtype=torch.long)
        for r, c in enumerate(clipped):
            if c:
                dense[r, :len(c)] = torch.tensor(c, dtype=torch.long)
        maskb = dense >= 0  # Greater(SparseToDense, default_value=-1): every real position
        m = maskb.unsqueeze(-1).float()
        x = self._get(EMBEDDINGS)[dense.clamp(min=0)] * m
        t = torch.arange(L, dtype=torch.float32).unsqueeze(1) * self._get(TIMING)
        timing = torch.cat([torch.sin(t), torch.cos(t)], dim=1)
        x0 = 2.0 * x + timing.unsqueeze(0) * m
        key_bias = ((~maskb).float() * self._get(PAD_BIAS)).reshape(B, 1, 1, L)

        n0, n1 = layer_names(0), layer_names(1)
        a = self._mha(self._ln(x0, n0["ln_s"], n0["ln_b"]), n0, key_bias)
        h = a + (x0 @ self._get(n0["dense_k"]) + self._get(n0["dense_b"])) * m
        h = h + self._ffn(h, n0, m)
        h = h + self._mha(self._ln(h, n1["ln_s"], n1["ln_b"]), n1, key_bias)
        h = h + self._ffn(h, n1, m)

        count = maskb.sum(1)
        seq = (torch.arange(L).unsqueeze(0) < count.unsqueeze(1)).float().unsqueeze(-1)
        pooled = (h * seq).sum(1) / count.clamp(min=1).float().unsqueeze(1)
        y = torch.tanh(pooled @ self._get(TANH_W) + self._get(TANH_B))
        return y * torch.rsqrt(torch.clamp((y * y).sum(1, keepdim=True), min=self._get(L2_EPS)))

    def forward(self, batch_ids):
        e = self.embed(batch_ids)
        if not self.num_classes:
            return e
        return e @ self.params[CLASSIFIER_W] + self.params[CLASSIFIER_B]


CLASSIFIER_W = "classifier/kernel"
CLASSIFIER_B = "classifier/bias"
