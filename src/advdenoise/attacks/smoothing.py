"""Randomized smoothing through ART: Cohen et al.'s CERTIFY and PREDICT, and the L2 attack on the
smoothed classifier (PGD with expectation over transformation).

ART's private members used here, pinned by tests/test_certify.py::
test_certify_matches_art_and_the_closed_form_of_a_linear_classifier:
`RandomizedSmoothingMixin._prediction_counts` (replaced: noise drawn on the device),
`._lower_confidence_bound` (CERTIFY with its votes), and the `PyTorchClassifier._model` and
`._device` that the replacement uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
from torch import nn

from advdenoise.attacks.estimator import (
    input_gradients_only,
    make_art_classifier,
    place,
    seeded,
)
from advdenoise.attacks.gradient import make_pgd
from advdenoise.attacks.objectives import NoisyAverage


def make_smoothed_classifier(
    model: nn.Module,
    input_shape: Sequence[int],
    nb_classes: int,
    device: str | torch.device,
    *,
    sigma: float,
    n0: int,
    alpha: float,
) -> PyTorchRandomizedSmoothing:
    """ART's randomized-smoothing estimator of `model` (Gaussian noise sigma, n0 selection samples)."""
    device = torch.device(device)
    model.eval()
    smoothed = _DeviceNoiseSmoothing(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(int(s) for s in input_shape),
        nb_classes=int(nb_classes),
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
        sample_size=int(n0),
        scale=float(sigma),
        alpha=float(alpha),
    )
    return place(smoothed, device)


class _DeviceNoiseSmoothing(PyTorchRandomizedSmoothing):
    """ART's randomized smoothing with its Gaussian samples drawn by torch on the model's device.

    ART draws an image's n noisy copies with NumPy's float64 normal on the CPU and copies them to
    the device batch by batch: 16 ms per 256 copies of a 64 px image on 2 CPU cores, against 3 ms
    for torch.randn, and at 224 px on a GPU ~50 MB of host work and transfer per image. Here the
    copies x + N(0, scale^2) come from torch's generator (seeded by `seeded`) on the device and the
    votes are counted there; class selection, the Clopper-Pearson bound and PREDICT's binomial test
    stay ART's. Same distribution, other draws than ART's (tests/test_certify.py checks the votes
    against the closed form of a linear classifier).
    """

    def _prediction_counts(
        self, x: np.ndarray, n: int | None = None, batch_size: int = 128
    ) -> np.ndarray:
        n = self.sample_size if n is None else int(n)
        image = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(self._device)  # noqa: SLF001
        counts = torch.zeros(self.nb_classes, dtype=torch.int64, device=image.device)
        self._model.eval()  # noqa: SLF001
        with torch.no_grad():
            for start in range(0, n, batch_size):
                noisy = torch.randn((min(batch_size, n - start), *image.shape), device=image.device)
                logits = self._model(noisy.mul_(self.scale).add_(image))[-1]  # noqa: SLF001
                counts += torch.bincount(logits.argmax(1), minlength=self.nb_classes)
        return counts.cpu().numpy()


def certify(
    smoothed: PyTorchRandomizedSmoothing,
    x: np.ndarray,
    n: int,
    batch_size: int,
    *,
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cohen et al.'s CERTIFY, image by image: (class or -1 to abstain, L2 radius, votes (N, K)).

    The loop of ART's `certify` (n0 noisy samples select the class, n fresh ones estimate its
    probability, Clopper-Pearson lower bound at level alpha, abstain below 1/2, radius
    sigma * Phi^-1(p_lower)), which does not hand back the estimation votes; the tests check it
    against `certify` itself. `votes` decide the Monte Carlo majority vote of the n samples.
    """
    from scipy.stats import norm

    predictions, radii, votes = [], [], []
    with seeded(seed), torch.no_grad():
        for x_i in x:
            select = smoothed._prediction_counts(x_i, n=smoothed.sample_size, batch_size=batch_size)  # noqa: SLF001
            top = int(np.argmax(select))
            counts = smoothed._prediction_counts(x_i, n=n, batch_size=batch_size)  # noqa: SLF001
            p_lower = smoothed._lower_confidence_bound(counts[top], n)  # noqa: SLF001
            certified = p_lower >= 0.5
            predictions.append(top if certified else -1)
            radii.append(smoothed.scale * norm.ppf(p_lower) if certified else 0.0)
            votes.append(counts)
    return np.array(predictions), np.array(radii, dtype=np.float64), np.array(votes)


def smoothed_votes(
    smoothed: PyTorchRandomizedSmoothing,
    x: np.ndarray,
    n: int,
    batch_size: int,
    *,
    seed: int | None = None,
) -> np.ndarray:
    """Class counts (N, K) of `n` noisy copies of each image: the Monte Carlo estimate of the
    smoothed classifier, whose majority vote is its prediction without abstention."""
    with seeded(seed), torch.no_grad():
        return np.array([smoothed._prediction_counts(x_i, n=n, batch_size=batch_size) for x_i in x])  # noqa: SLF001


def smoothed_predict(
    smoothed: PyTorchRandomizedSmoothing, x: np.ndarray, batch_size: int, *, seed: int | None = None
) -> np.ndarray:
    """Cohen et al.'s PREDICT through ART (sample_size samples, binomial test): class, or -1 to abstain."""
    with seeded(seed), torch.no_grad():
        scores = smoothed.predict(x, batch_size=batch_size, is_abstain=True)
    return np.where(scores.max(1) > 0, scores.argmax(1), -1)


def eot_pgd_l2(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    radius: np.ndarray,
    sigma: float,
    *,
    samples: int,
    steps: int,
    nb_classes: int,
    device: str | torch.device,
    batch_size: int,
    seed: int | None = None,
) -> np.ndarray:
    """L2 PGD (ART) on the smoothed soft classifier, image i within L2 radius[i] (Salman et al. 2019).

    The gradient is an expectation over `samples` noise draws (EOT); step 2.5 * radius / steps.
    Images with radius 0 stay as they are; the others are attacked together, `batch_size` noisy
    copies (`batch_size // samples` images) at a time.
    """
    out = x.copy()
    rows = np.flatnonzero(radius > 0)
    if len(rows) == 0:
        return out
    soft = NoisyAverage(model, sigma, samples)
    classifier = make_art_classifier(soft, x.shape[1:], nb_classes, device)
    eps = radius[rows].astype(np.float64).reshape(-1, *([1] * (x.ndim - 1)))  # one ball per image
    images = max(1, batch_size // samples)
    with seeded(seed), input_gradients_only(classifier.model):
        attack = make_pgd(classifier, eps, steps, 2.5 / steps, False, images, norm=2)
        out[rows] = attack.generate(x=x[rows], y=y[rows].astype(np.int64))
    return out
