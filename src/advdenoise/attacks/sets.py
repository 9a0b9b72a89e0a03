"""Adversarial test sets on disk: the contract between `attack` and the stages that consume it.

`data/attack/adversarial.npz` holds `eps` (float64, E) and, per attack method, a float32 array
(E, N, 1, H, W) of adversarial versions of the prepared test split, in test-split order. float32 is
exactly what the attack produced, so reloading cannot change a prediction. Every set is checked
against its L-inf bound and the [0, 1] range when it is written and again when it is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advdenoise.core.errors import PipelineError
from advdenoise.core.io import read_npz, write_npz

ADVERSARIAL_FILE = "adversarial.npz"
BOUND_TOLERANCE = 1e-6


def check_perturbation(
    clean: np.ndarray, adv: np.ndarray, eps: float, what: str, norm: float = np.inf
) -> None:
    """Fail loudly unless `adv` stays within `eps` of `clean` (L-inf, or per image L2 with
    `norm=2`) and inside [0, 1]."""
    if adv.shape != clean.shape:
        raise PipelineError(
            f"{what}: shape {adv.shape} does not match the clean images {clean.shape}"
        )
    if adv.size == 0:
        raise PipelineError(f"{what}: empty adversarial set")
    if not np.isfinite(adv).all():
        raise PipelineError(f"{what}: contains NaN or infinite values")
    low, high = float(adv.min()), float(adv.max())
    if low < 0.0 or high > 1.0:
        raise PipelineError(f"{what}: values outside [0, 1] (min {low:.6g}, max {high:.6g})")
    delta = (adv - clean).reshape(len(adv), -1)
    size = float(np.linalg.norm(delta, ord=norm, axis=1).max())
    if size > eps + BOUND_TOLERANCE:
        name = "L-inf" if norm == np.inf else f"L{norm:g}"
        raise PipelineError(f"{what}: {name} perturbation {size:.6g} exceeds eps {eps:g}")


@dataclass(frozen=True)
class AdversarialSets:
    eps: tuple[float, ...]
    images: Mapping[str, np.ndarray]  # method -> float32 (E, N, 1, H, W)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.images)

    def get(self, method: str, eps: float) -> np.ndarray:
        """The adversarial test set of `method` at bound `eps` (N, 1, H, W)."""
        if method not in self.images:
            raise PipelineError(
                f"no adversarial set for method {method!r}; have {list(self.images)}"
            )
        matches = [i for i, e in enumerate(self.eps) if abs(e - eps) < 1e-12]
        if not matches:
            raise PipelineError(f"no adversarial set at eps={eps:g}; have {list(self.eps)}")
        return self.images[method][matches[0]]

    def take(self, index: np.ndarray) -> AdversarialSets:
        """The same sets for the test images `index` only."""
        return AdversarialSets(self.eps, {m: a[:, index] for m, a in self.images.items()})


def _check_all(sets: AdversarialSets, clean: np.ndarray, where: str) -> None:
    for method, stack in sets.images.items():
        if stack.shape[0] != len(sets.eps):
            raise PipelineError(
                f"{where}: {method} has {stack.shape[0]} sets for {len(sets.eps)} eps"
            )
        for eps, adv in zip(sets.eps, stack, strict=True):
            check_perturbation(clean, adv, eps, f"{where}: {method} eps={eps:g}")


def save_adversarial(
    directory: str | Path,
    eps: tuple[float, ...],
    images: Mapping[str, np.ndarray],
    clean: np.ndarray,
) -> None:
    """Verify every set against `clean` (float in [0, 1]), then write them atomically."""
    sets = AdversarialSets(tuple(float(e) for e in eps), dict(images))
    path = Path(directory) / ADVERSARIAL_FILE
    _check_all(sets, clean, str(path))
    arrays = {"eps": np.asarray(sets.eps, dtype=np.float64)}
    arrays.update({m: np.asarray(a, dtype=np.float32) for m, a in sets.images.items()})
    write_npz(path, arrays)


def load_adversarial(directory: str | Path, clean: np.ndarray) -> AdversarialSets:
    """Load the adversarial sets and re-verify them against the clean test images they perturb."""
    path = Path(directory) / ADVERSARIAL_FILE
    arrays = read_npz(path, ("eps",))
    eps = tuple(float(e) for e in arrays.pop("eps"))
    if not arrays:
        raise PipelineError(f"{path}: contains no adversarial sets")
    sets = AdversarialSets(eps, arrays)
    _check_all(sets, clean, str(path))
    return sets
