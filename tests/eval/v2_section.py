"""RESULTS.md section comparing codec v2 (ecq, `deltactl compress --bits B`) with Delta-DCT
(p=32, fixed-rate schedules) and the baselines: per budget, at equal error, and the bits
each needs to reach a task-metric threshold."""
import math

import report

THRESHOLDS = {"faceres": ("desc_cos_mean", 0.95, "descriptor cosine >= 0.95"),
              "use_lite": ("agreement", 0.98, "agreement >= 98%")}
BASELINES = ("sign", "lowrank", "topk", "dare")


def _curve(rows, method):
    sel = [r for r in rows if (report.is_ref_dct(r) if method == "delta-dct"
                               else r["method"] == method)]
    return sorted(sel, key=lambda r: r["bpw"])


def _interp_log(x, xs, ys):
    """y at x on the piecewise-linear curve in (log x, log y); None outside."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        lo, hi = min(x0, x1), max(x0, x1)
        if lo <= x <= hi and x0 != x1:
            t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return math.exp(math.log(y0) + t * (math.log(y1) - math.log(y0)))
    return None


def bits_for_error(curve, err):
    """Bits per weight at which `curve` reaches relative delta error `err` (log-log
    interpolation between measured points), or None outside the measured range."""
    pts = sorted((r["rel_delta_err"], r["bpw"]) for r in curve)
    return _interp_log(err, [p[0] for p in pts], [p[1] for p in pts])


def bits_for_metric(curve, key, value):
    """Fewest bits per weight at which the metric first reaches `value` (linear in the
    metric, log in bits, between the two measured points around the crossing)."""
    pts = [(r["bpw"], r["metrics"][key]) for r in curve if "metrics" in r]
    for (b0, m0), (b1, m1) in zip(pts, pts[1:]):
        if m0 >= value:
            return b0
        if m1 >= value:
            t = (value - m0) / (m1 - m0)
            return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
    return pts[0][0] if pts and pts[0][1] >= value else None


def _fmt(v, nd=3):
    return "—" if v is None else ("%.*f" % (nd, v))


def render(out):
    s = []
    for pair, key_label in (("faceres", "descriptor cosine"), ("use_lite", "agreement / KL")):
        rows = [r for r in out["rows"] if r["pair"] == pair]
        ecq, dct = _curve(rows, "ecq"), _curve(rows, "delta-dct")
        if not ecq:
            continue
        key = THRESHOLDS[pair][0]
        s += ["### %s" % pair, "",
              "| budget | Delta-DCT bits/w | Delta-DCT err | v2 bits/w | v2 err | best baseline "
              "(err) | Delta-DCT %s | v2 %s | best baseline %s | v2 transforms |" % (
                  key, key, key), "|---|---|---|---|---|---|---|---|---|---|"]
        # v2 in bold where it beats Delta-DCT and every baseline at that budget.
        for e in ecq:
            d = next((r for r in dct if r["budget"] == e["budget"]), None)
            bl = [r for r in rows if r["method"] in BASELINES and
                  (r["budget"] == e["budget"] or r["method"] == "sign")]
            if e["budget"] != 1.0:
                bl = [r for r in bl if r["method"] != "sign"]
            best = min(bl, key=lambda r: r["rel_delta_err"]) if bl else None
            best_m = max((r for r in bl if "metrics" in r), key=lambda r: r["metrics"][key],
                         default=None)
            tr = e.get("transforms") or {}
            n_id = sum(1 for v in tr.values() if v.startswith("identity"))
            n_lr = sum(1 for v in tr.values() if v.endswith("+lowrank"))
            # Bold: v2 is the best of Delta-DCT, v2 and the baselines on that column.
            others_err = [r["rel_delta_err"] for r in ([d] if d else []) + bl]
            em = e.get("metrics", {}).get(key)
            others_m = [r["metrics"][key] for r in ([d] if d else []) + bl if "metrics" in r]
            bold = lambda txt, win: "**%s**" % txt if win else txt  # noqa: E731
            s.append("| %s | %s | %s | %.4f | %s | %s | %s | %s | %s | %d dct, %d identity; "
                     "%d with low-rank factors |" % (
                e["budget"], _fmt(d and d["bpw"], 4), _fmt(d and d["rel_delta_err"], 4),
                e["bpw"], bold("%.4f" % e["rel_delta_err"],
                               all(e["rel_delta_err"] < x for x in others_err)),
                "%s %.4f" % (report._method(best), best["rel_delta_err"]) if best else "—",
                _fmt(d and d.get("metrics", {}).get(key), 4),
                bold(_fmt(em, 4), em is not None and all(em >= x for x in others_m)),
                "%s %.4f" % (report._method(best_m), best_m["metrics"][key]) if best_m else "—",
                len(tr) - n_id, n_id, n_lr))
        s += [""]
        if pair == "use_lite":
            s += ["USE-lite paired metrics, v2 vs Delta-DCT p=32 (agreement with the finetuned "
                  "model's predicted class; mean KL(finetuned || model) in nats, on the same "
                  "test texts):", ""]
            s += ["- budget %s: v2 agreement %s, KL %s, accuracy %s; Delta-DCT agreement %s, "
                  "KL %s, accuracy %s" % (
                      e["budget"], _fmt(e.get("metrics", {}).get("agreement"), 4),
                      _fmt(e.get("metrics", {}).get("kl"), 5),
                      _fmt(e.get("metrics", {}).get("accuracy"), 4),
                      _fmt(d and d.get("metrics", {}).get("agreement"), 4),
                      _fmt(d and d.get("metrics", {}).get("kl"), 5),
                      _fmt(d and d.get("metrics", {}).get("accuracy"), 4))
                  for e in ecq for d in [next((r for r in dct if r["budget"] == e["budget"]),
                                              None)]]
            s += [""]
        for method in ("ecq", "ecq-mse", "ecq-nolr"):
            s += _equal_error(dct, _curve(rows, method), report._method({"method": method}))
        tkey, tval, tlabel = THRESHOLDS[pair]
        bd, be = bits_for_metric(dct, tkey, tval), bits_for_metric(ecq, tkey, tval)
        s += ["", "Bits per weight for %s: Delta-DCT p=32 %s, v2 %s%s." % (
            tlabel, _fmt(bd), _fmt(be),
            " (%.0f%% fewer)" % (100 * (1 - be / bd)) if bd and be else
            " (— = not reached within the measured budgets)"), ""]
    return "\n".join(s) or "(codec v2 was not run)"


def _equal_error(dct, ecq, label):
    if not ecq:
        return []
    s = ["", "Bits at equal relative delta error, %s (its curve interpolated in log-log "
         "between its measured budgets, at each Delta-DCT p=32 point):" % label, ""]
    for d in dct:
        b = bits_for_error(ecq, d["rel_delta_err"])
        if b is None:
            s.append("- Delta-DCT %s: error %.4f at %.3f bits/weight; v2 reaches it below "
                     "its smallest budget (%.2f bits/weight)" % (
                         d["budget"], d["rel_delta_err"], d["bpw"], ecq[0]["bpw"])
                     if d["rel_delta_err"] > ecq[0]["rel_delta_err"] else
                     "- Delta-DCT %s: error %.4f, outside v2's measured range" % (
                         d["budget"], d["rel_delta_err"]))
        else:
            s.append("- Delta-DCT %s: error %.4f at %.3f bits/weight; v2 needs %.3f "
                     "(**%.0f%% fewer bits**)" % (d["budget"], d["rel_delta_err"], d["bpw"],
                                                   b, 100 * (1 - b / d["bpw"])))
    return s
