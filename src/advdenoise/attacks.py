"""FGSM and L-inf PGD through the Adversarial Robustness Toolbox (ART), and their evaluation.

This is the only module that imports ART attacks and estimators. Every attack takes any
`nn.Module` mapping N x C x H x W images in [0, 1] to logits (the CNN, or `Sequential(denoiser,
cnn)` for adaptive attacks), wrapped once by `make_art_classifier`.

Conventions: images float32 (N, C, H, W) in [0, 1]; labels int64 class indices (ART turns them
into one-hot itself); attacks are untargeted and use the true labels (no label-leaking predict).

ART behaviour this module relies on or works around (ART 1.20, checked in tests/test_attacks.py):
- `ProjectedGradientDescent` dispatches to the PyTorch-native `ProjectedGradientDescentPyTorch`
  only for a `PyTorchClassifier` with framework-only preprocessing; otherwise it silently falls
  back to the NumPy implementation (a tensor <-> array round trip per step). `make_pgd` refuses
  the fallback.
- eps = 0: ART's FGSM returns x + 0 * sign(grad) after a wasted gradient pass; ART's PGD raises
  `ValueError` because eps_step = fraction * 0 is not positive. Both here return a copy of x.
- ART's default PGD step (eps_step=0.1) is never used: the step is `step_fraction * eps`.
- Random PGD starts come from NumPy's global RNG (`art.utils.random_sphere`). With `seed=...`
  the global NumPy and torch states are reseeded from (seed, method, eps) for the call and
  restored afterwards, so each (method, eps) cell reproduces on its own, whatever ran before.
- Speed: ART computes the loss gradient with `loss.backward()`, which also computes (and then
  zeroes) the gradients of every weight; the attacks freeze the weights for the call, so only
  input gradients are computed (measured in bench/attack_throughput.py). ART's PGD `generate`
  also evaluates the success rate for a log line (two extra forward passes over all inputs); the
  PGD here runs ART's own per-iteration step (`_compute_pytorch`) in the loop of its per-batch
  core and skips that line, keeping the iterates a convergence check needs; a test checks the
  result is identical to `generate`. The model runs in the channels-last layout (see
  `make_art_classifier`), and small batches (attack.batch_size, default 64) stay in the CPU cache.
"""

from __future__ import annotations

import contextlib
import itertools
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_pytorch import (
    ProjectedGradientDescentPyTorch,
)
from art.estimators.classification import PyTorchClassifier
from torch import nn

from advdenoise.errors import PipelineError
from advdenoise.params import AttackParams

METHODS = ("fgsm", "pgd")
MONOTONE_TOLERANCE = 1  # images: accuracy may rise with eps (or PGD beat FGSM) by this much


# --------------------------------------------------------------------------- ART wrappers


def make_art_classifier(
    model: nn.Module,
    input_shape: Sequence[int],
    nb_classes: int,
    device: str | torch.device,
    *,
    channels_last: bool = True,
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
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(int(s) for s in input_shape),
        nb_classes=int(nb_classes),
        optimizer=None,
        clip_values=(0.0, 1.0),
        preprocessing=None,
        device_type="gpu" if device.type == "cuda" else "cpu",
    )
    classifier._device = device  # noqa: SLF001 - ART has no public setter for the exact device
    classifier.model.to(device)
    return classifier


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


def cell_seed(seed: int, method: str, eps: float) -> int:
    """A 32-bit seed for one (method, eps) attack cell, independent of the order cells run in."""
    words = [seed, zlib.crc32(method.encode()), int(round(eps * 1e9))]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Reseed NumPy's global RNG (ART's random starts) and torch for the block, then restore both."""
    if seed is None:
        yield
        return
    np_state = np.random.get_state()  # noqa: NPY002 - ART draws from the global NumPy state
    torch_state = torch.random.get_rng_state()
    try:
        np.random.seed(seed)  # noqa: NPY002
        torch.manual_seed(seed)
        yield
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        torch.random.set_rng_state(torch_state)


def _check_inputs(x: np.ndarray, y: np.ndarray, eps: float, batch_size: int) -> None:
    if x.ndim != 4 or x.dtype != np.float32:
        raise ValueError(f"x must be float32 (N, C, H, W), got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be {len(x)} integer class indices, got {y.dtype} {y.shape}")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1], got {eps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def fgsm(
    classifier: PyTorchClassifier,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    batch_size: int,
) -> np.ndarray:
    """Untargeted L-inf FGSM (ART `FastGradientMethod`): x + eps * sign(grad), clipped to [0, 1]."""
    _check_inputs(x, y, eps, batch_size)
    if eps == 0:
        return x.copy()
    attack = FastGradientMethod(
        classifier, norm=np.inf, eps=float(eps), targeted=False, batch_size=int(batch_size)
    )
    with input_gradients_only(classifier.model):
        adv = attack.generate(x=x, y=y.astype(np.int64))
    return np.asarray(adv, dtype=np.float32)


def make_pgd(
    classifier: PyTorchClassifier,
    eps: float,
    steps: int,
    step_fraction: float,
    random_init: bool,
    batch_size: int,
) -> ProjectedGradientDescent:
    """ART's L-inf PGD with step = step_fraction * eps; fails unless the PyTorch-native path is used."""
    attack = ProjectedGradientDescent(
        classifier,
        norm=np.inf,
        eps=float(eps),
        eps_step=float(step_fraction * eps),
        max_iter=int(steps),
        targeted=False,
        num_random_init=1 if random_init else 0,
        batch_size=int(batch_size),
        verbose=False,
    )
    if not isinstance(attack._attack, ProjectedGradientDescentPyTorch):  # noqa: SLF001
        raise PipelineError(
            f"ART chose {type(attack._attack).__name__} instead of the PyTorch-native PGD; "  # noqa: SLF001
            "the classifier must be a PyTorchClassifier without non-PyTorch preprocessing"
        )
    return attack


def pgd(
    classifier: PyTorchClassifier,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    steps: int,
    step_fraction: float,
    random_init: bool,
    batch_size: int,
    *,
    seed: int | None = None,
) -> np.ndarray:
    """Untargeted L-inf PGD (ART `ProjectedGradientDescentPyTorch`), `steps` steps of
    `step_fraction * eps`, one uniform random start in the eps-ball if `random_init`.

    Runs ART's per-batch PGD iteration batch by batch (what `generate` does for one random start)
    without `generate`'s success-rate log line; `seed` reseeds the random start for this call.
    """
    return pgd_checkpoints(
        classifier, x, y, eps, (steps,), step_fraction, random_init, batch_size, seed=seed
    )[0]


def pgd_checkpoints(
    classifier: PyTorchClassifier,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    checkpoints: Sequence[int],
    step_fraction: float,
    random_init: bool,
    batch_size: int,
    *,
    seed: int | None = None,
) -> list[np.ndarray]:
    """One PGD run of max(checkpoints) steps; the iterate after each checkpoint's step count.

    Why: PGD's first k iterations do not depend on how many follow, so the iterate at k equals a
    k-step PGD from the same start; a convergence check (k vs 2k steps) then costs 2k steps, not 3k.
    """
    _check_inputs(x, y, eps, batch_size)
    if not checkpoints or min(checkpoints) < 1:
        raise ValueError(f"checkpoints must be step counts >= 1, got {list(checkpoints)}")
    if eps == 0:
        return [x.copy() for _ in checkpoints]
    steps = max(checkpoints)
    core = make_pgd(classifier, eps, steps, step_fraction, random_init, batch_size)._attack  # noqa: SLF001
    targets = core._set_targets(x, y.astype(np.int64)).astype(np.float32)  # noqa: SLF001 - one-hot
    device = classifier.device
    out = [np.empty_like(x) for _ in checkpoints]
    with seeded(seed), input_gradients_only(classifier.model):
        for start in range(0, len(x), batch_size):
            stop = start + batch_size
            x0 = torch.from_numpy(x[start:stop]).to(device)
            t = torch.from_numpy(targets[start:stop]).to(device)
            adv, momentum = x0.clone(), torch.zeros_like(x0)
            for i in range(steps):  # ART's _generate_batch loop, with the iterates kept
                core._i_max_iter = i  # noqa: SLF001
                adv = core._compute_pytorch(  # noqa: SLF001
                    adv, x0, t, None, core.eps, core.eps_step, random_init and i == 0, momentum
                )
                for k, c in enumerate(checkpoints):
                    if c == i + 1:
                        out[k][start:stop] = adv.detach().cpu().numpy()
    return out


def attack(
    classifier: PyTorchClassifier,
    method: str,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    params: AttackParams,
    *,
    seed: int | None = None,
) -> np.ndarray:
    """Run `method` ("fgsm" or "pgd") with the settings in `params`; `seed` fixes PGD's start."""
    if method == "fgsm":  # deterministic: no random start
        return fgsm(classifier, x, y, eps, params.batch_size)
    if method == "pgd":
        return pgd(
            classifier,
            x,
            y,
            eps,
            params.pgd_steps,
            params.pgd_step_fraction,
            params.pgd_random_init,
            params.batch_size,
            seed=None if seed is None else cell_seed(seed, method, eps),
        )
    raise PipelineError(f"unknown attack method {method!r}; known: {list(METHODS)}")


def attack_grid(
    classifier: PyTorchClassifier,
    methods: Sequence[str],
    eps_values: Sequence[float],
    x: np.ndarray,
    y: np.ndarray,
    params: AttackParams,
    seed: int,
) -> dict[str, np.ndarray]:
    """Every method at every eps: method -> float32 (E, N, C, H, W), in `eps_values` order."""
    out: dict[str, np.ndarray] = {}
    for method in methods:
        stack = np.empty((len(eps_values), *x.shape), dtype=np.float32)
        for i, eps in enumerate(eps_values):
            stack[i] = attack(classifier, method, x, y, eps, params, seed=seed)
        out[method] = stack
    return out


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class CellResult:
    """One (method, eps) cell of the accuracy-vs-eps table."""

    method: str
    eps: float
    accuracy: float
    success_rate: float  # of the originally correct images, the fraction now misclassified
    l2_mean: float
    linf_max: float


def evaluate_cell(
    method: str,
    eps: float,
    clean: np.ndarray,
    adv: np.ndarray,
    y: np.ndarray,
    clean_pred: np.ndarray,
    adv_pred: np.ndarray,
) -> CellResult:
    """Accuracy, success rate on originally correct images, and perturbation norms of one set."""
    if len(y) == 0:
        raise PipelineError(f"{method} eps={eps:g}: empty test set")
    correct = clean_pred == y
    delta = (adv.astype(np.float64) - clean.astype(np.float64)).reshape(len(adv), -1)
    success = float(np.mean(adv_pred[correct] != y[correct])) if correct.any() else 0.0
    return CellResult(
        method=method,
        eps=float(eps),
        accuracy=float(np.mean(adv_pred == y)),
        success_rate=success,
        l2_mean=float(np.linalg.norm(delta, axis=1).mean()),
        linf_max=float(np.abs(delta).max()),
    )


def sanity_checks(
    cells: Sequence[CellResult], clean_accuracy: float, n: int, tolerance: int = MONOTONE_TOLERANCE
) -> dict[str, bool]:
    """The checks an attack evaluation must pass, each a boolean (tolerance in images of `n`).

    - `<method>.monotone`: accuracy does not increase with eps;
    - `pgd_le_fgsm`: PGD accuracy <= FGSM accuracy at every shared eps (only with both methods);
    - `<method>.eps0_is_clean`: at eps = 0 accuracy equals the clean accuracy (only if 0 is run).
    """
    tol = tolerance / n + 1e-12
    by_method: dict[str, list[CellResult]] = {}
    for c in sorted(cells, key=lambda c: (c.method, c.eps)):
        by_method.setdefault(c.method, []).append(c)
    checks: dict[str, bool] = {}
    for method, rows in by_method.items():
        accs = [r.accuracy for r in rows]
        checks[f"{method}.monotone"] = all(b <= a + tol for a, b in itertools.pairwise(accs))
        zero = [r.accuracy for r in rows if r.eps == 0]
        if zero:
            checks[f"{method}.eps0_is_clean"] = abs(zero[0] - clean_accuracy) <= 1e-12
    if "fgsm" in by_method and "pgd" in by_method:
        fgsm_acc = {r.eps: r.accuracy for r in by_method["fgsm"]}
        checks["pgd_le_fgsm"] = all(
            r.accuracy <= fgsm_acc[r.eps] + tol for r in by_method["pgd"] if r.eps in fgsm_acc
        )
    return checks


def metric_key(method: str, eps: float, name: str) -> str:
    """Flat metrics/attack.json key of one cell, e.g. `pgd.eps_0.03.accuracy`."""
    return f"{method}.eps_{eps:g}.{name}"


def grid_metrics(
    cells: Sequence[CellResult], clean_accuracy: float, checks: Mapping[str, bool]
) -> dict[str, float | bool]:
    """metrics/attack.json: clean accuracy, accuracy and success rate of every cell, the checks.

    Every eps of the grid rather than the headline alone: the stage does not depend on
    attack.eps, so a headline-only experiment re-uses its outputs.
    """
    out: dict[str, float | bool] = {"clean_accuracy": clean_accuracy}
    for c in sorted(cells, key=lambda c: (c.method, c.eps)):
        if c.eps > 0:
            out[metric_key(c.method, c.eps, "accuracy")] = c.accuracy
            out[metric_key(c.method, c.eps, "success_rate")] = c.success_rate
    out.update({f"check.{k}": v for k, v in checks.items()})
    return out
