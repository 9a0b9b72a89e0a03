"""The registry of models the certify stage smooths (certify.models): the CNN, or a denoiser in
front of it (denoised smoothing). Data only, so that params validation and the report read it
without torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SmoothedSpec:
    """`denoiser`: the certify stage's path option of the autoencoder put in front of the CNN
    ("ae_gauss" for --ae-gauss), None for the CNN alone. `label` names the model in the report."""

    label: str
    denoiser: str | None


SMOOTHED: dict[str, SmoothedSpec] = {
    "cnn": SmoothedSpec("CNN alone", None),
    "ae": SmoothedSpec("paper's AE + CNN", "autoencoder"),
    "ae_gauss": SmoothedSpec("Gaussian denoiser + CNN (denoised smoothing)", "ae_gauss"),
}


def label(model: str) -> str:
    """How the report names `model` (its own name when it is not registered)."""
    spec = SMOOTHED.get(model)
    return spec.label if spec else model
