"""ART's SpatialSmoothing (median filter) re-expressed in torch, with its exact gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advdenoise.defences.bpda import ArtPreprocessing


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
