"""Renders tests/eval/RESULTS.md from the harness output (run_eval.py)."""
import report
import v2_section

FACE_KEYS = ["desc_cos_mean", "desc_cos_min", "gender_agree", "age_mae_years"]


def _best_baseline(rows, budget, key, higher=True):
    cands = [r for r in rows if r["method"] in ("lowrank", "topk", "dare") and
             r["budget"] == budget and "metrics" in r]
    cands += [r for r in rows if r["method"] == "sign" and "metrics" in r and budget == 1.0]
    if not cands:
        return None
    return (max if higher else min)(cands, key=lambda r: r["metrics"][key])


def _dct(rows, budget):
    for r in rows:
        if report.is_ref_dct(r) and r["budget"] == budget:
            return r
    return None


def headline(out):
    lines = []
    fr = [r for r in out["rows"] if r["pair"] == "faceres"]
    d = _dct(fr, 1.0)
    if d and "metrics" in d:
        b = _best_baseline(fr, 1.0, "desc_cos_mean")
        base = out.get("faceres_base_metrics", {})
        lines.append(
            "- **faceres** (descriptor cosine to the finetuned model, mean over %d photos; "
            "finetuned = 1 by definition; base model without any delta: %.4f): Delta-DCT "
            "p=32 at %.3f bits/weight: **%.4f** (gender agreement %.3f, age MAE %.2f y); "
            "best baseline at the same size, %s at %.3f bits/weight: **%.4f** (gender %.3f, "
            "age MAE %.2f y)." % (
                len(out.get("faceres_inputs", {}).get("labels", [])),
                base.get("desc_cos_mean", float("nan")), d["bpw"],
                d["metrics"]["desc_cos_mean"], d["metrics"]["gender_agree"],
                d["metrics"]["age_mae_years"], report._method(b), b["bpw"],
                b["metrics"]["desc_cos_mean"], b["metrics"]["gender_agree"],
                b["metrics"]["age_mae_years"]))
    ur = [r for r in out["rows"] if r["pair"] == "use_lite"]
    d = _dct(ur, 1.0)
    if d and "metrics" in d and "use_lite_ref" in out:
        b = _best_baseline(ur, 1.0, "accuracy")
        lines.append(
            "- **USE-lite** (test accuracy): finetuned **%.4f**, base + trained head only "
            "%.4f; Delta-DCT p=32 at %.3f bits/weight: **%.4f**; best baseline at the same "
            "size, %s at %.3f bits/weight: **%.4f**." % (
                out["use_lite_ref"]["finetuned"], out["use_lite_ref"]["head_only"], d["bpw"],
                d["metrics"]["accuracy"], report._method(b), b["bpw"], b["metrics"]["accuracy"]))
    return "\n".join(lines) or "- (no task metrics were computed)"


def notes(out):
    """Plain-language reading of the numbers, computed from them."""
    lines = []
    fr = [r for r in out["rows"] if r["pair"] == "faceres"]
    base = out.get("faceres_base_metrics")
    zero = [r for r in fr if r["method"] == "zero" and "metrics" in r]
    if base and zero:
        cos = ", ".join("%.3f at %.2f" % (d["metrics"]["desc_cos_mean"], d["bpw"])
                        for d in sorted((r for r in fr if report.is_ref_dct(r) and
                                         "metrics" in r), key=lambda r: r["bpw"]))
        lines.append(
            "- faceres: the untouched base model already has descriptor cosine %.3f to the "
            "finetuned model, while keeping every small tensor finetuned and the %d large "
            "matrices at base (zero delta on the set) gives %.3f: a partial delta must be "
            "accurate to help. Delta-DCT p=32 gives %s bits/weight, i.e. it passes the base "
            "model only from ~1 bit per weight and is close to the finetuned model (> 0.9) "
            "from ~2 bits per weight." % (
                base["desc_cos_mean"], len(fr[0]["per_tensor"]),
                zero[0]["metrics"]["desc_cos_mean"], cos))
    ur = [r for r in out["rows"] if r["pair"] == "use_lite"]
    if ur and "use_lite_ref" in out:
        n = out.get("use_lite_test_examples")
        dare = [r for r in ur if r["method"] == "dare" and r["budget"] == 1.0 and "metrics" in r]
        lines.append(
            "- USE-lite: the finetune is worth %.1f accuracy points over the base with its "
            "head (%.4f vs %.4f)%s. Test accuracy is a coarse, insensitive metric here: "
            "differences between methods at <= 1 bit per weight are a few examples "
            "(binomial standard error of one accuracy ~%.1f points)%s." % (
                100 * (out["use_lite_ref"]["finetuned"] - out["use_lite_ref"]["head_only"]),
                out["use_lite_ref"]["finetuned"], out["use_lite_ref"]["head_only"],
                (", on %d test examples (1 example = %.3f points)" % (n, 100.0 / n)) if n else "",
                100 * (0.83 * 0.17 / (n or 800)) ** 0.5,
                ("; DARE keeps %.4f with a relative delta error of %.2f" % (
                    dare[0]["metrics"]["accuracy"], dare[0]["rel_delta_err"])) if dare else ""))
    return "\n".join(lines)


def losses_section(out):
    lines = []
    for pair, key, higher in (("faceres", "desc_cos_mean", True),
                              ("use_lite", "accuracy", True)):
        rows = [r for r in out["rows"] if r["pair"] == pair]
        for budget, what, d, b, x, y in report.losses(rows, key, higher):
            lines.append("- %s, budget %s: %s beats Delta-DCT p=32 on %s: %.4f vs %.4f "
                         "(at %.3f vs %.3f bits/weight)." % (
                             pair, budget, report._method(b), what, y, x, b["bpw"], d["bpw"]))
    if not lines:
        lines.append("- in total: none; Delta-DCT (p=32) is at least as good as every "
                     "baseline at every budget, in total delta error and task metric.")
    for pair in ("faceres", "use_lite"):
        rows = [r for r in out["rows"] if r["pair"] == pair]
        for budget, b, worse in report.per_tensor_losses(rows):
            lines.append("- %s, budget %s, per tensor: %s has the lower delta error on %d "
                         "tensor(s): %s." % (
                             pair, budget, report._method(b), len(worse),
                             ", ".join("%s %.4f vs %.4f" % (report.short_name(w[0]), w[1], w[2])
                                       for w in worse[:8]) +
                             (", ..." if len(worse) > 8 else "")))
    return "\n".join(lines)


def render(out, meta):
    rows = out["rows"]
    s = ["# Fidelity of Delta-DCT on real finetunes, against baselines at equal bytes", ""]
    if meta["standin"]:
        s += ["> **DEVELOPMENT RUN with the numpy stand-in of Delta-DCT, not deltactl.** "
              "Do not quote these numbers.", ""]
    s += ["Generated by `%s` on %s (%s; %.0f s). Delta-DCT: `%s`. Raw numbers: "
          "`results.json`; plot: `rd_plot.png`." % (
              meta["command"], meta["date"], meta["machine"], out["seconds"], out["tool"]), ""]
    if meta.get("reused"):
        s += ["Rows reused, not rerun: %s (that run's header names its tool and date)." %
              meta["reused"], ""]
    s += ["## Codec v2 (ecq) against Delta-DCT and the baselines", "", v2_section.render(out), ""]
    s += ["## Headline (~1 bit per weight)", "", headline(out), "", notes(out), ""]
    s += ["## Where Delta-DCT loses", "", losses_section(out), ""]
    s += ["## Method and byte accounting", "",
          "- The compared set is exactly the tensors Delta-DCT codes lossily (rank >= 2 and "
          ">= 16384 elements, per `codec/FORMAT.md` \"Tensor policy\"); every other tensor "
          "is kept exact by every method. Bits per weight = bits stored for that set / "
          "its number of weights.",
          "- Delta-DCT bits = `deltactl eval --json` totals.bits_per_weight_dct: every byte "
          "of the DCT records of the `.dds` container (name, shapes, payload header, bit-"
          "width table, allocation map, quantizer parameters, codes, checksum) plus their "
          "share of the container header and trailer; the reconstruction is what `deltactl "
          "decompress` wrote (its error agrees with deltactl eval's rel_delta_error_dct, "
          "`tool_rel_delta_err` in results.json). The payload bytes alone are in results.json "
          "(`payload_bpw`). Baselines are not charged any framing, which favours them "
          "slightly (~0.3% of the bytes).",
          "- Baselines (`baselines.py`) run at the bits per weight Delta-DCT measured at "
          "p=32 for the same budget: sign x scale (1 bit + fp16 scale per matrix; fixed "
          "size, one point); low-rank SVD (fp16 factors + 16-bit rank; ranks per matrix, "
          "leftover bits given greedily by singular value energy per bit); magnitude top-k "
          "and DARE (fp16 values + positions counted as ceil(log2 C(n, k)) bits, the size of "
          "an enumerative code of the position set, + 32 bits for k; DARE rescales by n/k "
          "and is the mean over seeds 0, 1, 2, ± its standard deviation).",
          "- Relative delta error = ||Δ̂ − Δ||_F / ||Δ||_F over the set; relative weight "
          "error = ||Ŵ − W_ft||_F / ||W_ft||_F over the set.", ""]
    if "faceres_tfjs_check" in out:
        c = out["faceres_tfjs_check"]
        s += ["## faceres", "",
              "Forward pass: `faceres_torch.py` interprets the TF.js graph in torch; checked "
              "against %s in node on %d of the photos (%s):" % (
                  c["info"], len(c["images"]), ", ".join(c["images"])), "",
              "| model | output | max abs diff | max abs value |", "|---|---|---|---|"]
        s += ["| %s | %s | %.3g | %.3g |" % tuple(r) for r in c["rows"]]
        s += [""]
    else:
        s += ["## faceres", "", "(TensorFlow.js check not run.)", ""]
    if "faceres_inputs" in out:
        labels = out["faceres_inputs"]["labels"]
        s += ["Inputs: %d real face photographs from Debian packages (`faces.py`): "
              "`python3-skimage` skimage/data/astronaut.png, camera.png and the %d face "
              "crops of lfw_subset.npy (Labeled Faces in the Wild); `python-matplotlib-data` "
              "sample_data/grace_hopper.jpg. sha256: %s." % (
                  len(labels), sum(l.startswith("lfw") for l in labels),
                  ", ".join("`%s` %s" % (p.split("/")[-1], h[:16])
                            for p, h in out["faceres_inputs"]["hashes"].items())), ""]
        b = out["faceres_base_metrics"]
        s += ["Reference: the base model with no delta at all gives descriptor cosine %.4f "
              "(min %.4f), gender agreement %.3f, age MAE %.2f years against the finetuned "
              "model." % (b["desc_cos_mean"], b["desc_cos_min"], b["gender_agree"],
                          b["age_mae_years"]), ""]
    fr = [r for r in rows if r["pair"] == "faceres"]
    if fr:
        s += [report.main_table(fr, FACE_KEYS), ""]
        if "faceres_deltas" in out:
            s += ["Per tensor, relative delta error at the ~1 bit per weight budget "
                  "(Delta-DCT p=32 and the baselines at its size):", "",
                  report.per_tensor_table(fr, 1.0, out["faceres_deltas"], out["faceres_ft"]),
                  ""]
    s += ["## USE-lite", ""]
    ur = [r for r in rows if r["pair"] == "use_lite"]
    if "use_lite_missing" in out:
        s += ["Not run: %s" % out["use_lite_missing"], ""]
    if "use_lite_ref" in out:
        s += ["Finetuned test accuracy %.4f; base with only the trained head %.4f "
              "(tests/eval/use_lite)." % (out["use_lite_ref"]["finetuned"],
                                         out["use_lite_ref"]["head_only"]), ""]
    if ur:
        s += [report.main_table(ur, ["accuracy", "agreement", "kl"]), ""]
        if "use_lite_deltas" in out:
            s += ["Per tensor at ~1 bit per weight:", "",
                  report.per_tensor_table(ur, 1.0, out["use_lite_deltas"],
                                          out["use_lite_ft"]), ""]
    s += ["## Rate-distortion plot", "", "![rate-distortion](rd_plot.png)", ""]
    return "\n".join(s)
