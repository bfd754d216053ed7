"""RESULTS.md tables and the rate-distortion plot from the harness's result rows."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness import REF_PATCH  # noqa: E402

METHOD_LABEL = {"delta-dct": "Delta-DCT", "zero": "zero delta on the set (0 bits)",
                "sign": "sign x scale (BitDelta, no distill)",
                "lowrank": "low-rank SVD", "topk": "magnitude top-k", "dare": "DARE (3 seeds)",
                "ecq": "codec v2 (ecq, --bits)", "ecq-mse": "codec v2, one step (mse)",
                "ecq-nolr": "codec v2 without low-rank (--no-low-rank)"}
TASK_METRIC = {"faceres": ("desc_cos_mean", "descriptor cosine to finetuned (mean)"),
               "use_lite": ("agreement", "agreement of predicted class with finetuned")}


def _method(r):
    if r["method"] == "delta-dct":
        return "Delta-DCT p=%d%s" % (r["patch"], " mixed" if r.get("variant") == "mixed" else "")
    return METHOD_LABEL[r["method"]]


def is_ref_dct(r, ref_patch=REF_PATCH):
    """The reference Delta-DCT point: uniform schedule family at the default patch size."""
    return r["method"] == "delta-dct" and r["patch"] == ref_patch and \
        r.get("variant") != "mixed"


_NOISE = {"module", "module_apply_default", "Encoder_en", "KonaTransformer", "Encode",
          "TransformerStack", "TransformerLayer"}


def short_name(name):
    """A tensor name without USE-lite's constant path segments (its names are ~120 chars)."""
    parts = [p for p in name.split("/") if p not in _NOISE]
    return "/".join(parts) or name


def _fmt(v, nd=4):
    return "-" if v is None else ("%.*f" % (nd, v))


def main_table(rows, metric_keys):
    head = "| method | budget | schedule | bits/weight | rel. delta err | rel. weight err | " + \
        " | ".join(metric_keys) + " |"
    out = [head, "|" + "---|" * (6 + len(metric_keys))]
    for r in sorted(rows, key=lambda r: (r["budget"] or 1.0, r["method"] != "delta-dct",
                                         r["method"], r.get("variant") or "",
                                         r["patch"] or 0)):
        m = r.get("metrics", {})
        std = r.get("metrics_std", {})
        cells = []
        for k in metric_keys:
            c = _fmt(m.get(k))
            if k in std:
                c += " ± %.4f" % std[k]
            cells.append(c)
        out.append("| %s | %s | %s | %.4f | %.4f | %.5f | %s |" % (
            _method(r), r["budget"] if r["budget"] else "fixed", r["schedule"] or "",
            r["bpw"], r["rel_delta_err"], r["rel_weight_err"], " | ".join(cells)))
    return "\n".join(out)


def per_tensor_table(rows, budget, deltas, ft):
    sel = [r for r in rows if r["budget"] == budget and
           (r["method"] != "delta-dct" or is_ref_dct(r))]
    sel += [r for r in rows if r["method"] == "sign"]
    names = list(deltas)
    out = ["| tensor | 2-D view | ‖Δ‖/‖W‖ | " + " | ".join(_method(r) for r in sel) + " |",
           "|" + "---|" * (3 + len(sel))]
    for name in names:
        d = deltas[name]
        ratio = float((d.astype("float64") ** 2).sum() ** 0.5 /
                      ((ft[name].astype("float64") ** 2).sum() ** 0.5))
        out.append("| %s | %dx%d | %.3f | %s |" % (
            short_name(name), d.shape[0], d.shape[1], ratio,
            " | ".join("%.4f" % r["per_tensor"][name]["rel_delta_err"] for r in sel)))
    return "\n".join(out)


def losses(rows, metric_key, higher_is_better=True):
    """Budgets at which some baseline beats reference Delta-DCT, in error or metric."""
    found = []
    for budget in sorted({r["budget"] for r in rows if r["budget"]}):
        dct = [r for r in rows if is_ref_dct(r) and r["budget"] == budget]
        if not dct:
            continue
        dct = dct[0]
        near = [r for r in rows if r["method"] != "delta-dct" and
                (r["budget"] == budget or r["method"] == "zero" or
                 (r["method"] == "sign" and abs(r["bpw"] - dct["bpw"]) <= 0.1 * dct["bpw"]))]
        for b in near:
            if b["rel_delta_err"] < dct["rel_delta_err"]:
                found.append((budget, "rel. delta error", dct, b, dct["rel_delta_err"],
                              b["rel_delta_err"]))
            if metric_key and "metrics" in b and "metrics" in dct:
                x, y = dct["metrics"][metric_key], b["metrics"][metric_key]
                if (y > x) if higher_is_better else (y < x):
                    found.append((budget, metric_key, dct, b, x, y))
    return found


def per_tensor_losses(rows):
    """[(budget, baseline row, [(tensor, baseline err, Delta-DCT err)])] where a baseline
    at the same budget has a lower relative delta error than reference Delta-DCT."""
    found = []
    for d in [r for r in rows if is_ref_dct(r)]:
        for b in rows:
            same = b["budget"] == d["budget"] or (
                b["method"] == "sign" and abs(b["bpw"] - d["bpw"]) <= 0.1 * d["bpw"])
            if b["method"] in ("delta-dct", "zero") or not same:
                continue
            worse = [(n, b["per_tensor"][n]["rel_delta_err"], t["rel_delta_err"])
                     for n, t in d["per_tensor"].items()
                     if b["per_tensor"][n]["rel_delta_err"] < t["rel_delta_err"]]
            if worse:
                found.append((d["budget"], b, worse))
    return found


def plot(results, path, ref_lines):
    pairs = [p for p in ("faceres", "use_lite") if any(r["pair"] == p for r in results)]
    fig, axes = plt.subplots(len(pairs), 2, figsize=(13, 4.8 * len(pairs)), squeeze=False)
    styles = {"lowrank": ("tab:orange", "s"), "topk": ("tab:green", "^"),
              "dare": ("tab:red", "v"), "sign": ("black", "*"), "ecq": ("tab:cyan", "P"),
              "ecq-mse": ("tab:olive", "X"), "ecq-nolr": ("tab:pink", "d")}
    dct_colors = {16: "#6baed6", 32: "#08519c", 64: "#3182bd"}
    for i, pair in enumerate(pairs):
        rows = [r for r in results if r["pair"] == pair]
        key, label = TASK_METRIC[pair]
        for j, (ykey, ylabel) in enumerate([("rel_delta_err", "relative delta error"),
                                            (key, label)]):
            ax = axes[i][j]
            groups = {}
            for r in rows:
                if r["method"] == "zero":
                    if j == 1 and "metrics" in r:
                        ax.axhline(r["metrics"][ykey], color="tab:gray", ls=":", lw=1.2,
                                   label="zero delta on the set (%.3f)" % r["metrics"][ykey])
                    elif j == 0:
                        ax.axhline(1.0, color="tab:gray", ls=":", lw=1.2,
                                   label="zero delta (1.0)")
                    continue
                g = (("delta-dct", r["patch"], r.get("variant") or "")
                     if r["method"] == "delta-dct" else (r["method"], None, ""))
                groups.setdefault(g, []).append(r)
            for (method, patch, variant), rs in sorted(groups.items(),
                                                       key=lambda kv: str(kv[0])):
                rs = sorted(rs, key=lambda r: r["bpw"])
                ys = [r[ykey] if ykey == "rel_delta_err" else r.get("metrics", {}).get(ykey)
                      for r in rs]
                xs = [r["bpw"] for r, y in zip(rs, ys) if y is not None]
                ys = [y for y in ys if y is not None]
                if not xs:
                    continue
                if method == "delta-dct" and variant == "mixed":
                    color, marker, lw = "tab:purple", "D", 1.6
                elif method == "delta-dct":
                    color, marker, lw = dct_colors.get(patch, "blue"), "o", 2.2
                    if patch != REF_PATCH:
                        marker, lw = ("o" if patch < REF_PATCH else "s"), 1.4
                else:
                    (color, marker), lw = styles[method], 1.4
                ax.plot(xs, ys, marker=marker, color=color, lw=lw,
                        ls="-" if len(xs) > 1 else "none", ms=7 if method == "sign" else 5,
                        label=_method(rs[0]))
            if j == 1:
                for name, (value, color) in ref_lines.get(pair, {}).items():
                    ax.axhline(value, color=color, ls="--", lw=1, label=name)
            ax.set_xscale("log", base=2)
            ax.set_xticks([0.25, 0.5, 1, 2, 4])
            ax.set_xticklabels(["0.25", "0.5", "1", "2", "4"])
            if ykey == "rel_delta_err":
                ax.set_yscale("log")
            ax.set_xlabel("bits per weight (lossily coded tensors, all metadata)")
            ax.set_ylabel(ylabel)
            ax.set_title("%s: %s" % (pair, ylabel))
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
