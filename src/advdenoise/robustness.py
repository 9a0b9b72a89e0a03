"""The robustness stage: every defence under oblivious, adaptive white-box and gradient-free attacks.

Threat models, per defence and eps (Carlini et al. 2019, "On evaluating adversarial robustness"):
- oblivious: the attack stage's FGSM and PGD sets (crafted against the bare CNN) through defence +
  CNN: the paper's threat model;
- adaptive: FGSM, PGD and APGD-CE (white-box, through defence + CNN end to end; BPDA where the
  defence has no gradient) and the Square Attack (gradient-free: it needs scores only, so gradient
  masking cannot hide a defence's weakness from it). As in AutoAttack, Square runs on the images
  that every gradient-based attack left correct: its accuracy is the robust accuracy after all of
  them, and `square_breaks` counts what it found that they missed (gradient masking if > 0).
An image counts as robust only if it survives every attack: the per-image worst case over all of
them is the figure the verdicts use. Attacks run on the images the defended CNN classifies
correctly (the others are wrong already), with seeds derived from (seed, defence, eps, attack).

Checks (True = passed): iterative attacks at least as strong as FGSM; accuracy non-increasing in
eps; PGD converged (2x steps moves accuracy by at most one point); the random sign-noise floor;
adaptive at least as strong as oblivious; gradient-free no stronger than white-box (else the
white-box evaluation is masked). The reconstruction-error detector is attacked too (`detector`).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from advdenoise import attack_runs, attacks, metrics
from advdenoise.adversarial import AdversarialSets, check_perturbation, load_adversarial
from advdenoise.attack_metrics import MONOTONE_TOLERANCE
from advdenoise.data import evaluation_subset, load_splits, to_float
from advdenoise.defences import build_defence, defended_classifier
from advdenoise.errors import PipelineError
from advdenoise.models import (
    MODEL_FILE,
    batched_apply,
    load_autoencoder,
    load_classifier,
    predict_labels,
)
from advdenoise.params import DEFENCES, AttackParams, Params, RobustnessParams

THREATS = ("oblivious", "adaptive")
METHODS = {"oblivious": attack_runs.METHODS, "adaptive": attack_runs.ATTACKS}
VIEWS = (*THREATS, "worst")  # the worst case within each threat model, and over both
CONVERGENCE_TOLERANCE = 0.01  # doubling PGD steps may move accuracy by at most one point
DETECTOR_FPR = 0.05  # the detector's threshold flags this fraction of clean images
_STREAM = 6  # seed stream of this stage (attack_runs.offset_seed's)
SUBSET_STREAM = 7  # data.evaluation_subset stream of this stage


def sign_noise(x: np.ndarray, eps: float, seed: int) -> np.ndarray:
    """x + eps * uniform random signs, clipped to [0, 1]: the random floor of the same L-inf size."""
    rng = np.random.default_rng([seed, _STREAM, 99])
    signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=x.shape)
    return np.clip(x + np.float32(eps) * signs, 0.0, 1.0).astype(np.float32)


def check_oblivious_sets(oblivious: AdversarialSets, params: RobustnessParams, where: str) -> None:
    """The attack stage must have crafted FGSM and PGD sets at every eps evaluated here."""
    wanted = [*params.eps_grid, params.detector_eps]
    missing = [e for e in wanted if not any(abs(e - o) < 1e-12 for o in oblivious.eps)]
    if missing or not set(attack_runs.METHODS) <= set(oblivious.methods):
        raise PipelineError(
            f"{where}: needs fgsm and pgd sets at every eps of robustness.eps_grid"
            f" {list(params.eps_grid)} and at robustness.detector_eps {params.detector_eps:g};"
            f" it has {list(oblivious.methods)} at {list(oblivious.eps)} (add the missing eps"
            f" {missing} to attack.eps_grid and attack.methods)"
        )


@dataclass
class DefenceResult:
    """Per-image correctness of one defence: clean, and correct[(threat, method)][eps]."""

    name: str
    headline: float
    clean: np.ndarray  # bool per image
    chance: float = 0.5  # majority-class rate of the labels: a constant classifier's accuracy
    correct: dict[tuple[str, str], dict[float, np.ndarray]] = field(default_factory=dict)
    pgd_2x_steps: np.ndarray | None = None  # bool per image, PGD with 2x steps at the headline
    random_noise: float = float("nan")

    @property
    def n_images(self) -> int:
        return len(self.clean)

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean.mean())

    @property
    def eps_values(self) -> list[float]:
        return sorted(next(iter(self.correct.values())))

    def accuracy(self, threat: str, method: str, eps: float) -> float:
        return float(self.correct[(threat, method)][eps].mean())

    def _alive(self, eps: float, cells: Iterable[tuple[str, str]], with_2x: bool) -> np.ndarray:
        """Images correct clean and under every attack cell in `cells` (and PGD-2x if asked)."""
        alive = self.clean.copy()
        for cell in cells:
            alive &= self.correct[cell][eps]
        if with_2x and eps == self.headline and self.pgd_2x_steps is not None:
            alive &= self.pgd_2x_steps
        return alive

    def survivors(self, view: str, eps: float) -> np.ndarray:
        """Images correct under every attack of `view` (a threat, or "worst": all of them)."""
        cells = [c for c in self.correct if view in (c[0], "worst")]
        return self._alive(eps, cells, with_2x=view != "oblivious")

    def gradient_survivors(self, eps: float) -> np.ndarray:
        """Images correct under every gradient-based attack at `eps` (what Square then attacks)."""
        cells = [
            c
            for c, by_eps in self.correct.items()
            if c[1] not in attack_runs.BLACK_BOX and eps in by_eps
        ]
        return self._alive(eps, cells, with_2x=True)

    def worst(self, view: str, eps: float) -> float:
        return float(self.survivors(view, eps).mean())


def _eps_key(eps: float) -> int:
    return int(round(eps * 1e9))


def evaluate_defence(
    name: str,
    defence: nn.Module,
    cnn: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    oblivious: AdversarialSets,
    attack: AttackParams,
    params: RobustnessParams,
    *,
    seed: int,
    device: torch.device | str,
    nb_classes: int,
    eps_values: Sequence[float] | None = None,
) -> DefenceResult:
    """Every attack of METHODS on `Sequential(defence, cnn)` at every eps of params.eps_grid (or
    of `eps_values`: a cell of `evaluate_in_processes`; `merge_results` joins them).

    For `none` the oblivious and adaptive FGSM/PGD coincide, so those reuse the attack stage's sets
    (same params and ART code). PGD at the headline runs on to 2x steps for the convergence check.
    """
    eps_values = params.eps_grid if eps_values is None else eps_values
    model = defended_classifier(defence, cnn)
    bs, steps, headline = attack.batch_size, attack.pgd_steps, params.eps

    def correct(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = np.zeros(len(y), dtype=bool)
        if len(rows):
            out[rows] = predict_labels(model, images, bs, device) == y[rows]
        return out

    everyone = np.arange(len(y))
    clean = correct(x, everyone)
    result = DefenceResult(name, headline, clean, float(np.bincount(y).max() / len(y)))
    classifier = attacks.make_art_classifier(model, x.shape[1:], nb_classes, device)
    rows = np.flatnonzero(clean)  # attacks need only the images classified correctly
    xa, ya = x[rows], y[rows]
    di = DEFENCES.index(name) if name in DEFENCES else len(DEFENCES)
    for method in attack_runs.METHODS:
        result.correct[("oblivious", method)] = {
            e: correct(oblivious.get(method, e), everyone) for e in eps_values
        }
    for method in attack_runs.ATTACKS:
        result.correct[("adaptive", method)] = {}
    for e in eps_values:
        offsets = (di, _eps_key(e))
        cells = result.correct
        if len(rows) == 0:  # nothing classified correctly: nothing to attack
            for method in attack_runs.ATTACKS:
                cells[("adaptive", method)][e] = np.zeros(len(y), dtype=bool)
            continue
        if name == "none":  # the attack stage's sets: same params and ART code
            for method in attack_runs.METHODS:
                cells[("adaptive", method)][e] = cells[("oblivious", method)][e]
        else:
            (fgsm,) = attack_runs.run_attacks(classifier, "fgsm", xa, ya, e, attack)
            cells[("adaptive", "fgsm")][e] = correct(fgsm, rows)
        if name != "none" or e == headline:
            with_2x = e == headline
            advs = attack_runs.run_attacks(
                classifier, "pgd", xa, ya, e, attack, seed=seed, offsets=offsets,
                checkpoints=(steps, 2 * steps) if with_2x else (),
            )  # fmt: skip
            if name != "none":
                cells[("adaptive", "pgd")][e] = correct(advs[0], rows)
            if with_2x:
                result.pgd_2x_steps = correct(advs[-1], rows)
        apgd = attacks.apgd(
            classifier, xa, ya, e, params.apgd_steps, params.apgd_restarts, bs,
            seed=attack_runs.offset_seed(seed, *offsets, 1),
        )  # fmt: skip
        check_perturbation(xa, apgd, e, f"{name}: apgd eps={e:g}")
        cells[("adaptive", "apgd")][e] = correct(apgd, rows)
        # Square, as in AutoAttack, on the images every gradient-based attack left correct
        left = np.flatnonzero(result.gradient_survivors(e))
        cells[("adaptive", "square")][e] = np.zeros(len(y), dtype=bool)
        if len(left):
            square = attacks.square(
                classifier, x[left], y[left], e, params.square_queries, params.square_p_init, bs,
                seed=attack_runs.offset_seed(seed, *offsets, 2),
            )  # fmt: skip
            check_perturbation(x[left], square, e, f"{name}: square eps={e:g}")
            cells[("adaptive", "square")][e] = correct(square, left)
    noisy = sign_noise(x, headline, seed)
    check_perturbation(x, noisy, headline, f"{name}: random sign noise")
    result.random_noise = float(correct(noisy, everyone).mean())
    return result


def evaluate_defences(
    params: RobustnessParams,
    autoencoders: Mapping[str, nn.Module],
    cnn: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    oblivious: AdversarialSets,
    attack: AttackParams,
    *,
    seed: int,
    device: torch.device | str,
    nb_classes: int,
    log: Callable[[str], None] = lambda _msg: None,
) -> list[DefenceResult]:
    """`evaluate_defence` for every defence of params.defences (times to `log`)."""
    results = []
    for name in params.defences:
        start = time.perf_counter()
        defence = build_defence(name, params, autoencoders)
        results.append(
            evaluate_defence(
                name,
                defence,
                cnn,
                x,
                y,
                oblivious,
                attack,
                params,
                seed=seed,
                device=device,
                nb_classes=nb_classes,
            )  # fmt: skip
        )
        log(f"{name}: {time.perf_counter() - start:.1f} s")
    return results


def merge_results(parts: Sequence[DefenceResult]) -> DefenceResult:
    """One defence's result from its evaluations at disjoint eps, in the order of the eps grid."""
    first = parts[0]
    merged = DefenceResult(first.name, first.headline, first.clean, first.chance)
    merged.random_noise = first.random_noise
    for part in parts:
        if part.name != first.name or not np.array_equal(part.clean, first.clean):
            raise PipelineError(f"cannot merge results of {part.name} into {first.name}")
        for cell, by_eps in part.correct.items():
            merged.correct.setdefault(cell, {}).update(by_eps)
        if part.pgd_2x_steps is not None:
            merged.pgd_2x_steps = part.pgd_2x_steps
    return merged


@dataclass(frozen=True)
class InputPaths:
    """The stage's inputs on disk (its dvc.yaml deps): each worker process reads them itself."""

    data: Path
    classifier: Path
    autoencoders: tuple[tuple[str, Path], ...]  # (defence name, model directory)
    adversarial: Path


@dataclass(frozen=True)
class Inputs:
    """What the evaluation reads: the models, the test subset and its oblivious sets."""

    cnn: nn.Module
    autoencoders: Mapping[str, nn.Module]
    x: np.ndarray  # float32 in [0, 1]
    y: np.ndarray
    oblivious: AdversarialSets
    nb_classes: int


def load_inputs(paths: InputPaths, params: Params, device: torch.device) -> Inputs:
    """The CNN, the autoencoders the defences need (and `ae`, the detector's), and the seeded
    subset of the test split (robustness.max_images) with the attack stage's sets for it."""
    cfg = params.robustness
    splits = load_splits(paths.data)
    cnn = load_classifier(paths.classifier / MODEL_FILE, device, splits.image_size)
    x, y = to_float(splits.test.x).numpy(), splits.test.y
    oblivious = load_adversarial(paths.adversarial, x)
    check_oblivious_sets(oblivious, cfg, str(paths.adversarial))
    subset = evaluation_subset(y, cfg.max_images, params.seed, SUBSET_STREAM)
    autoencoders = {
        name: load_autoencoder(path / MODEL_FILE, device, splits.image_size)
        for name, path in paths.autoencoders
        if name in cfg.defences or name == "ae"
    }
    return Inputs(
        cnn, autoencoders, x[subset], y[subset], oblivious.take(subset), len(splits.classes)
    )


_WORKER: dict[str, Any] = {}  # a worker process's params, device and inputs


def _start_worker(paths: InputPaths, params: Params) -> None:
    from advdenoise import runtime

    device = runtime.setup(params.seed, params.threads, params.device)
    _WORKER.update(params=params, device=device, inputs=load_inputs(paths, params, device))


def _evaluate_cell(name: str, eps: float) -> tuple[DefenceResult, float]:
    params: Params = _WORKER["params"]
    inputs: Inputs = _WORKER["inputs"]
    start = time.perf_counter()
    result = evaluate_defence(
        name, build_defence(name, params.robustness, inputs.autoencoders), inputs.cnn, inputs.x,
        inputs.y, inputs.oblivious, params.attack, params.robustness, seed=params.seed,
        device=_WORKER["device"], nb_classes=inputs.nb_classes, eps_values=(eps,),
    )  # fmt: skip
    return result, time.perf_counter() - start


def evaluate_in_processes(
    paths: InputPaths, params: Params, log: Callable[[str], None] = lambda _msg: None
) -> list[DefenceResult]:
    """`evaluate_defences` in robustness.workers processes, one (defence, eps) cell per task.

    Why: ART's APGD and Square step in NumPy on the host and JPEG runs through PIL, one core's
    work however fast the device (bench/host_floor.py). Each cell is seeded by (seed, defence,
    eps, attack) alone, so the results equal the single-process ones (tests/test_robustness.py
    compares the bytes). Spawned, not forked: a forked child cannot use CUDA.
    """
    cfg = params.robustness
    # smallest eps first: there the attacks break the fewest images, so Square, the costliest,
    # runs on the most; the cheap cells at large eps fill the gaps at the end
    cells = [(name, e) for e in cfg.eps_grid for name in cfg.defences]
    pool = ProcessPoolExecutor(
        min(cfg.workers, len(cells)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(paths, params),
    )
    parts: dict[tuple[str, float], DefenceResult] = {}
    try:
        futures = [pool.submit(_evaluate_cell, *cell) for cell in cells]
        for cell, future in zip(cells, futures, strict=True):
            parts[cell], seconds = future.result()
            log(f"{cell[0]} eps={cell[1]:g}: {seconds:.1f} s")
    finally:
        pool.shutdown(cancel_futures=True)
    return [merge_results([parts[(name, e)] for e in cfg.eps_grid]) for name in cfg.defences]


def checks(result: DefenceResult) -> dict[str, bool]:
    """Carlini et al. 2019 sanity checks of one defence's evaluation (True = passed).

    Orderings ("a <= b") tolerate one image, as the attack stage's checks do (a random start can
    flip a single borderline image); convergence allows CONVERGENCE_TOLERANCE.
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
    out["random_noise_floor"] = result.random_noise + tol >= max(
        acc("adaptive", m, h) for m in attack_runs.WHITE_BOX
    )
    out["adaptive_le_oblivious"] = pgd_h <= acc("oblivious", "pgd", h) + tol
    out["black_box_finds_nothing_new"] = all(square_breaks(result, e) <= tol for e in eps_values)
    return out


def square_breaks(result: DefenceResult, eps: float) -> float:
    """Fraction of images every gradient-based attack left correct that Square then broke."""
    square = result.correct[("adaptive", "square")][eps]
    return float((result.gradient_survivors(eps) & ~square).mean())


def eps_label(eps: float) -> str:
    """The eps part of a per-eps metric key, e.g. `eps_0.004`."""
    return f"eps_{eps:g}"


def robustness_metrics(results: Sequence[DefenceResult]) -> dict[str, float | bool]:
    """Flat metrics: the headline eps per defence, every eps of the grid, and every check.

    Keys at the headline: `<d>.clean_accuracy`, `<d>.<threat>.<method>.accuracy`,
    `<d>.<view>.worst.accuracy` / `<d>.worst.accuracy`; per eps: `<d>.eps_<e>.<...>.accuracy`.
    """
    out: dict[str, float | bool] = {}
    if results:
        out["eps"] = float(results[0].headline)
        out["test_images"] = results[0].n_images
        out["chance"] = results[0].chance
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
                out[f"{r.name}.{prefix}adaptive.square_breaks"] = square_breaks(r, e)
        if r.pgd_2x_steps is not None:
            out[f"{r.name}.adaptive.pgd_2x_steps.accuracy"] = float(r.pgd_2x_steps.mean())
        out[f"{r.name}.random_noise.accuracy"] = r.random_noise
        for check, passed in checks(r).items():
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


# --------------------------------------------------------------------------- detector


def reconstruction_errors(
    autoencoder: nn.Module, x: np.ndarray, batch_size: int, device: torch.device | str
) -> np.ndarray:
    """Per-image mean squared error between AE(x) and x (the MagNet-style detector's score)."""
    autoencoder.eval()

    def err(batch: torch.Tensor) -> torch.Tensor:
        return (autoencoder(batch) - batch).pow(2).flatten(1).mean(1)

    return batched_apply(err, torch.from_numpy(np.ascontiguousarray(x)), batch_size, device).numpy()


def _detection(
    clean_err: np.ndarray, adv_err: np.ndarray, fooled: np.ndarray, threshold: float
) -> dict[str, float]:
    flagged = adv_err > threshold
    scores = np.concatenate([clean_err, adv_err])
    labels = np.concatenate([np.zeros(len(clean_err)), np.ones(len(adv_err))])
    return {
        "auroc": metrics.roc_auc(labels, scores),
        f"tpr_at_{round(100 * DETECTOR_FPR)}fpr": float(flagged.mean()),
        "attack_success": float(fooled.mean()),
        "evasion_rate": float((fooled & ~flagged).mean()),  # fooled the CNN and not flagged
    }


def evaluate_detector(
    autoencoder: nn.Module,
    cnn: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    oblivious: AdversarialSets,
    attack: AttackParams,
    params: RobustnessParams,
    *,
    seed: int,
    device: torch.device | str,
) -> dict[str, float]:
    """The reconstruction-error detector (threshold at DETECTOR_FPR of clean images) under the
    oblivious PGD of the attack stage and under a detector-aware PGD, at params.detector_eps.

    Both on the images the CNN classifies correctly; evasion_rate = fraction that fool the CNN
    and stay under the threshold (what a detector-guarded CNN lets through).
    """
    bs, eps = attack.batch_size, params.detector_eps
    rows = np.flatnonzero(predict_labels(cnn, x, bs, device) == y)
    if len(rows) < 2:
        raise PipelineError("detector evaluation needs at least two correctly classified images")
    xa, ya = x[rows], y[rows]
    clean_err = reconstruction_errors(autoencoder, xa, bs, device)
    threshold = float(np.quantile(clean_err, 1 - DETECTOR_FPR))
    obl = oblivious.get("pgd", eps)[rows]
    ada = attacks.detector_aware_pgd(
        autoencoder, cnn, threshold, xa, ya, eps, attack, params.detector_steps,
        params.detector_lambda, device=device, seed=attack_runs.offset_seed(seed, 8, _eps_key(eps)),
    )  # fmt: skip
    out: dict[str, float] = {"detector.eps": float(eps), "detector.threshold": threshold}
    for threat, adv in (("oblivious", obl), ("adaptive", ada)):
        fooled = predict_labels(cnn, adv, bs, device) != ya
        stats = _detection(
            clean_err, reconstruction_errors(autoencoder, adv, bs, device), fooled, threshold
        )
        out.update({f"detector.{threat}.{k}": v for k, v in stats.items()})
    return out
