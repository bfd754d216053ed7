"""Forward pass of a TF.js graph model (faceres) in torch, read from `modelTopology`.

An interpreter over the GraphDef nodes, limited to the ops faceres uses: Placeholder,
Const, Conv2D, DepthwiseConv2dNative (NHWC, SAME/VALID padding, strides), Add, Mul,
Relu, Relu6, Minimum, Maximum, Mean (spatial), _FusedMatMul (BiasAdd, Relu), MatMul,
BiasAdd, Sigmoid, Softmax. Activations are kept NCHW internally (torch's layout);
TF's asymmetric SAME padding (extra row/column at the bottom/right) is reproduced.
Checked against TensorFlow.js itself by check_faceres_tfjs.py.
"""
import base64

import numpy as np
import torch
import torch.nn.functional as F


def _attr_str(node, key, default=None):
    a = node.get("attr", {}).get(key)
    if a is None or "s" not in a:
        return default
    return base64.b64decode(a["s"]).decode()


def _attr_ints(node, key):
    a = node.get("attr", {}).get(key)
    if a is None:
        return None
    return [int(i) for i in a.get("list", {}).get("i", [])]


def _same_pad(x, k, s):
    """Pads NCHW x like TF 'SAME' for a k x k window at stride s."""
    h, w = x.shape[2], x.shape[3]
    oh, ow = -(-h // s), -(-w // s)
    ph = max((oh - 1) * s + k[0] - h, 0)
    pw = max((ow - 1) * s + k[1] - w, 0)
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class TfjsGraph:
    """Compiled graph: TfjsGraph(model_json, weights)(x_nhwc) -> {output name: array}."""

    def __init__(self, model_json, weights, outputs=None):
        self.nodes = model_json["modelTopology"]["node"]
        sig = model_json.get("signature", {}).get("outputs", {})
        default_outputs = [k.split(":")[0] for k in sig] or [self.nodes[-1]["name"]]
        self.outputs = outputs or sorted(default_outputs)
        self.consts = {}
        consumers = {}
        for n in self.nodes:
            for i, inp in enumerate(n.get("input", [])):
                consumers.setdefault(inp.split(":")[0], []).append((n, i))
        for n in self.nodes:
            if n["op"] != "Const":
                continue
            arr = weights[n["name"]]
            t = torch.from_numpy(np.ascontiguousarray(arr))
            if t.dtype == torch.float64:
                t = t.float()
            # Pre-layout kernels for their consumer (HWIO -> OIHW for torch).
            for cons, idx in consumers.get(n["name"], []):
                if idx != 1:
                    continue
                if cons["op"] == "Conv2D":
                    t = t.permute(3, 2, 0, 1).contiguous()
                elif cons["op"] == "DepthwiseConv2dNative":
                    kh, kw, c, m = t.shape
                    t = t.permute(2, 3, 0, 1).reshape(c * m, 1, kh, kw).contiguous()
            self.consts[n["name"]] = t

    @torch.no_grad()
    def __call__(self, x_nhwc):
        vals = {}
        for n in self.nodes:
            op, name = n["op"], n["name"]
            ins = [vals[i.split(":")[0]] for i in n.get("input", []) if not i.startswith("^")]
            if op == "Placeholder":
                v = torch.from_numpy(np.ascontiguousarray(x_nhwc, np.float32)).permute(0, 3, 1, 2)
            elif op == "Const":
                v = self.consts[name]
            elif op in ("Conv2D", "DepthwiseConv2dNative"):
                x, w = ins
                s = _attr_ints(n, "strides")[1]
                k = (w.shape[2], w.shape[3])
                pad = _attr_str(n, "padding", "VALID")
                if pad == "SAME":
                    x = _same_pad(x, k, s)
                elif pad != "VALID":
                    raise NotImplementedError("padding %s in %s" % (pad, name))
                groups = x.shape[1] if op == "DepthwiseConv2dNative" else 1
                v = F.conv2d(x, w, stride=s, groups=groups)
            elif op in ("Add", "AddV2", "BiasAdd", "Mul", "Minimum", "Maximum"):
                a, b = (self._chan(t, ins) for t in ins)
                v = {"Add": torch.add, "AddV2": torch.add, "BiasAdd": torch.add,
                     "Mul": torch.mul, "Minimum": torch.minimum,
                     "Maximum": torch.maximum}[op](a, b)
            elif op == "Relu":
                v = torch.relu(ins[0])
            elif op == "Relu6":
                v = torch.clamp(ins[0], 0.0, 6.0)
            elif op == "Mean":
                axes = [int(a) for a in ins[1].reshape(-1).tolist()]
                if ins[0].dim() == 4:
                    axes = [{0: 0, 1: 2, 2: 3, 3: 1}[a] for a in axes]
                keep = n.get("attr", {}).get("keep_dims", {}).get("b", False)
                v = ins[0].mean(dim=axes, keepdim=keep)
            elif op in ("_FusedMatMul", "MatMul"):
                a, w = ins[0], ins[1]
                if n.get("attr", {}).get("transpose_a", {}).get("b"):
                    a = a.t()
                if n.get("attr", {}).get("transpose_b", {}).get("b"):
                    w = w.t()
                v = a @ w
                fused = [base64.b64decode(s).decode() for s in
                         n.get("attr", {}).get("fused_ops", {}).get("list", {}).get("s", [])]
                for f_op in fused:
                    if f_op == "BiasAdd":
                        v = v + ins[2]
                    elif f_op == "Relu":
                        v = torch.relu(v)
                    else:
                        raise NotImplementedError("fused op %s in %s" % (f_op, name))
            elif op == "Sigmoid":
                v = torch.sigmoid(ins[0])
            elif op == "Softmax":
                v = torch.softmax(ins[0], dim=-1)
            else:
                raise NotImplementedError("op %s (%s)" % (op, name))
            vals[name] = v
        return {o: self._nhwc(vals[o]).numpy() for o in self.outputs}

    @staticmethod
    def _chan(t, ins):
        """Broadcasts a 1-D per-channel tensor against a 4-D NCHW activation."""
        if t.dim() == 1 and any(o.dim() == 4 for o in ins) and t.numel() > 1:
            return t.reshape(1, -1, 1, 1)
        return t

    @staticmethod
    def _nhwc(t):
        return t.permute(0, 2, 3, 1).contiguous() if t.dim() == 4 else t
