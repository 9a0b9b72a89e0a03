"""What the stage reports: the sanity checks, the flat metrics, the table and the curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from advdenoise.attacks import specs as attack_specs
from advdenoise.core.errors import PipelineError
from advdenoise.core.params import RobustnessParams
from advdenoise.evaluation.attack import MONOTONE_TOLERANCE
from advdenoise.evaluation.robustness.evaluation import METHODS, THREATS, VIEWS, DefenceResult
from advdenoise.evaluation.verdicts import verdicts

CONVERGENCE_TOLERANCE = 0.01  # doubling PGD steps may move accuracy by at most one point


def checks(result: DefenceResult, params: RobustnessParams) -> dict[str, bool]:
    """Carlini et al. 2019 sanity checks of one defence's evaluation (True = passed).

    Orderings ("a <= b") tolerate one image, as the attack stage's checks do (a random start can
    flip a single borderline image); convergence allows CONVERGENCE_TOLERANCE, APGD's extra
    restarts robustness.restarts_tolerance images; gradient masking is `masking_test`'s verdict.
    `l2_le_linf_inside`: L2 APGD within r leaves at most the accuracy of the L-inf attacks at
    every eps whose ball lies inside it (eps * sqrt(pixels) <= r), on L2's images: else the L2
    attack is weaker than the L-inf ones on a threat it contains.
    """
    tol = MONOTONE_TOLERANCE / max(result.n_images, 1) + 1e-12
    eps_values, h = result.eps_values, result.headline
    acc = result.accuracy
    out: dict[str, bool] = {}
    for threat in THREATS:
        out[f"{threat}.pgd_le_fgsm"] = all(
            acc(threat, "pgd", e) <= acc(threat, "fgsm", e) + tol for e in eps_values
        )
        for method in METHODS[threat]:
            accs = [result.clean_accuracy] + [acc(threat, method, e) for e in eps_values]
            out[f"{threat}.{method}.non_increasing_in_eps"] = all(
                b <= a + tol for a, b in zip(accs, accs[1:], strict=False)
            )
    pgd_h = acc("adaptive", "pgd", h)
    pgd_2x = float(result.pgd_2x_steps.mean()) if result.pgd_2x_steps is not None else pgd_h
    out["pgd_converged"] = abs(pgd_2x - pgd_h) <= CONVERGENCE_TOLERANCE + 1e-12
    out["apgd_restarts_converged"] = restart_breaks(result) <= params.restarts_tolerance
    out["random_noise_floor"] = result.random_noise + tol >= max(
        acc("adaptive", m, h) for m in attack_specs.WHITE_BOX
    )
    out["adaptive_le_oblivious"] = pgd_h <= acc("oblivious", "pgd", h) + tol
    if result.l2_subset is not None:
        subset = result.l2_subset
        one = MONOTONE_TOLERANCE / max(int(subset.sum()), 1) + 1e-12
        out["l2_le_linf_inside"] = all(
            result.l2_accuracy(r) <= float(result.survivors("worst", e)[subset].mean()) + one
            for r in result.l2
            for e in result.linf_inside_l2(r)
        )
    out["gradient_not_masked"] = masking_test(result).p_value >= params.masking_alpha
    return out


def restart_breaks(result: DefenceResult) -> int:
    """Images that APGD's extra restarts broke after every other gradient-based attack missed."""
    before = result.survivors("worst", result.headline, extra=False)
    if result.pgd_2x_steps is not None:
        before &= result.pgd_2x_steps
    after = result.survivors("worst", result.headline)
    return int((before & ~after).sum())


@dataclass(frozen=True)
class MaskingTest:
    """Square alone vs the gradient attacks' worst case, per image on Square's subset."""

    square_only: int  # images Square broke that survived every gradient-based attack
    gradient_only: int  # images the gradient attacks broke that survived Square
    p_value: float  # one-sided exact McNemar: P(>= square_only of the discordant | no difference)


def masking_test(result: DefenceResult) -> MaskingTest:
    """Does the gradient-free attack beat the gradient-based ones by more than sampling noise?

    The exact one-sided McNemar test on the paired outcomes: under "equally strong", each image
    that exactly one of the two breaks is Square's with probability 1/2. A small p-value means
    Square finds what the gradients cannot reach: the white-box figures rest on masked gradients.
    """
    subset, square = result.square_outcome()
    gradient = result.survivors("worst", result.headline)
    square_only = int((subset & gradient & ~square).sum())
    gradient_only = int((subset & ~gradient & square).sum())
    n = square_only + gradient_only
    p = binomtest(square_only, n, 0.5, alternative="greater").pvalue if n else 1.0
    return MaskingTest(square_only, gradient_only, float(p))


def eps_label(eps: float) -> str:
    """The eps part of a per-eps metric key, e.g. `eps_0.004`."""
    return f"eps_{eps:g}"


def robustness_metrics(
    results: Sequence[DefenceResult], params: RobustnessParams
) -> dict[str, float | bool]:
    """Flat metrics: the headline eps per defence, every eps of the grid, and every check.

    Keys at the headline: `<d>.clean_accuracy`, `<d>.<threat>.<method>.accuracy`,
    `<d>.<view>.worst.accuracy` / `<d>.worst.accuracy` (gradient-based attacks), the standalone
    Square's `<d>.square.*` and `<d>.robust_accuracy` (every attack, on Square's images); per
    eps: `<d>.eps_<e>.<...>.accuracy`; per L2 radius `<d>.l2.radius_<r>.accuracy` (L2 APGD on
    its images, radius 0: clean).
    """
    out: dict[str, float | bool] = {}
    if results:
        out["eps"] = float(results[0].headline)
        out["test_images"] = results[0].n_images
        out["chance"] = results[0].chance
        subset = results[0].square_subset
        out["square_images"] = int(subset.sum()) if subset is not None else 0
        l2 = results[0].l2_subset
        out["l2_images"] = int(l2.sum()) if l2 is not None else 0
    for r in results:
        out[f"{r.name}.clean_accuracy"] = r.clean_accuracy
        for e in r.eps_values:
            at = ("",) if e == r.headline else ()
            for prefix in (*at, f"{eps_label(e)}."):
                for threat, method in r.correct:
                    out[f"{r.name}.{prefix}{threat}.{method}.accuracy"] = r.accuracy(
                        threat, method, e
                    )
                for view in THREATS:
                    out[f"{r.name}.{prefix}{view}.worst.accuracy"] = r.worst(view, e)
                out[f"{r.name}.{prefix}worst.accuracy"] = r.worst("worst", e)
        if r.pgd_2x_steps is not None:
            out[f"{r.name}.adaptive.pgd_2x_steps.accuracy"] = float(r.pgd_2x_steps.mean())
        out[f"{r.name}.adaptive.apgd_more_restarts.breaks"] = restart_breaks(r)
        masking = masking_test(r)
        out[f"{r.name}.square.accuracy"] = r.square_accuracy()
        out[f"{r.name}.square.gradient_worst.accuracy"] = r.gradient_worst_on_square_subset()
        out[f"{r.name}.square.breaks_beyond_gradient"] = masking.square_only
        out[f"{r.name}.square.gradient_breaks_beyond_square"] = masking.gradient_only
        out[f"{r.name}.square.masking_p_value"] = masking.p_value
        out[f"{r.name}.robust_accuracy"] = r.robust_accuracy()
        out[f"{r.name}.random_noise.accuracy"] = r.random_noise
        for radius in sorted(r.l2):
            out[f"{r.name}.l2.radius_{radius:g}.accuracy"] = r.l2_accuracy(radius)
        for check, passed in checks(r, params).items():
            out[f"checks.{r.name}.{check}"] = bool(passed)
    out["checks.all_passed"] = all(v for k, v in out.items() if k.startswith("checks."))
    for key, value in out.items():
        if not isinstance(value, bool) and not np.isfinite(value):
            raise PipelineError(f"robustness metric {key} is not finite")
    return out


def robustness_table(results: Sequence[DefenceResult]) -> pd.DataFrame:
    """One row per defence at the headline eps: clean, every (threat, method), the worst cases."""
    rows = []
    for r in results:
        h = r.headline
        row: dict[str, object] = {"defence": r.name, "clean_accuracy": r.clean_accuracy}
        row.update({f"{t}_{m}": r.accuracy(t, m, h) for t, m in r.correct})
        row["adaptive_pgd_2x_steps"] = (
            float(r.pgd_2x_steps.mean()) if r.pgd_2x_steps is not None else float("nan")
        )
        row.update({f"worst_{v}": r.worst(v, h) for v in VIEWS})
        row["square"] = r.square_accuracy()
        row["robust_accuracy"] = r.robust_accuracy()
        row["random_noise"] = r.random_noise
        rows.append(row)
    return pd.DataFrame(rows)


def robustness_curves(results: Sequence[DefenceResult]) -> pd.DataFrame:
    """Long table (defence, threat, method, eps, accuracy); method "worst" is the per-image worst
    case within the threat (threat "worst": over all attacks); eps = 0 is the clean accuracy."""
    rows = []
    for r in results:
        cells = [(t, m) for t, m in r.correct] + [(v, "worst") for v in VIEWS]
        for threat, method in cells:
            rows.append((r.name, threat, method, 0.0, r.clean_accuracy))
            for e in r.eps_values:
                value = r.worst(threat, e) if method == "worst" else r.accuracy(threat, method, e)
                rows.append((r.name, threat, method, e, value))
    return pd.DataFrame(rows, columns=["defence", "threat", "method", "eps", "accuracy"])


def wide_curves(curves: pd.DataFrame, threat: str, method: str = "worst") -> pd.DataFrame:
    """eps + one accuracy column per defence (a DVC linear plot of one threat and method)."""
    part = curves[(curves.threat == threat) & (curves.method == method)]
    wide = part.pivot(index="eps", columns="defence", values="accuracy")
    return wide[list(part.defence.drop_duplicates())].reset_index()


def l2_curves(results: Sequence[DefenceResult]) -> pd.DataFrame:
    """radius + one column per defence: accuracy under L2 APGD on its images (a DVC linear plot;
    radius 0 is the clean accuracy there)."""
    radii = sorted(results[0].l2) if results else []
    columns = {"radius": radii, **{r.name: [r.l2_accuracy(x) for x in radii] for r in results}}
    return pd.DataFrame(columns)


TEST_SETS = (("test", ""), ("external", "external."))  # (name, metrics key prefix)
MEASURES = (("clean", "clean_accuracy"), ("robust", "robust_accuracy"))


def test_sets_table(scores: dict[str, float | bool], defences: Sequence[str]) -> pd.DataFrame:
    """One row per defence, test set and measure in the metrics (`bar` labels it): the internal
    test split, and data.external beside it where it ran."""
    rows = []
    for d in defences:
        for test_set, prefix in TEST_SETS:
            for measure, key in MEASURES:
                value = scores.get(f"{prefix}{d}.{key}")
                if value is not None:
                    rows.append((f"{d} {test_set} {measure}", d, test_set, measure, float(value)))
    return pd.DataFrame(rows, columns=["bar", "defence", "set", "measure", "accuracy"])


def plot_tables(
    results: Sequence[DefenceResult], scores: dict[str, float | bool], defences: Sequence[str]
) -> dict[str, pd.DataFrame]:
    """The stage's plot data by file name: the table, the curves (long, and wide per view for
    DVC; L2 over radius), the test sets' bars and the verdicts."""
    curves = robustness_curves(results)
    return {
        "robustness.csv": robustness_table(results),
        "curves.csv": curves,
        **{f"curves_{view}.csv": wide_curves(curves, view) for view in VIEWS},
        "curves_l2.csv": l2_curves(results),
        "test_sets.csv": test_sets_table(scores, defences),
        "verdict.csv": pd.DataFrame([asdict(v) for v in verdicts(scores)]),
    }
