"""Defences beyond the paper, each a torch module in front of the CNN.

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
This module and `attacks` are the only ones that import ART.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advdenoise.errors import PipelineError
from advdenoise.models import channels_last
from advdenoise.params import AUTOENCODER_DEFENCES, DEFENCES, RobustnessParams

# --------------------------------------------------------------------------- preprocessing


class _Bpda(torch.autograd.Function):
    """Forward: a non-differentiable transform; backward: identity or a differentiable surrogate."""

    @staticmethod
    def forward(ctx, x, transform, surrogate):  # type: ignore[override]
        ctx.surrogate = surrogate
        if surrogate is not None:
            ctx.save_for_backward(x)
        return transform(x.detach())

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        if ctx.surrogate is None:
            return grad, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(ctx.surrogate(xx), xx, grad)
        return g, None, None


class ArtPreprocessing(nn.Module):
    """An ART (NumPy) preprocessor as a torch module with a BPDA backward pass.

    `transform` maps a float32 array N x 1 x H x W in [0, 1] to one of the same shape and range.
    Without a `surrogate` the backward pass is the identity; with one it is the surrogate's
    vector-Jacobian product at the input (BPDA with a differentiable approximation).
    """

    def __init__(
        self,
        name: str,
        transform: Callable[[np.ndarray], np.ndarray],
        surrogate: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self._transform = transform
        self.surrogate = surrogate

    def _apply_numpy(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.float().cpu().numpy()
        out = np.asarray(self._transform(arr), dtype=np.float32)
        if out.shape != arr.shape:
            raise PipelineError(f"{self.name}: output shape {out.shape} != input {arr.shape}")
        return torch.from_numpy(np.clip(out, 0.0, 1.0)).to(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Bpda.apply(x, self._apply_numpy, self.surrogate)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, backward={'surrogate' if self.surrogate else 'identity'}"


class MedianSmoothing(nn.Module):
    """Median filter equal to scipy's `median_filter(size=(1, 1, w, w), mode="reflect")`.

    Differentiable (the gradient reaches the selected pixel of each window). Padding is symmetric
    ("reflect" in scipy: d c b a | a b c d | d c b a); for even windows the footprint spans
    [i - w//2, i + w - 1 - w//2] and the upper median is taken, as in scipy's rank filter.
    """

    def __init__(self, window: int) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)

    @staticmethod
    def _pad_symmetric(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
        parts = []
        if before:
            parts.append(x.narrow(dim, 0, before).flip(dim))
        parts.append(x)
        if after:
            parts.append(x.narrow(dim, x.shape[dim] - after, after).flip(dim))
        return torch.cat(parts, dim=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.window
        if w == 1:
            return x
        n, c, h, wd = x.shape
        before, after = w // 2, w - 1 - w // 2
        if max(before, after) > min(h, wd):
            raise ValueError(f"window {w} is too large for {h} x {wd} images")
        xp = self._pad_symmetric(self._pad_symmetric(x, before, after, 2), before, after, 3)
        if w == 3:
            return _Median9.apply(xp)
        patches = F.unfold(xp.reshape(n * c, 1, *xp.shape[2:]), kernel_size=w)
        ranked, _ = patches.sort(dim=1)
        return ranked[:, (w * w) // 2, :].reshape(n, c, h, wd)


# Devillard's 19-exchange median-of-9 network: elementwise min/max instead of a sort per pixel.
_MEDIAN9_NETWORK = (
    (1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
    (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2),
)  # fmt: skip


class _Median9(torch.autograd.Function):
    """Median of the 3 x 3 neighbourhoods of a padded image; the gradient goes to the selected pixel.

    Why a Function: autograd through the 38 min/max ops costs 10x the forward pass; routing the
    gradient with one mask per neighbour costs about as much as the forward (ties: first neighbour).
    """

    @staticmethod
    def forward(ctx, xp):  # type: ignore[override]
        h, w = xp.shape[2] - 2, xp.shape[3] - 2
        views = [xp[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)]
        p = list(views)
        for a, b in _MEDIAN9_NETWORK:
            p[a], p[b] = torch.minimum(p[a], p[b]), torch.maximum(p[a], p[b])
        median = p[4]
        taken = torch.zeros_like(median, dtype=torch.bool)
        masks = []
        for v in views:
            mask = (v == median) & ~taken
            taken |= mask
            masks.append(mask)
        ctx.save_for_backward(torch.stack(masks))
        ctx.padded_shape = xp.shape
        return median

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (masks,) = ctx.saved_tensors
        h, w = grad.shape[2], grad.shape[3]
        out = grad.new_zeros(ctx.padded_shape)
        for k, mask in enumerate(masks):
            i, j = divmod(k, 3)
            out[:, :, i : i + h, j : j + w] += grad * mask
        return out


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


def spatial_smoothing(window: int) -> MedianSmoothing:
    """ART SpatialSmoothing(window, channels_first=True) over H x W, in torch with its gradient."""
    return MedianSmoothing(window)


def art_spatial_smoothing(window: int) -> ArtPreprocessing:
    """ART's own SpatialSmoothing (NumPy forward) with the torch median's gradient (reference)."""
    from art.defences.preprocessor import SpatialSmoothing

    smooth = SpatialSmoothing(window_size=int(window), channels_first=True, clip_values=(0.0, 1.0))
    return ArtPreprocessing(
        "spatial_smoothing", lambda a: smooth(a)[0], surrogate=MedianSmoothing(window)
    )


def jpeg_compression(quality: int) -> ArtPreprocessing:
    """ART JpegCompression (greyscale, per image); BPDA identity backward.

    ART converts [0, 1] floats to uint8 by truncation (x * 255 -> astype), which turns k/255 into
    k - 1 whenever float rounding lands just below k; we round to [0, 255] ourselves and use ART's
    [0, 255] mode so that clean 8-bit images enter the codec unchanged.
    """
    from art.defences.preprocessor import JpegCompression

    jpeg = JpegCompression(clip_values=(0, 255), quality=int(quality), channels_first=True)
    return ArtPreprocessing(
        "jpeg", lambda a: jpeg(np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.float32))[0] / 255.0
    )


def build_defence(
    name: str,
    params: RobustnessParams,
    autoencoders: Mapping[str, nn.Module] | None = None,
) -> nn.Module:
    """The defence `name` as a torch module mapping [0, 1] images to [0, 1] images (eval mode)."""
    if name == "none":
        return nn.Identity()
    if name in AUTOENCODER_DEFENCES:
        if not autoencoders or name not in autoencoders:
            raise PipelineError(f"defence {name!r} needs its trained autoencoder")
        return autoencoders[name].eval()
    if name == "feature_squeezing":
        return feature_squeezing(params.squeeze_bits)
    if name == "spatial_smoothing":
        return spatial_smoothing(params.smoothing_window)
    if name == "jpeg":
        return jpeg_compression(params.jpeg_quality)
    raise PipelineError(f"unknown defence {name!r}; known: {list(DEFENCES)}")


def defended_classifier(defence: nn.Module, cnn: nn.Module) -> nn.Sequential:
    """`Sequential(defence, cnn)` in eval mode, frozen (attacks need input gradients only), NHWC."""
    model = nn.Sequential(defence, cnn)
    channels_last(model).eval()  # in place
    for p in model.parameters():
        p.requires_grad_(False)
    return model
