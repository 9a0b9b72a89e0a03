"""The attack stage's evaluation: accuracy, success rate and norms per (method, eps) cell, checks.

Pure NumPy (no ART), so the report and the robustness evaluation can use the same key format and
tolerance without importing the attack machinery.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from advdenoise.core.errors import PipelineError

MONOTONE_TOLERANCE = 1  # images: accuracy may rise with eps (or PGD beat FGSM) by this much


@dataclass(frozen=True)
class CellResult:
    """One (method, eps) cell of the accuracy-vs-eps table."""

    method: str
    eps: float
    accuracy: float
    success_rate: float  # of the originally correct images, the fraction now misclassified
    l2_mean: float
    linf_max: float


def evaluate_cell(
    method: str,
    eps: float,
    clean: np.ndarray,
    adv: np.ndarray,
    y: np.ndarray,
    clean_pred: np.ndarray,
    adv_pred: np.ndarray,
) -> CellResult:
    """Accuracy, success rate on originally correct images, and perturbation norms of one set."""
    if len(y) == 0:
        raise PipelineError(f"{method} eps={eps:g}: empty test set")
    correct = clean_pred == y
    delta = (adv.astype(np.float64) - clean.astype(np.float64)).reshape(len(adv), -1)
    success = float(np.mean(adv_pred[correct] != y[correct])) if correct.any() else 0.0
    return CellResult(
        method=method,
        eps=float(eps),
        accuracy=float(np.mean(adv_pred == y)),
        success_rate=success,
        l2_mean=float(np.linalg.norm(delta, axis=1).mean()),
        linf_max=float(np.abs(delta).max()),
    )


def sanity_checks(
    cells: Sequence[CellResult], n: int, tolerance: int = MONOTONE_TOLERANCE
) -> dict[str, bool]:
    """The checks an attack evaluation must pass, each a boolean (tolerance in images of `n`).

    - `<method>.monotone`: accuracy does not increase with eps;
    - `<method>.uses_budget`: at every eps > 0 some pixel moves by at least half of eps. FGSM and
      PGD step by eps (or a fraction of it) along the gradient's sign, so an attack that returns
      its input (or FGSM on an all-zero gradient) shows as a perturbation far inside the bound;
    - `pgd_le_fgsm`: PGD accuracy <= FGSM accuracy at every shared eps (only with both methods).
    """
    tol = tolerance / n + 1e-12
    by_method: dict[str, list[CellResult]] = {}
    for c in sorted(cells, key=lambda c: (c.method, c.eps)):
        by_method.setdefault(c.method, []).append(c)
    checks: dict[str, bool] = {}
    for method, rows in by_method.items():
        accs = [r.accuracy for r in rows]
        checks[f"{method}.monotone"] = all(b <= a + tol for a, b in itertools.pairwise(accs))
        checks[f"{method}.uses_budget"] = all(r.linf_max >= r.eps / 2 for r in rows if r.eps > 0)
    if "fgsm" in by_method and "pgd" in by_method:
        fgsm_acc = {r.eps: r.accuracy for r in by_method["fgsm"]}
        checks["pgd_le_fgsm"] = all(
            r.accuracy <= fgsm_acc[r.eps] + tol for r in by_method["pgd"] if r.eps in fgsm_acc
        )
    return checks


def metric_key(method: str, eps: float, name: str) -> str:
    """Flat metrics/attack.json key of one cell, e.g. `pgd.eps_0.03.accuracy`."""
    return f"{method}.eps_{eps:g}.{name}"


def grid_metrics(
    cells: Sequence[CellResult], clean_accuracy: float, checks: Mapping[str, bool]
) -> dict[str, float | bool]:
    """metrics/attack.json: clean accuracy, accuracy and success rate of every cell, the checks.

    Every eps of the grid rather than the headline alone: the stage does not depend on
    attack.eps, so a headline-only experiment re-uses its outputs.
    """
    out: dict[str, float | bool] = {"clean_accuracy": clean_accuracy}
    for c in sorted(cells, key=lambda c: (c.method, c.eps)):
        if c.eps > 0:
            out[metric_key(c.method, c.eps, "accuracy")] = c.accuracy
            out[metric_key(c.method, c.eps, "success_rate")] = c.success_rate
    out.update({f"check.{k}": v for k, v in checks.items()})
    return out
