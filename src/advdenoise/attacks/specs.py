"""What an attack is: the arguments of one run (`AttackCall`) and its registry entry (`AttackSpec`).

The registry itself is `runs.ATTACKS`; a plug-in's module imports these types from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from art.estimators.classification import PyTorchClassifier

from advdenoise.core.params import AttackParams, RobustnessParams


@dataclass(frozen=True)
class AttackCall:
    """One run of an attack: its images, budget, settings and seed (None: no random start).

    `double` (only for a spec that `doubles`) asks also for the images after twice the steps:
    the convergence check."""

    classifier: PyTorchClassifier
    x: np.ndarray
    y: np.ndarray
    eps: float
    attack: AttackParams
    robustness: RobustnessParams | None
    seed: int | None
    double: bool


@dataclass(frozen=True)
class AttackSpec:
    """A gradient-based L-inf attack: `run` maps an `AttackCall` to its adversarial images (and,
    when asked to double, those after twice the steps). `stream` names the robustness stage's
    random stream of its start (None: deterministic). `oblivious`: one of attack.methods, crafted
    on the bare CNN by the attack stage."""

    name: str
    run: Callable[[AttackCall], list[np.ndarray]]
    stream: str | None
    oblivious: bool = False
    doubles: bool = False
