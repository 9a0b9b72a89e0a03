"""The built-in attacks' runners and the calls the stages make: attacks by name, seeded per cell.

The registry is `specs.ATTACKS`; its entries name the runners below ("advdenoise.attacks.runs:
run_fgsm"), each a function of one `AttackCall`.

- the attack stage's FGSM/PGD grid (`attack`, `attack_grid`): each (method, eps) cell seeds its
  random start from the stream ("attack", method, eps) (`cell_seed`), whatever ran before;
- every other run (`run_attacks`): from the seed of the caller's named stream, every result
  bound-checked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from advdenoise.attacks import PyTorchClassifier, apgd, fgsm, pgd_checkpoints
from advdenoise.attacks.sets import check_perturbation
from advdenoise.attacks.specs import AttackCall, attack_spec
from advdenoise.core.errors import PipelineError
from advdenoise.core.params import AttackParams, RobustnessParams
from advdenoise.core.seeding import eps_key, named_seed


def run_fgsm(c: AttackCall) -> list[np.ndarray]:
    return [fgsm(c.classifier, c.x, c.y, c.eps, c.attack.batch_size)]


def run_pgd(c: AttackCall) -> list[np.ndarray]:
    steps = c.attack.pgd_steps
    return pgd_checkpoints(
        c.classifier, c.x, c.y, c.eps, (steps, 2 * steps) if c.double else (steps,),
        c.attack.pgd_step_fraction, c.attack.pgd_random_init, c.attack.batch_size, seed=c.seed,
    )  # fmt: skip


def run_apgd(c: AttackCall) -> list[np.ndarray]:
    if c.robustness is None:
        raise PipelineError("apgd takes its steps and restarts from the robustness params")
    r = c.robustness
    return [
        apgd(c.classifier, c.x, c.y, c.eps, r.apgd_steps, r.apgd_restarts, c.attack.batch_size,
             seed=c.seed)
    ]  # fmt: skip


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
    """Run `method` with the settings in `params`; `seed` fixes a random start (`cell_seed`)."""
    cell = None if seed is None else cell_seed(seed, method, eps)
    return run_attacks(classifier, method, x, y, eps, params, seed=cell)[0]


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
    robustness: RobustnessParams | None = None,
    double: bool = False,
    seed: int | None = 0,
) -> list[np.ndarray]:
    """`method`'s images (and, with `double`, those after twice its steps), each bound-checked.

    `seed` (the cell's, from the caller's named stream) fixes a random start.
    """
    spec = attack_spec(method)
    if double and not spec.doubles:
        raise PipelineError(f"{method} has no steps to double")
    advs = spec.run(AttackCall(classifier, x, y, eps, attack, robustness, seed, double))
    for adv in advs:
        check_perturbation(x, adv, eps, f"{method} eps={eps:g}")
    return advs
