"""The rules that turn numbers into words, each with its threshold, and the paper's own figures.

- separability (probe or detector AUROC): < 0.6 indistinguishable, 0.6-0.8 partly separable,
  >= 0.8 separable;
- an attack "lowers accuracy" when it costs >= 5 percentage points;
- denoising "restores" accuracy when it recovers >= 80% of the accuracy the attack took, "partly" for
  20-80%, "does not" below 20%;
- the defence verdicts are the one rule of `advdenoise.evaluation.verdicts` (the same as
  plots/robustness/verdict.csv): robust accuracy (the per-image worst case over every attack, the
  standalone Square included) at robustness.eps, a 10-point margin
  over the undefended CNN, and within 10 points of the defence's own clean accuracy to "defend".
"""

from __future__ import annotations

from typing import Any

from advdenoise.evaluation.verdicts import verdicts
from advdenoise.report.inputs import Metrics

PAPER: dict[str, Any] = {
    "title": "Findings on Adversarial Robustness through Autoencoder-Based Denoising for Image "
    "Security (Ghosh & Chatterjee, 2024)",
    "test_accuracy": 0.9323,
    "image_size": 224,
    "epochs": 50,
    "lr": 1e-4,
    "batch_size": 16,
    "dataset": "SARS-CoV-2 CT-scan dataset (1252 COVID, 1230 non-COVID)",
}

AUROC_PARTLY = 0.6
AUROC_SEPARABLE = 0.8
ATTACK_DROP = 0.05
RESTORE_FULL = 0.8
RESTORE_PART = 0.2


def separability(auroc: float) -> str:
    if auroc < AUROC_PARTLY:
        return "indistinguishable"
    if auroc < AUROC_SEPARABLE:
        return "partly separable"
    return "separable"


def restoration(clean: float, adversarial: float, denoised: float) -> tuple[float | None, str]:
    """Fraction of the accuracy lost to the attack that denoising wins back, and its verdict."""
    lost = clean - adversarial
    if lost < ATTACK_DROP:
        return None, "nothing to restore (the attack cost less than 5 points)"
    fraction = (denoised - adversarial) / lost
    if fraction >= RESTORE_FULL:
        return fraction, "restores it"
    if fraction >= RESTORE_PART:
        return fraction, "partly restores it"
    return fraction, "does not restore it"


def defence_verdicts(metrics: Metrics) -> list[str]:
    """One sentence per defence, by the rule of `verdicts` (the same as plots/robustness/verdict.csv)."""
    found = verdicts(metrics)
    if not found:
        return ["The robustness metrics hold no undefended baseline ('none'); no verdicts."]
    return [v.text for v in found]
