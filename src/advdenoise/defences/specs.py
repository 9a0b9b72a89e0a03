"""The defence registry: one spec per defence, in the order tables and figures show them.

Params validation, the robustness evaluation, the verdicts, the report and the seeds summary read
`SPECS`; nothing else names a defence. A spec is data: its builder is named "module:function" and
imported only when the defence is built, so validating params.yaml imports no torch. A defence's
name is also its metric prefix and the key of its random streams, so adding one leaves the draws of
every other defence as they were. The recipe for a new one is in docs/extending.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from advdenoise.core.errors import PipelineError

if TYPE_CHECKING:
    from torch import nn

    from advdenoise.core.params import RobustnessParams


@dataclass(frozen=True)
class DefenceSpec:
    """A defence: a module mapping [0, 1] images N x 1 x H x W to [0, 1] images.

    `builder` ("module:function") is called with one keyword per entry of `params` (builder
    argument -> robustness key). A trained defence has no builder: its module is the autoencoder
    its own stage (`section`) trained, loaded by the robustness stage.
    """

    name: str
    builder: str | None
    params: Mapping[str, str] = field(default_factory=dict)
    section: str = "robustness"  # the params section its settings live in

    @property
    def trained(self) -> bool:
        return self.builder is None

    def build(
        self, params: RobustnessParams, autoencoders: Mapping[str, nn.Module] | None = None
    ) -> nn.Module:
        """This defence as a torch module, in eval mode."""
        if self.builder is None:
            if not autoencoders or self.name not in autoencoders:
                raise PipelineError(f"defence {self.name!r} needs its trained autoencoder")
            return autoencoders[self.name].eval()
        module, _, function = self.builder.partition(":")
        build: Any = getattr(importlib.import_module(module), function)
        kwargs = {arg: getattr(params, key) for arg, key in self.params.items()}
        return build(**kwargs).eval()


SPECS: tuple[DefenceSpec, ...] = (
    DefenceSpec("none", "torch.nn:Identity"),
    DefenceSpec("ae", None, section="train_ae"),
    DefenceSpec("ae_adv", None, section="train_ae_adv"),
    DefenceSpec("ae_guided", None, section="train_ae_guided"),
    DefenceSpec(
        "feature_squeezing",
        "advdenoise.defences.squeezing:feature_squeezing",
        {"bits": "squeeze_bits"},
    ),
    DefenceSpec(
        "spatial_smoothing",
        "advdenoise.defences.median:spatial_smoothing",
        {"window": "smoothing_window"},
    ),
    DefenceSpec("jpeg", "advdenoise.defences.jpeg:jpeg_compression", {"quality": "jpeg_quality"}),
)

DEFENCES: tuple[str, ...] = tuple(s.name for s in SPECS)
AUTOENCODER_DEFENCES: tuple[str, ...] = tuple(s.name for s in SPECS if s.trained)


def spec(name: str) -> DefenceSpec:
    """The spec of defence `name`; an unknown name is an error that lists the known ones."""
    for s in SPECS:
        if s.name == name:
            return s
    raise PipelineError(f"unknown defence {name!r}; known: {list(DEFENCES)}")
