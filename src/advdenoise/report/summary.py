"""The report's first screen: the headline figure, a verdict per defence and three sentences.

Everything here is read from the metrics (the figure too), so the page opens with what the run
found before it explains how.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib import rcParams
from matplotlib.figure import Figure

from advdenoise.evaluation import smoothed
from advdenoise.evaluation.verdicts import defences_in, verdicts
from advdenoise.report.document import Image, Paragraph, Section, Table, pct
from advdenoise.report.inputs import Inputs, Metrics, clean_accuracy, dataset_name
from advdenoise.report.robustness import best_certified
from advdenoise.report.rules import PAPER

STYLES = ("-", "--", ":", "-.")


def worst_case_curve(m: Metrics, defence: str, grid: tuple[float, ...]) -> tuple[list, list]:
    """(eps, accuracy) of one defence: clean at eps 0, then the gradient attacks' worst case."""
    xs, ys = [0.0], [float(m[f"{defence}.clean_accuracy"])]
    for eps in grid:
        value = m.get(f"{defence}.eps_{eps:g}.worst.accuracy")
        if eps > 0 and value is not None:
            xs.append(eps)
            ys.append(float(value))
    return xs, ys


def headline_figure(inputs: Inputs) -> Figure | None:
    """Worst-case accuracy vs eps per defence (robust accuracy, Square included, marked at the
    headline eps) beside certified accuracy vs L2 radius per smoothed model; None without either."""
    rob, cert = inputs.metrics["robustness"], inputs.metrics["certify"]
    if rob is None and cert is None:
        return None
    fig = Figure(figsize=(10.0, 3.4))  # no pyplot: nothing global to select or close
    left, right = fig.subplots(1, 2)
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    if rob is not None:
        cfg = inputs.params.robustness
        for i, d in enumerate(defences_in(rob)):
            xs, ys = worst_case_curve(rob, d, tuple(cfg.eps_grid))
            colour = colours[i % len(colours)]
            left.plot(xs, ys, marker="o", ms=3, color=colour, label=d)
            if f"{d}.robust_accuracy" in rob:
                left.plot(cfg.eps, float(rob[f"{d}.robust_accuracy"]), "x", ms=9, color=colour)
        left.axhline(float(rob.get("chance", 0.5)), color="grey", ls=":", lw=1)
        left.set_title(f"worst case of the gradient attacks; x: of every attack, at {cfg.eps:g}")
        left.legend(fontsize=7)
    left.set_xlabel("L-inf eps")
    left.set_ylabel("accuracy")
    if cert is not None:
        cfg_c = inputs.params.certify
        for i, model in enumerate(cfg_c.models):
            for j, sigma in enumerate(cfg_c.sigmas):
                key = f"{model}.sigma_{sigma:g}.radius_"
                points = [(r, float(cert[f"{key}{r:g}.certified_accuracy"]))
                          for r in cfg_c.radii if f"{key}{r:g}.certified_accuracy" in cert]  # fmt: skip
                if points:
                    right.plot(*zip(*points, strict=True), color=colours[i % len(colours)],
                               ls=STYLES[j % len(STYLES)], label=f"{model}, sigma {sigma:g}")  # fmt: skip
        right.axhline(float(cert.get("chance", 0.5)), color="grey", ls=":", lw=1)
        right.set_title("certified accuracy (randomized smoothing)")
        right.legend(fontsize=7)
    right.set_xlabel("L2 radius")
    for ax in (left, right):
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def verdict_table(m: Metrics) -> Table:
    eps = float(m.get("eps", math.nan))
    rows = tuple(
        (
            v.defence,
            pct(float(m[f"{v.defence}.clean_accuracy"])),
            pct(float(m[f"{v.defence}.robust_accuracy"]))
            if f"{v.defence}.robust_accuracy" in m
            else "-",
            f"**{v.label}**",
            ", ".join(v.failed_checks) or "-",
        )
        for v in verdicts(m)
    )
    return Table(("defence", "clean", f"robust accuracy at eps {eps:g}", "verdict",
                  "failed checks"), rows)  # fmt: skip


def comparable_radius(inputs: Inputs) -> float | None:
    """The positive L2 radius of certify.radii whose inscribed L-inf ball (r / sqrt(pixels)) comes
    closest to robustness.eps, so the certificate and the attacks speak of about one threat."""
    radii = [r for r in inputs.params.certify.radii if r > 0]
    target = inputs.params.robustness.eps * inputs.params.data.image_size
    return min(radii, key=lambda r: abs(r - target)) if radii else None


def sentences(inputs: Inputs) -> list[str]:
    """At most three: the clean CNN against the paper, the defences, the checks and certificates."""
    p, out = inputs.params, []
    acc = clean_accuracy(inputs)
    if acc is not None:
        out.append(
            f"On {dataset_name(p)} at {p.data.image_size} px the CNN scores {pct(acc)} clean "
            f"(the paper: {pct(PAPER['test_accuracy'])} on the real scans at "
            f"{PAPER['image_size']} px)."
        )
    rob = inputs.metrics["robustness"]
    found = verdicts(rob) if rob is not None else []
    if rob is not None and found:
        robust = {
            v.defence: float(rob.get(f"{v.defence}.robust_accuracy", math.nan)) for v in found
        }
        best = max((v for v in found if v.defence != "none"), key=lambda v: robust[v.defence])
        defends = sum(v.label == "defends" for v in found)
        out.append(
            f"Against every attack at L-inf eps = {float(rob['eps']):g} the undefended CNN keeps "
            f"{pct(robust['none'])}; the best defence, {best.defence}, keeps "
            f"{pct(robust[best.defence])} at {pct(float(rob[f'{best.defence}.clean_accuracy']))} "
            f"clean (**{best.label}**), and {defends} of {len(found) - 1} defences defend."
        )
    checks = [
        v
        for stage in ("attack", "robustness", "certify")
        for k, v in (inputs.metrics[stage] or {}).items()
        if isinstance(v, bool) and k.split(".")[0] in ("check", "checks") and "all_passed" not in k
    ]
    cert = inputs.metrics["certify"]
    if checks or cert is not None:
        text = f"{sum(checks)} of {len(checks)} evaluation checks pass"
        radius = comparable_radius(inputs)
        if cert is not None and radius is not None:
            found_c = [(best_certified(cert, m, radius, inputs.params.certify.sigmas), m)
                       for m in inputs.params.certify.models]  # fmt: skip
            (acc_c, sigma), model = max(
                found_c, key=lambda f: -1 if math.isnan(f[0][0]) else f[0][0]
            )
            text += (
                f"; the best certified accuracy at L2 radius {radius:g} (an L-inf ball of "
                f"{radius / inputs.params.data.image_size:.4f}) is {pct(acc_c)} "
                f"({smoothed.label(model)}, sigma {sigma:g}) against the "
                f"{pct(float(cert.get('chance', 0.5)))} of the majority class"
            )
        out.append(text + ".")
    return out


def summary(inputs: Inputs, figure: Path | None) -> Section:
    sec = Section("Summary")
    text = sentences(inputs)
    sec.blocks.append(
        Paragraph(" ".join(text) if text else "No stage results yet: run `dvc repro`.")
    )
    if figure is not None:
        sec.blocks.append(
            Image(figure, "Left: accuracy vs L-inf eps per defence, the worst case over the "
                  "gradient attacks (eps 0: clean); x: robust accuracy (every attack) at the "
                  "headline eps. Right: certified accuracy vs L2 radius. Dotted: majority class.")
        )  # fmt: skip
    rob = inputs.metrics["robustness"]
    if rob is not None and verdicts(rob):
        sec.blocks.append(verdict_table(rob))
    return sec
