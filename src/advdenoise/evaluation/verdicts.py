"""The one rule that turns robustness metrics into a verdict per defence (report and verdict.csv).

Pure (no torch, no ART): it reads the flat metrics of the robustness stage, so the report and the
stage's own verdict.csv cannot disagree. The rule, at the headline eps, on the per-image worst case
over every attack (an image is robust only if it survives all of them: `robust_accuracy`, with
the standalone Square, on its images; the threat models' worst cases are the gradient attacks'):
- a defence *helps* under a threat model when its worst-case accuracy beats the undefended CNN's
  by >= MARGIN;
- it *defends* when it helps under the adaptive threat model, stays within MARGIN of its own clean
  accuracy and beats the majority-class rate (`chance`) by MARGIN; only the adaptive model decides
  (Carlini et al. 2019). A defence that turns the CNN into a near-constant answer is trivially
  "robust", so near chance it only helps partly;
- below the majority-class rate (`chance`) the accuracy is "below chance" whatever the gain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from advdenoise.defences.specs import DEFENCES

MARGIN = 0.10

Metrics = Mapping[str, float | bool]


@dataclass(frozen=True)
class Verdict:
    defence: str
    label: str  # undefended | defends | helps partly | does not defend
    text: str
    failed_checks: tuple[str, ...]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def defences_in(metrics: Metrics) -> list[str]:
    """Defences present in the metrics (`<d>.clean_accuracy`; not the external set's
    `external.<d>.clean_accuracy`), in registry order (unknown names after, sorted)."""
    found = {
        k.split(".")[0] for k in metrics if k.count(".") == 1 and k.endswith(".clean_accuracy")
    }
    return [d for d in DEFENCES if d in found] + sorted(found - set(DEFENCES))


def _worst(metrics: Metrics, defence: str, view: str) -> float:
    key = f"{defence}.robust_accuracy" if view == "worst" else f"{defence}.{view}.worst.accuracy"
    value = metrics.get(key)
    return float(value) if value is not None else math.nan


def verdict(metrics: Metrics, defence: str) -> Verdict:
    """The verdict of one defence (the undefended baseline `none` must be in the metrics)."""
    eps = float(metrics.get("eps", math.nan))
    chance = float(metrics.get("chance", 0.5))
    clean = float(metrics[f"{defence}.clean_accuracy"])
    failed = tuple(
        k.split(".", 2)[2]
        for k, v in metrics.items()
        if k.startswith(f"checks.{defence}.") and v is False
    )
    worst = {v: _worst(metrics, defence, v) for v in ("oblivious", "adaptive", "worst")}
    if defence == "none":
        label = "undefended"
        text = (
            f"Undefended CNN: clean {_pct(clean)}; at eps={eps:g} the worst case over all attacks "
            f"leaves {_pct(worst['worst'])}"
        )
    else:
        base = {v: _worst(metrics, "none", v) for v in worst}
        gain = {v: worst[v] - base[v] for v in worst}
        near_chance = worst["worst"] < chance + MARGIN
        if gain["worst"] >= MARGIN and worst["worst"] >= clean - MARGIN and not near_chance:
            label, why = "defends", "robust under every attack, close to its clean accuracy"
        elif gain["worst"] >= MARGIN:
            label = "helps partly"
            why = "better than no defence under every attack, " + (
                f"but within {100 * MARGIN:.0f} points of the majority-class rate"
                if near_chance
                else "far below clean"
            )
        elif gain["oblivious"] >= MARGIN:
            label = "does not defend"
            why = "it helps only against the oblivious attack; the gain vanishes once the attack knows it"
        else:
            label, why = "does not defend", "no gain over the undefended CNN"
        cost = float(metrics["none.clean_accuracy"]) - clean
        text = (
            f"{defence}: clean {_pct(clean)} (cost {100 * cost:+.1f} points vs undefended); at "
            f"eps={eps:g} worst-case oblivious {_pct(worst['oblivious'])} vs "
            f"{_pct(base['oblivious'])} undefended, over all attacks {_pct(worst['worst'])} vs "
            f"{_pct(base['worst'])} - **{label}**: {why}"
        )
    if worst["worst"] < chance:
        text += f" (below the {_pct(chance)} of always answering the majority class)"
    if failed:
        text += f"; failed checks: {', '.join(failed)}"
    return Verdict(defence, label, text + ".", failed)


def verdicts(metrics: Metrics) -> list[Verdict]:
    """`verdict` for every defence in the metrics; empty without the `none` baseline."""
    defences = defences_in(metrics)
    if "none" not in defences:
        return []
    return [verdict(metrics, d) for d in defences]
