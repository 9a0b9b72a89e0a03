"""Attacks and certification through the Adversarial Robustness Toolbox (ART): FGSM, PGD (L-inf,
and L2 with EOT), APGD-CE, the Square Attack, a detector-aware PGD and randomized smoothing
(CERTIFY, PREDICT); `specs` holds the registry of gradient attacks, `runs` their runners and the
calls by name, seeded per cell; `sets` keeps adversarial sets."""

# - `estimator`: the ART wrapper every attack takes (`make_art_classifier`), seeding, frozen weights;
# - `gradient`: FGSM, L-inf PGD and its checkpoints, the detector-aware PGD;
# - `autoattack`: APGD-CE (L-inf and L2) and the Square Attack, AutoAttack's pair;
# - `smoothing`: randomized smoothing (CERTIFY, PREDICT) and the L2 EOT attack on it.
# This package is the only one that imports ART attacks and estimators (`defences` imports ART's
# preprocessors), and the only one that touches ART's private members; each module lists those it
# touches with the test that pins each (pyproject pins ART to 1.20.x).
#
# Every attack takes any `nn.Module` mapping N x C x H x W images in [0, 1] to logits (the CNN, or
# `Sequential(denoiser, cnn)` for adaptive attacks), wrapped once by `make_art_classifier`.
#
# Conventions: images float32 (N, C, H, W) in [0, 1]; labels int64 class indices (ART turns them
# into one-hot itself); attacks are untargeted and use the true labels (no label-leaking predict).

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from art.estimators.classification import PyTorchClassifier

    from advdenoise.attacks.autoattack import apgd, apgd_l2, square
    from advdenoise.attacks.estimator import input_gradients_only, make_art_classifier, seeded
    from advdenoise.attacks.gradient import (
        detector_aware_pgd,
        fgsm,
        linf_projection,
        make_pgd,
        pgd,
        pgd_checkpoints,
    )
    from advdenoise.attacks.smoothing import (
        certify,
        eot_pgd_l2,
        make_smoothed_classifier,
        smoothed_predict,
        smoothed_votes,
    )

# Loaded on first use (PEP 562), so that the registry (`specs`) imports without ART or torch.
_HOMES = {
    "PyTorchClassifier": "art.estimators.classification",
    **dict.fromkeys(("apgd", "apgd_l2", "square"), "advdenoise.attacks.autoattack"),
    **dict.fromkeys(
        ("input_gradients_only", "make_art_classifier", "seeded"), "advdenoise.attacks.estimator"
    ),
    **dict.fromkeys(
        ("detector_aware_pgd", "fgsm", "linf_projection", "make_pgd", "pgd", "pgd_checkpoints"),
        "advdenoise.attacks.gradient",
    ),
    **dict.fromkeys(
        ("certify", "eot_pgd_l2", "make_smoothed_classifier", "smoothed_predict", "smoothed_votes"),
        "advdenoise.attacks.smoothing",
    ),
}
__all__ = [
    "PyTorchClassifier",
    "apgd",
    "apgd_l2",
    "certify",
    "detector_aware_pgd",
    "eot_pgd_l2",
    "fgsm",
    "input_gradients_only",
    "linf_projection",
    "make_art_classifier",
    "make_pgd",
    "make_smoothed_classifier",
    "pgd",
    "pgd_checkpoints",
    "seeded",
    "smoothed_predict",
    "smoothed_votes",
    "square",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
