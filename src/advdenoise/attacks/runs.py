"""Attacks by name, seeded per cell: what the stages call (the ART attacks themselves are in `attacks`).

- the attack stage's FGSM/PGD grid (`attack`, `attack_grid`): each (method, eps) cell seeds its
  random start from the stream ("attack", method, eps) (`cell_seed`), whatever ran before;
- the runs of the robustness and training stages (`run_attacks`): FGSM, or PGD with its iterates
  at several step counts (the convergence check), from the seed of the caller's named stream,
  every result bound-checked.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence

import numpy as np

from advdenoise.attacks import PyTorchClassifier, fgsm, pgd, pgd_checkpoints
from advdenoise.attacks.sets import check_perturbation
from advdenoise.core.errors import PipelineError
from advdenoise.core.params import AttackName, AttackParams
from advdenoise.core.seeding import eps_key, named_seed

METHODS: tuple[str, ...] = typing.get_args(AttackName)  # the attack stage's (its oblivious sets)
WHITE_BOX = (*METHODS, "apgd")  # gradient-based attacks of the robustness stage (Square: its own)


def cell_seed(seed: int, method: str, eps: float) -> int:
    """A 32-bit seed for one (method, eps) attack cell, independent of the order cells run in."""
    return named_seed(seed, "attack", method, eps_key(eps))


def attack(
    classifier: PyTorchClassifier,
    method: str,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    params: AttackParams,
    *,
    seed: int | None = None,
) -> np.ndarray:
    """Run `method` ("fgsm" or "pgd") with the settings in `params`; `seed` fixes PGD's start."""
    if method == "fgsm":  # deterministic: no random start
        return fgsm(classifier, x, y, eps, params.batch_size)
    if method == "pgd":
        return pgd(
            classifier,
            x,
            y,
            eps,
            params.pgd_steps,
            params.pgd_step_fraction,
            params.pgd_random_init,
            params.batch_size,
            seed=None if seed is None else cell_seed(seed, method, eps),
        )
    raise PipelineError(f"unknown attack method {method!r}; known: {list(METHODS)}")


def attack_grid(
    classifier: PyTorchClassifier,
    methods: Sequence[str],
    eps_values: Sequence[float],
    x: np.ndarray,
    y: np.ndarray,
    params: AttackParams,
    seed: int,
) -> dict[str, np.ndarray]:
    """Every method at every eps: method -> float32 (E, N, C, H, W), in `eps_values` order."""
    out: dict[str, np.ndarray] = {}
    for method in methods:
        stack = np.empty((len(eps_values), *x.shape), dtype=np.float32)
        for i, eps in enumerate(eps_values):
            stack[i] = attack(classifier, method, x, y, eps, params, seed=seed)
        out[method] = stack
    return out


def run_attacks(
    classifier: PyTorchClassifier,
    method: str,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    attack: AttackParams,
    *,
    checkpoints: Sequence[int] = (),
    seed: int = 0,
) -> list[np.ndarray]:
    """FGSM, or PGD with its iterates at `checkpoints` steps (default attack.pgd_steps).

    `seed` (the cell's, from the caller's named stream) fixes PGD's random start; every result
    is bound-checked.
    """
    if method == "fgsm":
        advs = [fgsm(classifier, x, y, eps, attack.batch_size)]
    elif method == "pgd":
        advs = pgd_checkpoints(
            classifier,
            x,
            y,
            eps,
            tuple(checkpoints) or (attack.pgd_steps,),
            attack.pgd_step_fraction,
            attack.pgd_random_init,
            attack.batch_size,
            seed=seed,
        )
    else:
        raise PipelineError(f"unknown attack method {method!r}; known: {list(METHODS)}")
    for adv in advs:
        check_perturbation(x, adv, eps, f"{method} eps={eps:g}")
    return advs
