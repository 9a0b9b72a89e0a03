"""The attack registry: what one run of an attack gets (`AttackCall`) and one spec per attack.

Params validation (attack.methods), the robustness evaluation, its figures and the report read
`ATTACKS`; nothing else names an attack. A spec is data, as a defence's is: its runner is named
"module:function" and imported only when the attack runs, so validating params.yaml or writing the
report imports no torch. The recipe for a new attack is in docs/extending.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from advdenoise.core.errors import PipelineError

if TYPE_CHECKING:
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
    """A gradient-based L-inf attack: `runner` ("module:function") maps an `AttackCall` to its
    adversarial images (and, when asked to double, those after twice the steps). `label` names it
    in tables and figures. `stream` names the robustness stage's random stream of its start (None:
    deterministic). `oblivious`: one of attack.methods, crafted on the bare CNN by the attack
    stage."""

    name: str
    label: str
    runner: str
    stream: str | None
    oblivious: bool = False
    doubles: bool = False

    def run(self, call: AttackCall) -> list[np.ndarray]:
        module, _, function = self.runner.partition(":")
        run: Any = getattr(importlib.import_module(module), function)
        return list(run(call))


ATTACKS: tuple[AttackSpec, ...] = (
    AttackSpec("fgsm", "FGSM", "advdenoise.attacks.runs:run_fgsm", None, oblivious=True),
    AttackSpec(
        "pgd",
        "PGD",
        "advdenoise.attacks.runs:run_pgd",
        "robustness.pgd",
        oblivious=True,
        doubles=True,
    ),  # fmt: skip
    AttackSpec("apgd", "APGD-CE", "advdenoise.attacks.runs:run_apgd", "robustness.apgd"),
)

METHODS: tuple[str, ...] = tuple(s.name for s in ATTACKS if s.oblivious)  # attack.methods
WHITE_BOX: tuple[str, ...] = tuple(s.name for s in ATTACKS)  # the robustness stage's (and Square)


def attack_spec(method: str) -> AttackSpec:
    """The spec of `method`; an unknown name is an error that lists the known ones."""
    for spec in ATTACKS:
        if spec.name == method:
            return spec
    raise PipelineError(f"unknown attack method {method!r}; known: {list(WHITE_BOX)}")


def label(method: str) -> str:
    """How tables and figures name `method` (its own name when it is not registered)."""
    return next((s.label for s in ATTACKS if s.name == method), method)
