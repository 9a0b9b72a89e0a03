"""Evaluating one defence: every attack at every eps, per image, into a `DefenceResult`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn

from advdenoise import attacks
from advdenoise.attacks import runs as attack_runs
from advdenoise.attacks import specs as attack_specs
from advdenoise.attacks.sets import AdversarialSets, check_perturbation
from advdenoise.core.errors import PipelineError
from advdenoise.core.params import AttackParams, RobustnessParams
from advdenoise.core.seeding import eps_key, named_rng, named_seed
from advdenoise.data.splits import evaluation_subset
from advdenoise.defences.registry import build_defence, defended_classifier
from advdenoise.models.inference import predict_labels

THREATS = ("oblivious", "adaptive")
METHODS = {"oblivious": attack_specs.METHODS, "adaptive": attack_specs.WHITE_BOX}
VIEWS = (*THREATS, "worst")  # the worst case within each threat model, and over both
SUBSET_STREAM = "robustness.subset"  # data.evaluation_subset stream of this stage
SQUARE_STREAM = "robustness.square_subset"  # the same, of the standalone Square's images
L2_STREAM = "robustness.l2_subset"  # the same, of the L2 APGD's images


def sign_noise(x: np.ndarray, eps: float, seed: int) -> np.ndarray:
    """x + eps * uniform random signs, clipped to [0, 1]: the random floor of the same L-inf size."""
    rng = named_rng(seed, "robustness.sign_noise")
    signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=x.shape)
    return np.clip(x + np.float32(eps) * signs, 0.0, 1.0).astype(np.float32)


def check_oblivious_sets(oblivious: AdversarialSets, params: RobustnessParams, where: str) -> None:
    """The attack stage must have crafted FGSM and PGD sets at every eps evaluated here."""
    wanted = [*params.eps_grid, params.detector_eps]
    missing = [e for e in wanted if not any(abs(e - o) < 1e-12 for o in oblivious.eps)]
    if missing or not set(attack_specs.METHODS) <= set(oblivious.methods):
        raise PipelineError(
            f"{where}: needs fgsm and pgd sets at every eps of robustness.eps_grid"
            f" {list(params.eps_grid)} and at robustness.detector_eps {params.detector_eps:g};"
            f" it has {list(oblivious.methods)} at {list(oblivious.eps)} (add the missing eps"
            f" {missing} to attack.eps_grid and attack.methods)"
        )


@dataclass
class DefenceResult:
    """Per-image correctness of one defence: clean, and correct[(threat, method)][eps] for the
    gradient-based attacks; at the headline, PGD with 2x steps, APGD's extra restarts and the
    standalone Square on its subset."""

    name: str
    headline: float
    clean: np.ndarray  # bool per image
    chance: float = 0.5  # majority-class rate of the labels: a constant classifier's accuracy
    correct: dict[tuple[str, str], dict[float, np.ndarray]] = field(default_factory=dict)
    pgd_2x_steps: np.ndarray | None = None  # bool per image, PGD with 2x steps at the headline
    # bool per image: survived APGD's extra restarts (run on the gradient survivors, others False)
    apgd_more_restarts: np.ndarray | None = None
    square_subset: np.ndarray | None = None  # bool per image: the standalone Square's images
    square: np.ndarray | None = None  # bool per image: correct under Square (False off the subset)
    random_noise: float = float("nan")
    l2_subset: np.ndarray | None = None  # bool per image: the L2 APGD's images
    # radius -> bool per image: correct under L2 APGD within every radius up to it (off the subset
    # False); radius 0 is the clean prediction
    l2: dict[float, np.ndarray] = field(default_factory=dict)
    pixels: int = 0  # per image: the L-inf ball of eps lies in the L2 ball of eps * sqrt(pixels)

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

    def _alive(self, eps: float, cells: Iterable[tuple[str, str]], extra: bool) -> np.ndarray:
        """Images correct clean and under every attack cell in `cells` (and, at the headline if
        `extra`, under PGD-2x and APGD's extra restarts)."""
        alive = self.clean.copy()
        for cell in cells:
            alive &= self.correct[cell][eps]
        if extra and eps == self.headline:
            for more in (self.pgd_2x_steps, self.apgd_more_restarts):
                if more is not None:
                    alive &= more
        return alive

    def survivors(self, view: str, eps: float, extra: bool = True) -> np.ndarray:
        """Images correct under every gradient-based attack of `view` (a threat, or "worst": all
        of them); `extra=False` leaves out the headline's PGD-2x and APGD restarts."""
        cells = [c for c in self.correct if view in (c[0], "worst")]
        return self._alive(eps, cells, extra=extra and view != "oblivious")

    def worst(self, view: str, eps: float) -> float:
        return float(self.survivors(view, eps).mean())

    def square_outcome(self) -> tuple[np.ndarray, np.ndarray]:
        """(subset, correct under Square) per image; an error if the standalone Square did not run."""
        if self.square is None or self.square_subset is None:
            raise PipelineError(f"{self.name}: the standalone Square did not run")
        return self.square_subset, self.square

    def square_accuracy(self) -> float:
        """Accuracy under the standalone Square on its subset (clean errors count as errors)."""
        subset, square = self.square_outcome()
        return float(square[subset].mean())

    def gradient_worst_on_square_subset(self) -> float:
        """The gradient worst case at the headline, on the standalone Square's images."""
        subset, _ = self.square_outcome()
        return float(self.survivors("worst", self.headline)[subset].mean())

    def l2_accuracy(self, radius: float) -> float:
        """Accuracy under L2 APGD within `radius` on its subset (clean errors count as errors)."""
        if self.l2_subset is None:
            raise PipelineError(f"{self.name}: the L2 APGD did not run")
        return float(self.l2[radius][self.l2_subset].mean())

    def linf_inside_l2(self, radius: float) -> list[float]:
        """The eps whose L-inf ball lies inside the L2 ball of `radius` (eps * sqrt(pixels) <= r):
        whatever the L-inf attacks break there, an L2 attack within `radius` may break too."""
        return [e for e in self.eps_values if e * np.sqrt(self.pixels) <= radius + 1e-12]

    def robust_accuracy(self) -> float:
        """AutoAttack's robust accuracy on the Square subset: an image counts only if it survives
        every attack at the headline, gradient-based and gradient-free."""
        subset, square = self.square_outcome()
        return float((self.survivors("worst", self.headline) & square)[subset].mean())


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
    l2_radii: Sequence[float] = (),
) -> DefenceResult:
    """Every attack of METHODS on `Sequential(defence, cnn)` at every eps of params.eps_grid (or
    of `eps_values`: a cell of `evaluate_in_processes`; `merge_results` joins them).

    For `none` the oblivious and adaptive FGSM/PGD coincide, so those reuse the attack stage's sets
    (same params and ART code). At the headline PGD runs on to 2x steps and APGD restarts more
    (the checks that they converged), the standalone Square attacks its subset and L2 APGD its
    own at every radius of `l2_radii` (certify.radii: the certified threat model).
    """
    eps_values = params.eps_grid if eps_values is None else eps_values
    model = defended_classifier(defence, cnn)
    bs, headline = attack.batch_size, params.eps

    def correct(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = np.zeros(len(y), dtype=bool)
        if len(rows):
            out[rows] = predict_labels(model, images, bs, device) == y[rows]
        return out

    everyone = np.arange(len(y))
    clean = correct(x, everyone)
    result = DefenceResult(name, headline, clean, float(np.bincount(y).max() / len(y)))
    result.pixels = int(x[0].size)
    classifier = attacks.make_art_classifier(model, x.shape[1:], nb_classes, device)
    rows = np.flatnonzero(clean)  # attacks need only the images classified correctly
    xa, ya = x[rows], y[rows]
    for spec in attack_specs.ATTACKS:
        if spec.oblivious:
            result.correct[("oblivious", spec.name)] = {
                e: correct(oblivious.get(spec.name, e), everyone) for e in eps_values
            }
        result.correct[("adaptive", spec.name)] = {}
    for e in eps_values:
        cell = (name, eps_key(e))  # each defence's and eps's own random streams
        for spec in attack_specs.ATTACKS:
            cells = result.correct[("adaptive", spec.name)]
            if len(rows) == 0:  # nothing classified correctly: nothing to attack
                cells[e] = np.zeros(len(y), dtype=bool)
                continue
            reuse = name == "none" and spec.oblivious  # the attack stage's sets: same code
            double = spec.doubles and e == headline  # the convergence check
            if reuse:
                cells[e] = result.correct[("oblivious", spec.name)][e]
                if not double:
                    continue
            advs = attack_runs.run_attacks(
                classifier, spec.name, xa, ya, e, attack, robustness=params, double=double,
                seed=None if spec.stream is None else named_seed(seed, spec.stream, *cell),
            )  # fmt: skip
            if not reuse:
                cells[e] = correct(advs[0], rows)
            if double:
                result.pgd_2x_steps = correct(advs[-1], rows)
    if headline in eps_values:
        cell = (name, eps_key(headline))
        _headline_extras(result, classifier, x, y, params, bs, correct, seed, cell)
        _l2_attacks(result, classifier, x, y, l2_radii, params, bs, correct, seed)
    noisy = sign_noise(x, headline, seed)
    check_perturbation(x, noisy, headline, f"{name}: random sign noise")
    result.random_noise = float(correct(noisy, everyone).mean())
    return result


def _headline_extras(
    result: DefenceResult,
    classifier: attacks.PyTorchClassifier,
    x: np.ndarray,
    y: np.ndarray,
    params: RobustnessParams,
    batch_size: int,
    correct: Callable[[np.ndarray, np.ndarray], np.ndarray],
    seed: int,
    cell: tuple[str, int],
) -> None:
    """At the headline eps: APGD's extra restarts on the images every gradient-based attack left
    correct, and Square on every clean-correct image of its seeded subset, on its own (not only
    on the gradient survivors, as in AutoAttack's cascade: so its accuracy can be set against the
    gradient attacks' worst case, the test for gradient masking)."""
    e = result.headline
    more_restarts = partial(
        attacks.apgd, classifier, eps=e, steps=params.apgd_steps,
        restarts=params.apgd_check_restarts, batch_size=batch_size,
        seed=named_seed(seed, "robustness.apgd_restarts", *cell),
    )  # fmt: skip
    left = np.flatnonzero(result.survivors("worst", e))
    result.apgd_more_restarts = _correct_after(
        more_restarts, x, y, left, e, f"{result.name}: apgd restarts eps={e:g}", correct
    )
    result.square_subset = subset = _subset_mask(y, params.square_images, seed, SQUARE_STREAM)
    square = partial(
        attacks.square, classifier, eps=e, queries=params.square_queries,
        p_init=params.square_p_init, batch_size=batch_size,
        seed=named_seed(seed, "robustness.square", *cell),
    )  # fmt: skip
    rows = np.flatnonzero(subset & result.clean)
    result.square = _correct_after(
        square, x, y, rows, e, f"{result.name}: square eps={e:g}", correct
    )


def _l2_attacks(
    result: DefenceResult,
    classifier: attacks.PyTorchClassifier,
    x: np.ndarray,
    y: np.ndarray,
    radii: Sequence[float],
    params: RobustnessParams,
    batch_size: int,
    correct: Callable[[np.ndarray, np.ndarray], np.ndarray],
    seed: int,
) -> None:
    """L2 APGD-CE end to end at each radius, smallest first, on the images of its seeded subset
    still correct: an image broken within a smaller ball is broken within every larger one (the
    cascade AutoAttack runs over attacks, here over radii)."""
    result.l2_subset = subset = _subset_mask(y, params.l2_images, seed, L2_STREAM)
    alive = subset & result.clean
    for r in sorted(radii):
        if r > 0:
            attack = partial(
                attacks.apgd_l2, classifier, radius=r, steps=params.l2_steps,
                restarts=params.apgd_restarts, batch_size=batch_size,
                seed=named_seed(seed, "robustness.apgd_l2", result.name, eps_key(r)),
            )  # fmt: skip
            what = f"{result.name}: apgd_l2 radius={r:g}"
            alive = _correct_after(attack, x, y, np.flatnonzero(alive), r, what, correct, norm=2)
        result.l2[float(r)] = alive


def _subset_mask(y: np.ndarray, images: int, seed: int, stream: str) -> np.ndarray:
    """`evaluation_subset` of the evaluated images as a bool per image."""
    mask = np.zeros(len(y), dtype=bool)
    mask[evaluation_subset(y, images, seed, stream)] = True
    return mask


def _correct_after(
    attack: Callable[[np.ndarray, np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray,
    eps: float,
    what: str,
    correct: Callable[[np.ndarray, np.ndarray], np.ndarray],
    norm: float = np.inf,
) -> np.ndarray:
    """Per image, whether it is still classified correctly after `attack` on x[rows] (its output
    bound-checked at eps in `norm`); False off `rows`, and everywhere when `rows` is empty."""
    if len(rows) == 0:
        return np.zeros(len(y), dtype=bool)
    adv = attack(x[rows], y[rows])
    check_perturbation(x[rows], adv, eps, what, norm)
    return correct(adv, rows)


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
    l2_radii: Sequence[float] = (),
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
                l2_radii=l2_radii,
            )  # fmt: skip
        )
        log(f"{name}: {time.perf_counter() - start:.1f} s")
    return results


def merge_results(parts: Sequence[DefenceResult]) -> DefenceResult:
    """One defence's result from its evaluations at disjoint eps, in the order of the eps grid."""
    first = parts[0]
    merged = DefenceResult(first.name, first.headline, first.clean, first.chance)
    merged.random_noise, merged.pixels = first.random_noise, first.pixels
    for part in parts:
        if part.name != first.name or not np.array_equal(part.clean, first.clean):
            raise PipelineError(f"cannot merge results of {part.name} into {first.name}")
        for cell, by_eps in part.correct.items():
            merged.correct.setdefault(cell, {}).update(by_eps)
        for extra in ("pgd_2x_steps", "apgd_more_restarts", "square_subset", "square", "l2_subset"):
            if getattr(part, extra) is not None:
                setattr(merged, extra, getattr(part, extra))
        merged.l2.update(part.l2)
    return merged
