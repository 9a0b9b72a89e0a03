"""ART's FeatureSqueezing re-expressed in torch (bit-depth reduction, BPDA gradient)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from advdenoise.defences.bpda import ArtPreprocessing, _Bpda


class FeatureSqueezing(nn.Module):
    """ART's FeatureSqueezing (bit-depth reduction) on [0, 1] images, in torch on the images'
    device; BPDA identity backward.

    ART multiplies the float32 images by its float64 number of levels, so it rounds (half to
    even) and divides in float64 before the float32 result; so does this, and the values are
    ART's bit for bit (tests/test_defences.py). Why not ART's own: on a GPU every forward pass
    would cross to the host and back (`art_feature_squeezing` keeps it as the reference).
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.levels = float(np.rint(2**bits - 1))

    def _squeeze(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.detach().double().mul_(self.levels).round_().div_(self.levels)
        return squeezed.float().clamp_(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Bpda.apply(x, self._squeeze, None)

    def extra_repr(self) -> str:
        return f"levels={self.levels:g}, backward=identity"


def feature_squeezing(bits: int) -> FeatureSqueezing:
    """ART FeatureSqueezing (bit-depth reduction) on [0, 1] images in torch; BPDA identity backward."""
    return FeatureSqueezing(bits)


def art_feature_squeezing(bits: int) -> ArtPreprocessing:
    """ART's own FeatureSqueezing (NumPy, on the host) with a BPDA identity backward (reference)."""
    from art.defences.preprocessor import FeatureSqueezing as ArtFeatureSqueezing

    squeeze = ArtFeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=int(bits))
    return ArtPreprocessing("feature_squeezing", lambda a: squeeze(a)[0])
