"""The Conclusions section: the sentences that follow from the numbers, each with its threshold."""

from __future__ import annotations

import math

from advdenoise.evaluation import smoothed
from advdenoise.report.document import Bullets, Paragraph, Section, pct
from advdenoise.report.inputs import (
    Inputs,
    attack_accuracy,
    attack_clean,
    clean_accuracy,
    dataset_name,
    denoised_accuracy,
    get,
)
from advdenoise.report.l2 import l2_conclusions
from advdenoise.report.paper import EMBEDDING_NAMES, SPACE_NAMES
from advdenoise.report.robustness import best_certified, detector_paragraph
from advdenoise.report.rules import (
    ATTACK_DROP,
    AUROC_PARTLY,
    AUROC_SEPARABLE,
    PAPER,
    RESTORE_FULL,
    RESTORE_PART,
    defence_verdicts,
    restoration,
    separability,
)


def certify_conclusions(inputs: Inputs) -> list[str]:
    m, cfg = inputs.metrics["certify"], inputs.params.certify
    if m is None:
        return []
    out = []
    positive = [x for x in cfg.radii if x > 0]
    shown = [x for x in positive if x in (0.25, 0.5)] or positive[:2]
    for r in shown:
        parts = []
        for model in cfg.models:
            acc, sigma = best_certified(m, model, r, cfg.sigmas)
            if not math.isnan(acc):
                parts.append(f"{smoothed.label(model)} {pct(acc)} (sigma={sigma:g})")
        if parts:
            out.append(
                f"Certified accuracy at L2 radius {r:g} (contains the L-inf ball of "
                f"{r / inputs.params.data.image_size:.4f}), best over sigma: "
                + "; ".join(parts)
                + "."
            )
    if out and "chance" in m:
        out.append(
            f"A certified accuracy at or below the {pct(float(m['chance']))} of always answering "
            "the majority class is no evidence of robustness: a smoothed classifier that collapses "
            "to one class under noise is certified for that class at every radius."
        )
    return out


def conclusions(inputs: Inputs) -> Section:
    """Sentences that follow from the numbers, each with the threshold it used."""
    p, eps = inputs.params, inputs.params.attack.eps
    out: list[str] = []
    acc = clean_accuracy(inputs)
    if acc is not None:
        diff = 100 * (acc - PAPER["test_accuracy"])
        comparable = (
            " (synthetic data: not comparable)"
            if p.data.is_synthetic
            else f" ({diff:+.1f} points vs the paper)"
        )
        out.append(
            f"The CNN reaches {pct(acc)} clean test accuracy on {dataset_name(p)} at "
            f"{p.data.image_size} px; the paper reports {pct(PAPER['test_accuracy'])} on the real "
            f"CT scans at 224 px{comparable}."
        )
    clean = attack_clean(inputs)
    den_clean = get(inputs.metrics["denoise"], "denoised_clean_accuracy")
    if den_clean is not None and clean is not None:
        out.append(
            f"Passing clean test images through the autoencoder changes accuracy from {pct(clean)} "
            f"to {pct(den_clean)} ({100 * (den_clean - clean):+.1f} points): the price of the "
            "denoiser on clean inputs."
        )
    for m in p.attack.methods:
        adv = attack_accuracy(inputs, m)
        if adv is None or clean is None:
            continue
        drop = clean - adv
        verdict = (
            "consistent with the paper's claim that accuracy drops"
            if drop >= ATTACK_DROP
            else "the attack barely changes accuracy (< 5 points), unlike the paper's claim"
        )
        out.append(
            f"{m.upper()} at eps={eps:g} lowers accuracy from {pct(clean)} to {pct(adv)} - {verdict}."
        )
        den = denoised_accuracy(inputs, m)
        if den is not None:
            fraction, verdict = restoration(clean, adv, den)
            share = f", {pct(fraction)} of the loss recovered" if fraction is not None else ""
            out.append(
                f"Denoising {m.upper()} images with the autoencoder gives {pct(den)}{share}: it "
                f"{verdict} (restores >= {pct(RESTORE_FULL)}, partly >= {pct(RESTORE_PART)})."
            )
    emb = inputs.metrics["embed"]
    for space in ("cnn", "ae"):
        for m in p.attack.methods:
            full = get(emb, f"{space}.{m}.probe_auroc.full")
            if full is None:
                continue
            in2d = {e: get(emb, f"{space}.{m}.probe_auroc.{e}") for e in ("pca", "tsne", "umap")}
            best = max((v, e) for e, v in in2d.items() if v is not None)
            out.append(
                f"The {SPACE_NAMES[space]} separates clean from {m.upper()} eps={eps:g} images "
                f"with probe AUROC {full:.2f} - **{separability(full)}**; the best 2-D view "
                f"({EMBEDDING_NAMES[best[1]]}) gives {best[0]:.2f} ({separability(best[0])})."
            )
    for m in p.attack.methods:
        a = get(emb, f"detector.{m}.auroc")
        if a is not None:
            out.append(
                f"The reconstruction-error detector tells {m.upper()} from clean inputs with AUROC "
                f"{a:.2f} - **{separability(a)}**."
            )
    rob = inputs.metrics["robustness"]
    if rob is not None:
        out += defence_verdicts(rob)
        detector = detector_paragraph(rob)
        if detector is not None:
            out.append(detector.text)
    out += certify_conclusions(inputs)
    out += l2_conclusions(inputs)
    sec = Section("Conclusions")
    if out:
        sec.blocks.append(
            Paragraph(
                f"Thresholds: AUROC < {AUROC_PARTLY} indistinguishable, < {AUROC_SEPARABLE} partly "
                f"separable, else separable; an attack lowers accuracy when it costs >= "
                f"{100 * ATTACK_DROP:.0f} points."
            )
        )
        sec.blocks.append(Bullets(tuple(out)))
    else:
        sec.blocks.append(Paragraph("No stage results yet: run `dvc repro`."))
    return sec
