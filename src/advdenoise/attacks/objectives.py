"""Modules that attacks optimise through: detector-aware logits and loss, the EOT average."""

from __future__ import annotations

import torch
from torch import nn


class DetectorAware(nn.Module):
    """Logits of `cnn` and, as one more column, the AE's reconstruction error / threshold."""

    def __init__(self, autoencoder: nn.Module, cnn: nn.Module, threshold: float) -> None:
        super().__init__()
        self.autoencoder, self.cnn, self.threshold = autoencoder, cnn, float(threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        err = (self.autoencoder(x) - x).pow(2).flatten(1).mean(1, keepdim=True)
        return torch.cat([self.cnn(x), err / self.threshold], dim=1)


class EvadeLoss(nn.Module):
    """Cross-entropy on the logits minus lam * normalised reconstruction error (PGD ascends it)."""

    def __init__(self, lam: float) -> None:
        super().__init__()
        self.lam = float(lam)

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels = target.argmax(1) if target.ndim == 2 else target
        ce = nn.functional.cross_entropy(out[:, :-1], labels.long(), reduction="none")
        return (ce - self.lam * torch.relu(out[:, -1] - 1.0) - 1e-3 * out[:, -1]).mean()


class NoisyAverage(nn.Module):
    """log E[softmax(model(x + sigma * noise))] over `samples` Gaussian draws (EOT)."""

    def __init__(self, model: nn.Module, sigma: float, samples: int) -> None:
        super().__init__()
        self.model, self.sigma, self.samples = model, float(sigma), int(samples)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noisy = x.repeat_interleave(self.samples, 0)
        noisy = noisy + self.sigma * torch.randn_like(noisy)
        probs = torch.softmax(self.model(noisy), 1).view(len(x), self.samples, -1).mean(1)
        return probs.clamp_min(1e-12).log()
