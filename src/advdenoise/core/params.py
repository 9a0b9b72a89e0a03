"""The schema of params.yaml: one frozen dataclass per section, and `Params`, all of them.

params.yaml is the one source of every value: the classes have no defaults, and a missing key is an
error (see `config.build`). Every stage loads params.yaml through `load_params` once; unknown keys,
wrong types and values out of range raise `ParamsError` naming the key
(`attack.eps must be in [0, 1], got 1.5`). The sections are defined in `params_training` and
`params_evaluation`; a name in a section that lists plug-ins (robustness.defences, attack.methods,
certify.models) must be in its registry (`config.registered`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from advdenoise.core.config import build, check, check_range, read_yaml
from advdenoise.core.errors import ParamsError
from advdenoise.core.params_evaluation import (
    AttackParams,
    CertifyParams,
    DenoiseParams,
    EmbedParams,
    RobustnessParams,
)
from advdenoise.core.params_training import (
    DataParams,
    OptimParams,
    TrainAeAdvParams,
    TrainAeGaussParams,
    TrainAeGuidedParams,
    TrainAeParams,
    TrainCnnParams,
)

__all__ = [
    "AttackParams",
    "CertifyParams",
    "DataParams",
    "DenoiseParams",
    "EmbedParams",
    "OptimParams",
    "Params",
    "RobustnessParams",
    "TrainAeAdvParams",
    "TrainAeGaussParams",
    "TrainAeGuidedParams",
    "TrainAeParams",
    "TrainCnnParams",
    "load_params",
    "parse_params",
    "read_yaml",
]


@dataclass(frozen=True)
class Params:
    """All of params.yaml. Cross-section constraints are checked here."""

    seed: int
    device: Literal["auto", "cpu", "cuda"]
    threads: int  # torch intra-op threads on CPU; fixed so that runs are reproducible
    data: DataParams
    train_cnn: TrainCnnParams
    train_ae: TrainAeParams
    attack: AttackParams
    denoise: DenoiseParams
    embed: EmbedParams
    train_ae_adv: TrainAeAdvParams
    train_ae_guided: TrainAeGuidedParams
    robustness: RobustnessParams
    train_ae_gauss: TrainAeGaussParams
    certify: CertifyParams

    def __post_init__(self) -> None:
        check(0 <= self.seed < 2**32, "seed", "must be in [0, 2**32)", self.seed)
        check_range("threads", self.threads, 1, 256)
        size = self.data.image_size
        cnn_min = 2 ** (len(self.train_cnn.paper.channels) + 1)
        check(
            size >= cnn_min,
            "data.image_size",
            f"must be >= {cnn_min} for train_cnn.paper.channels of length "
            f"{len(self.train_cnn.paper.channels)}",
            size,
        )
        depth = len(self.train_ae.channels)
        check(
            size % 2**depth == 0,
            "data.image_size",
            f"must be divisible by {2**depth} (2**len(train_ae.channels)) for the autoencoders",
            size,
        )
        off_grid = [e for e in self.robustness.eps_grid if e not in self.attack.eps_grid]
        check(
            not off_grid,
            "robustness.eps_grid",
            f"must lie within attack.eps_grid {list(self.attack.eps_grid)} (the oblivious attacks"
            f" come from the attack stage); not there: {off_grid}",
            list(self.robustness.eps_grid),
        )


def parse_params(raw: Any) -> Params:
    """Build validated params from an already-parsed YAML mapping."""
    return build(Params, raw if raw is not None else {})


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; every problem raises `ParamsError` naming the key."""
    path = Path(path)
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ParamsError(f"params file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from exc
    return parse_params(raw)
