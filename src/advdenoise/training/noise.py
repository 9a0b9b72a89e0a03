"""Seeded image noise for the denoising autoencoder's "combined images" (paper, Sec. 3).

Every function is pure: it takes float images in [0, 1] and a `torch.Generator`, returns a new
tensor clipped to [0, 1] and never touches the global RNG, so the noisy training set depends only
on the seed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from advdenoise.core.seeding import named_seed


def gaussian(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Additive white Gaussian noise with standard deviation `sigma`."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + sigma * noise).clamp_(0.0, 1.0)


def salt_pepper(x: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """A fraction `amount` of pixels set to 0 or 1 (each with probability 1/2)."""
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    out = x.clone()
    out[u < amount / 2] = 0.0
    out[(u >= amount / 2) & (u < amount)] = 1.0
    return out


def speckle(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Multiplicative noise x + x * n with n ~ N(0, sigma^2) (scikit-image's 'speckle')."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + x * sigma * noise).clamp_(0.0, 1.0)


NOISES: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "gaussian": gaussian,
    "salt_pepper": salt_pepper,
    "speckle": speckle,
}


def add_noise(x: torch.Tensor, name: str, level: float, generator: torch.Generator) -> torch.Tensor:
    """Dispatch on the params.yaml noise name (train_ae.noise keys)."""
    try:
        fn = NOISES[name]
    except KeyError as exc:
        raise ValueError(f"unknown noise {name!r}; known: {sorted(NOISES)}") from exc
    return fn(x, level, generator)


def noise_generator(seed: int, stream: str, name: str) -> torch.Generator:
    """A CPU generator for one (run seed, named data stream, noise type): adding or removing a
    noise type leaves the other types' draws unchanged, and each split has its own stream."""
    return torch.Generator().manual_seed(named_seed(seed, stream, name))
