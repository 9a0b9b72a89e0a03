"""Sections beyond the paper: robustness under oblivious and adaptive attacks, and certificates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from advdenoise.attacks.specs import ATTACKS, label
from advdenoise.core.params import RobustnessParams
from advdenoise.evaluation.verdicts import MARGIN, defences_in
from advdenoise.report.document import (
    Block,
    Bullets,
    Paragraph,
    Section,
    Table,
    metrics_dump,
    pct,
    pivot,
)
from advdenoise.report.inputs import Inputs, Metrics, not_run, stage_results
from advdenoise.report.l2 import BOUNDS_PNG
from advdenoise.report.rules import defence_verdicts


def attacks_in(m: Metrics, threat: str) -> list[str]:
    """Attacks with headline figures under `threat` (`<defence>.<threat>.<attack>.accuracy`), in
    the registry's order: the registry's attacks as the metrics report them."""
    found = {
        k.split(".")[2] for k in m
        if k.count(".") == 3 and k.split(".")[1] == threat and k.endswith(".accuracy")
    }  # fmt: skip
    found -= {"worst", "pgd_2x_steps"}
    order = [s.name for s in ATTACKS]
    return [a for a in order if a in found] + sorted(found - set(order))


def robustness_columns(m: Metrics) -> list[tuple[str, str]]:
    """(metric key with {d} for the defence, column label) of the table at the headline eps."""
    return [
        *(
            (f"{{d}}.{threat}.{a}.accuracy", f"{threat} {label(a)}")
            for threat in ("oblivious", "adaptive")
            for a in attacks_in(m, threat)
        ),
        ("{d}.oblivious.worst.accuracy", "worst oblivious"),
        ("{d}.adaptive.worst.accuracy", "worst adaptive"),
        ("{d}.worst.accuracy", "worst gradient-based"),
        ("{d}.square.accuracy", "Square alone"),
        ("{d}.robust_accuracy", "robust accuracy"),
    ]


# robustness quantities per eps, with what each row's worst case ranges over
WORST_CASES = (
    ("worst.accuracy", "every gradient-based attack ({attacks}; oblivious and adaptive)"),
    ("adaptive.worst.accuracy", "the adaptive attacks (through the defence; BPDA where needed)"),
    ("oblivious.worst.accuracy", "the oblivious attacks (crafted on the bare CNN: the paper's)"),
)


def with_clean(m: Metrics, rows: Sequence[str], quantity: str) -> Metrics:
    """`m` plus each row's clean accuracy as `<row>.eps_0.<quantity>`, the grid's first column."""
    clean = {r: m.get(f"{r}.clean_accuracy", m.get("clean_accuracy")) for r in rows}
    return {**m, **{f"{r}.eps_0.{quantity}": v for r, v in clean.items() if v is not None}}


def worst_case_tables(m: Metrics) -> list[Block]:
    """Defence x eps tables of the three worst cases (eps 0 = clean)."""
    defences = defences_in(m)
    blocks: list[Block] = []
    attacks = ", ".join(label(a) for a in attacks_in(m, "adaptive"))
    for quantity, over in WORST_CASES:
        tables = pivot(with_clean(m, defences, quantity), "eps", tuple(defences))
        if quantity in tables:
            what = over.format(attacks=attacks)
            blocks += [Paragraph(f"Accuracy vs L-inf eps (eps 0 = clean), worst case over {what}:"),
                       tables[quantity]]  # fmt: skip
    return blocks


def detector_paragraph(m: Metrics) -> Paragraph | None:
    if "detector.adaptive.auroc" not in m:
        return None
    parts = []
    for threat in ("oblivious", "adaptive"):
        parts.append(
            f"{threat}: AUROC {float(m[f'detector.{threat}.auroc']):.2f}, TPR at 5% FPR "
            f"{pct(float(m[f'detector.{threat}.tpr_at_5fpr']))}, attacks that fool the CNN and pass "
            f"the detector {pct(float(m[f'detector.{threat}.evasion_rate']))}"
        )
    return Paragraph(
        f"Reconstruction-error detector (the paper's autoencoder, threshold at 5% false positives on "
        f"clean images) at eps = {float(m['detector.eps']):g}, oblivious PGD vs a PGD that also keeps "
        f"the reconstruction error under the threshold (Carlini & Wagner 2017): "
        + "; ".join(parts)
        + "."
    )


def masking_sentence(m: Metrics, cfg: RobustnessParams) -> str:
    """What the gradient-masking check rests on: Square's budget, its images and its test."""
    p_values = {d: float(m.get(f"{d}.square.masking_p_value", 1.0)) for d in defences_in(m)}
    masked = [d for d, p in p_values.items() if p < cfg.masking_alpha]
    if masked:
        found = (
            f"it flags {', '.join(masked)}: there the white-box figures rest on masked gradients"
        )
    else:
        closest = min(p_values, key=p_values.__getitem__)
        found = (
            f"no defence is flagged at this budget (smallest p: {closest}, {p_values[closest]:.3g})"
        )
    return (
        f"Gradient masking: the gradient-free Square Attack ({cfg.square_queries} queries per "
        f"image, p_init {cfg.square_p_init:g}; AutoAttack uses 5000) on its own, on every "
        f"clean-correct one of {int(m.get('square_images', 0))} images "
        "(robustness.square_images), against the gradient attacks' worst case on the same images; "
        f"a one-sided exact McNemar test at alpha = {cfg.masking_alpha:g} asks whether Square "
        f"breaks more than sampling noise allows (check gradient_not_masked): {found}."
    )


def robustness_section(inputs: Inputs) -> Section:
    sec = Section("Does denoising defend?")
    m = inputs.metrics["robustness"]
    if m is None:
        sec.blocks.append(not_run("robustness"))
        sec.blocks += inputs.figures["robustness"]
        sec.blocks += _denoiser_stages(inputs)
        return sec
    cfg = inputs.params.robustness
    defences = defences_in(m)
    sec.blocks.append(
        Paragraph(
            f"Accuracy at robustness.eps = {cfg.eps:g} per defence, on {int(m.get('test_images', 0))}"
            " test images (robustness.max_images). Oblivious: adversarial examples crafted against "
            "the bare CNN, then defended (the paper's threat model). Adaptive: white-box attacks "
            "through defence + CNN end to end (BPDA for non-differentiable defences): FGSM, PGD "
            f"({inputs.params.attack.pgd_steps} steps; 2x steps checked), APGD-CE "
            f"({cfg.apgd_steps} steps, {cfg.apgd_restarts} restart(s); "
            f"{cfg.apgd_check_restarts} more on the survivors checked). Worst case: an image counts "
            "as robust only if it survives every attack of the column's threat model. "
            + masking_sentence(m, cfg)
            + " Robust accuracy (AutoAttack's): the per-image worst case over every attack, "
            "Square included, on Square's images; the verdicts use it."
        )
    )
    table_columns = robustness_columns(m)
    columns = ("defence", "clean accuracy", *(label for _, label in table_columns))
    rows = []
    for d in defences:
        row = [d, pct(float(m[f"{d}.clean_accuracy"]))]
        for key, _ in table_columns:
            v = m.get(key.format(d=d))
            row.append(pct(float(v)) if v is not None else "-")
        rows.append(tuple(row))
    sec.blocks.append(Table(columns, tuple(rows)))
    sec.blocks.append(
        Paragraph(
            f"Verdicts (a defence helps when its worst-case accuracy beats the undefended CNN's by "
            f">= {100 * MARGIN:.0f} points; it defends when, over all attacks, it also stays within "
            f"{100 * MARGIN:.0f} points of its clean accuracy):"
        )
    )
    sec.blocks.append(Bullets(tuple(defence_verdicts(m))))
    detector = detector_paragraph(m)
    if detector is not None:
        sec.blocks.append(detector)
    checks = {k: v for k, v in m.items() if isinstance(v, bool)}
    if checks:
        failed = [k for k, v in checks.items() if not v]
        sec.blocks.append(
            Paragraph(
                f"Evaluation checks (Carlini et al. 2019): {len(checks) - len(failed)} of "
                f"{len(checks)} passed" + (f"; failed: {', '.join(failed)}." if failed else ".")
            )
        )
    sec.blocks += worst_case_tables(m)
    sec.blocks.append(metrics_dump("metrics/robustness.json", m))
    sec.blocks += inputs.figures["robustness"]
    sec.blocks += _denoiser_stages(inputs)
    return sec


def external_section(inputs: Inputs) -> Section | None:
    """The external test set beside the internal test split; None when data.external is unset."""
    m = inputs.metrics["robustness"]
    if m is None or "external.images" not in m:
        return None
    d = inputs.params.data
    sec = Section("Another site: the external test set")
    sec.blocks.append(
        Paragraph(
            f"data.external ({d.external}): {int(m['external.images'])} images from another site, "
            "never trained on, labelled by data.external_classes "
            f"({', '.join(f'{k}: {v}' for k, v in d.external_classes.items())}); its majority "
            f"class is {pct(float(m['external.chance']))} of it. Clean accuracy on every image; "
            f"robust accuracy (every attack of the section above) at robustness.eps = "
            f"{float(m['external.eps']):g} on a seeded subset of "
            f"{int(m['external.subset_images'])} (robustness.external_images), beside the "
            f"internal test split's ({int(m.get('test_images', 0))} images)."
        )
    )
    rows = []
    for name in defences_in(m):
        cells = [m.get(f"{p}{name}.{q}") for q in ("clean_accuracy", "robust_accuracy")
                 for p in ("", "external.")]  # fmt: skip
        rows.append((name, *(pct(float(v)) if v is not None else "-" for v in cells)))
    columns = ("defence", "clean: test", "clean: external", "robust: test", "robust: external")
    sec.blocks.append(Table(columns, tuple(rows)))
    return sec


def _denoiser_stages(inputs: Inputs) -> list[Block]:
    blocks: list[Block] = []
    for stage, title in (
        ("train_ae_adv", "Autoencoder retrained on adversarial examples"),
        ("train_ae_guided", "Feature-guided denoiser"),
    ):
        blocks.append(Paragraph(f"**{title}** (metrics/{stage}.json)"))
        blocks += stage_results(inputs, stage)
    return blocks


def best_certified(
    m: Metrics, model: str, radius: float, sigmas: Sequence[float]
) -> tuple[float, float]:
    """(certified accuracy, sigma) of `model` at `radius`, best over sigma."""
    found = [
        (float(m.get(f"{model}.sigma_{s:g}.radius_{radius:g}.certified_accuracy", math.nan)), s)
        for s in sigmas
    ]
    found = [f for f in found if not math.isnan(f[0])]
    return max(found) if found else (math.nan, math.nan)


def certify_section(inputs: Inputs) -> Section:
    sec = Section("Certified robustness: randomized and denoised smoothing")
    m, cfg = inputs.metrics["certify"], inputs.params.certify
    if m is None:
        sec.blocks.append(not_run("certify"))
    else:
        pixels = inputs.params.data.image_size**2
        sec.blocks.append(
            Paragraph(
                f"Cohen et al. (2019) CERTIFY through ART on {int(m.get('images', 0))} test images "
                f"(certify.max_images): n0 = {cfg.n0} selection and n = {cfg.n} estimation samples, "
                f"alpha = {cfg.alpha:g}; with n = {cfg.n} no radius can exceed sigma x "
                f"{max_z(cfg.n, cfg.alpha):.2f}. Certified accuracy at L2 radius r counts images "
                f"certified for their true class with radius >= r; an L2 ball of radius r holds the "
                f"L-inf ball of radius r / {math.sqrt(pixels):g}."
            )
        )
        radii = tuple(cfg.radii)
        columns = ("model", "sigma", *(f"r={r:g} (L-inf {r / math.sqrt(pixels):.4f})" for r in radii),
                   "smoothed clean", "abstain", "mean radius", "attack violations")  # fmt: skip
        rows = []
        for model in cfg.models:
            for sigma in cfg.sigmas:
                key = f"{model}.sigma_{sigma:g}"
                if f"{key}.abstain_rate" not in m:
                    continue
                rows.append((
                    model, f"{sigma:g}",
                    *(pct(float(m[f"{key}.radius_{r:g}.certified_accuracy"])) for r in radii),
                    pct(float(m[f"{key}.smoothed_clean_accuracy"])),
                    pct(float(m[f"{key}.abstain_rate"])),
                    f"{float(m[f'{key}.mean_radius']):.3f}",
                    f"{int(m.get(f'{key}.attack.violations', 0))} of {int(m.get(f'{key}.attack.images', 0))}",
                ))  # fmt: skip
        sec.blocks.append(Table(columns, tuple(rows)))
        checks = {k: v for k, v in m.items() if k.startswith("checks.") and isinstance(v, bool)}
        failed = [k for k, v in checks.items() if not v]
        sec.blocks.append(
            Paragraph(
                f"Sanity checks (certified accuracy at radius 0 <= the smoothed classifier's clean "
                f"accuracy; non-increasing in the radius; L2 PGD with EOT inside "
                f"{cfg.attack_images} certificates per row never changes the smoothed prediction): "
                f"{len(checks) - len(failed)} of {len(checks)} passed"
                + (f"; failed: {', '.join(failed)}." if failed else ".")
            )
        )
        sec.blocks.append(metrics_dump("metrics/certify.json", m))
    sec.blocks += [f for f in inputs.figures["certify"] if f.path.name != BOUNDS_PNG]
    sec.blocks.append(Paragraph("**Gaussian denoiser** (metrics/train_ae_gauss.json)"))
    sec.blocks += stage_results(inputs, "train_ae_gauss")
    return sec


def max_z(n: int, alpha: float) -> float:
    """Phi^-1 of the Clopper-Pearson lower bound when all n samples agree: alpha ** (1 / n)."""
    return NormalDist().inv_cdf(alpha ** (1.0 / n))
