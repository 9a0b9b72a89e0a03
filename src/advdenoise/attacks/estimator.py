"""The ART estimator every attack takes, and what each attack call shares: seeding, frozen weights.

ART's private member used here, pinned by a test (pyproject pins ART to 1.20.x):
`PyTorchClassifier._device` (exact device): tests/test_attacks.py::test_classifier_wrapper_settings.

Random starts and random attacks draw from NumPy's global RNG (`art.utils.random_sphere`) and
torch's. With `seed=...` both global states are reseeded for the call and restored afterwards
(`seeded`); callers pass one seed per cell (`core.seeding.named_seed`), so each cell
reproduces on its own, whatever ran before.

ART computes the loss gradient with `loss.backward()`, which also computes (and then zeroes) the
gradients of every weight; the attacks freeze the weights for the call (`input_gradients_only`),
so only input gradients are computed (measured in bench/attack_throughput.py). The model runs in
the channels-last layout (`make_art_classifier`), and small batches (attack.batch_size, default
64) stay in the CPU cache.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

_Estimator = typing.TypeVar("_Estimator", bound=PyTorchClassifier)


def place(estimator: _Estimator, device: torch.device) -> _Estimator:
    """Put an ART PyTorch estimator and its model on exactly `device`."""
    estimator._device = device  # noqa: SLF001 - ART has no public setter for the exact device
    estimator.model.to(device)
    return estimator


def make_art_classifier(
    model: nn.Module,
    input_shape: Sequence[int],
    nb_classes: int,
    device: str | torch.device,
    *,
    channels_last: bool = True,
    loss: nn.Module | None = None,
) -> PyTorchClassifier:
    """Wrap `model` (images in [0, 1] -> logits) for ART: clip (0, 1), cross-entropy, eval mode.

    No ART preprocessing (the model does its own), so ART keeps the PyTorch-native attack path.
    The estimator is placed on exactly `device` (ART's own choice would be cuda:current_device()).
    `channels_last` converts the model's weights in place (same Parameter objects, so optimisers
    and other references still see them) to the channels-last layout: on a CPU the conv and
    max-pool kernels then run about twice as fast; outputs differ only by float rounding (~1e-8).
    """
    device = torch.device(device)
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    classifier = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss() if loss is None else loss,
        input_shape=tuple(int(s) for s in input_shape),
        nb_classes=int(nb_classes),
        optimizer=None,
        clip_values=(0.0, 1.0),
        preprocessing=None,
        device_type="gpu" if device.type == "cuda" else "cpu",
    )
    return place(classifier, device)


@contextlib.contextmanager
def input_gradients_only(model: nn.Module) -> Iterator[None]:
    """Freeze the weights for the block (restoring their flags after): attacks need input gradients."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Reseed NumPy's global RNG (ART's random starts) and torch for the block, then restore both.

    torch's state is restored for the CPU and for every CUDA device once CUDA is in use (the
    smoothing noise and NoisyAverage draw on the model's device), so what runs after the block
    draws as if the block had not run, on a GPU too.
    """
    if seed is None:
        yield
        return
    np_state = np.random.get_state()  # noqa: NPY002 - ART draws from the global NumPy state
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=cuda, device_type="cuda"):
            np.random.seed(seed)  # noqa: NPY002
            torch.manual_seed(seed)
            yield
    finally:
        np.random.set_state(np_state)  # noqa: NPY002


def check_inputs(
    x: np.ndarray, y: np.ndarray, eps: float, batch_size: int, max_eps: float = 1.0
) -> None:
    """Images, labels, budget and batch size as every attack takes them; `max_eps` bounds the
    budget (1 for L-inf in [0, 1]; an L2 radius can exceed it)."""
    if x.ndim != 4 or x.dtype != np.float32:
        raise ValueError(f"x must be float32 (N, C, H, W), got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be {len(x)} integer class indices, got {y.dtype} {y.shape}")
    if not 0.0 <= eps <= max_eps:
        raise ValueError(f"eps must be in [0, {max_eps:g}], got {eps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
