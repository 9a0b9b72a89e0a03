"""BPDA: a non-differentiable preprocessor forward, the identity backward (Athalye et al. 2018)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from advdenoise.core.errors import PipelineError


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
