"""The defences by name (their specs are in `specs`), and the one composition of a defence with
the CNN.

Every defence maps [0, 1] images N x 1 x H x W to [0, 1] images, so that
`nn.Sequential(defence, cnn)` is one differentiable classifier an attacker can target end to end:

- `none`: the identity (the undefended CNN);
- `ae`, `ae_adv`, `ae_guided`: autoencoders (differentiable as they are);
- `feature_squeezing`, `jpeg`: a quantiser in the forward pass and BPDA (Athalye et al. 2018: the
  identity as the backward pass), because rounding and JPEG have no useful gradient. JPEG is ART's
  preprocessor (PIL, on the host); feature squeezing is ART's re-expressed in torch
  (`FeatureSqueezing`, bit-for-bit equal to ART's output; the tests check it) so that it runs on
  the images' device;
- `spatial_smoothing`: ART's SpatialSmoothing (median filter) re-expressed in torch
  (`MedianSmoothing`, bit-for-bit equal to ART's output; the tests check it), so the attack gets
  its exact gradient, which flows to the pixel each window selects. Calling ART's NumPy filter in
  the forward pass and the torch one for the gradient costs 2-3x more for the same numbers.

ART's preprocessors default to channels-last images; ours are channels first, so every one is built
with `channels_first=True` where it has that option (JPEG and smoothing; squeezing is per pixel).
This package and `attacks` are the only ones that import ART.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from advdenoise.core.params import RobustnessParams
from advdenoise.defences.specs import spec
from advdenoise.models.inference import channels_last


def build_defence(
    name: str,
    params: RobustnessParams,
    autoencoders: Mapping[str, nn.Module] | None = None,
) -> nn.Module:
    """The defence `name` (its spec in `specs`) as a torch module mapping [0, 1] images to [0, 1]
    images (eval mode)."""
    return spec(name).build(params, autoencoders)


def defended_classifier(defence: nn.Module, cnn: nn.Module) -> nn.Sequential:
    """`Sequential(defence, cnn)` in eval mode, frozen (attacks need input gradients only), NHWC."""
    model = nn.Sequential(defence, cnn)
    channels_last(model).eval()  # in place
    for p in model.parameters():
        p.requires_grad_(False)
    return model
