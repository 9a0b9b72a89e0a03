"""Gradient attacks through ART: FGSM, L-inf PGD (with checkpoints), the detector-aware PGD.

ART's private members used here, each pinned by a test in tests/test_attacks.py:
- `ProjectedGradientDescent._attack` (PyTorch-native path): test_pgd_uses_pytorch_native_path_and_
  step_fraction, test_numpy_fallback_is_refused;
- `ProjectedGradientDescentPyTorch._set_targets`, `._i_max_iter`, `._compute_pytorch` and
  `._projection` (PGD with checkpoints, float32 projection): test_pgd_matches_art_generate,
  test_pgd_checkpoints_are_the_shorter_attacks, test_linf_projection_equals_arts.

ART behaviour relied on or worked around (ART 1.20, checked in tests/test_attacks.py):
- `ProjectedGradientDescent` dispatches to the PyTorch-native `ProjectedGradientDescentPyTorch`
  only for a `PyTorchClassifier` with framework-only preprocessing; otherwise it silently falls
  back to the NumPy implementation (a tensor <-> array round trip per step). `make_pgd` refuses
  the fallback.
- eps = 0: ART's FGSM returns x + 0 * sign(grad) after a wasted gradient pass; ART's PGD raises
  `ValueError` because eps_step = fraction * 0 is not positive. Both here return a copy of x.
- ART's default PGD step (eps_step=0.1) is never used: the step is `step_fraction * eps`.
- ART's PGD `generate` also evaluates the success rate for a log line (two extra forward passes
  over all inputs); the PGD here runs ART's own per-iteration step (`_compute_pytorch`) in the
  loop of its per-batch core and skips that line, keeping the iterates a convergence check needs,
  with ART's L-inf projection computed in float32 (`linf_projection`); a test checks the result
  is identical to `generate`.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence

import numpy as np
import torch
from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_pytorch import (
    ProjectedGradientDescentPyTorch,
)
from art.estimators.classification import PyTorchClassifier
from torch import nn

from advdenoise.attacks.estimator import (
    check_inputs,
    input_gradients_only,
    make_art_classifier,
    seeded,
)
from advdenoise.attacks.objectives import DetectorAware, EvadeLoss
from advdenoise.attacks.sets import check_perturbation
from advdenoise.core.errors import PipelineError
from advdenoise.core.params import AttackParams


def fgsm(
    classifier: PyTorchClassifier,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    batch_size: int,
) -> np.ndarray:
    """Untargeted L-inf FGSM (ART `FastGradientMethod`): x + eps * sign(grad), clipped to [0, 1]."""
    check_inputs(x, y, eps, batch_size)
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
    eps: float | np.ndarray,
    steps: int,
    step_fraction: float,
    random_init: bool,
    batch_size: int,
    norm: float = np.inf,
) -> ProjectedGradientDescent:
    """ART's PGD (L-inf unless `norm`) with step = step_fraction * eps; fails unless the
    PyTorch-native path is used. An array `eps` of shape (N, 1, 1, 1) gives each image its own."""
    if not isinstance(eps, np.ndarray):
        eps = float(eps)
    attack = ProjectedGradientDescent(
        classifier,
        norm=norm,
        eps=eps,
        eps_step=step_fraction * eps,
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
    check_inputs(x, y, eps, batch_size)
    if not checkpoints or min(checkpoints) < 1:
        raise ValueError(f"checkpoints must be step counts >= 1, got {list(checkpoints)}")
    if eps == 0:
        return [x.copy() for _ in checkpoints]
    steps = max(checkpoints)
    core = make_pgd(classifier, eps, steps, step_fraction, random_init, batch_size)._attack  # noqa: SLF001
    core._projection = linf_projection  # noqa: SLF001 - ART's values, in float32
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


_Values = typing.TypeVar("_Values", torch.Tensor, np.ndarray)


def linf_projection(
    values: _Values, eps: float, norm_p: float | str, *, suboptimal: bool = True
) -> _Values:
    """ART's L-inf projection (each pixel of a float32 perturbation clipped to [-eps, eps]) in
    float32: for PGD's `_projection` (torch) and APGD's `art.utils.projection` (NumPy).

    Why: ART broadcasts a scalar eps to the batch's full shape in float64 and computes
    sign(v) * min(|v|, eps) there, then casts back: several passes over the batch a step, a third
    of ART's overhead over a plain PGD loop (bench/attack_throughput.py). Clamping the float32
    values to float32(eps) gives the same values, since no float32 lies strictly between eps and
    its float32 rounding (only a zero's sign may differ, which adding the image erases); the tests
    check it against ART's projections and the PGD and APGD images against ART's own runs.
    """
    if norm_p not in (np.inf, "inf") or np.ndim(eps) != 0:
        raise ValueError(f"linf_projection needs the L-inf norm and a scalar eps, got {norm_p}")
    bound = float(np.float32(eps))
    if isinstance(values, torch.Tensor):
        return values.clamp(-bound, bound)
    return np.clip(values, -bound, bound)


def detector_aware_pgd(
    autoencoder: nn.Module,
    cnn: nn.Module,
    threshold: float,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    params: AttackParams,
    steps: int,
    lam: float,
    *,
    device: str | torch.device,
    seed: int | None = None,
) -> np.ndarray:
    """PGD (ART) that flips the CNN while keeping the AE's reconstruction error under `threshold`.

    Carlini & Wagner 2017 ("Adversarial examples are not easily detected"): the attacker knows the
    detector and ascends CE(cnn(x'), y) - lam * max(0, err(x') / threshold - 1), so any excess of
    the reconstruction error over the detector's threshold costs loss (plus a small pull towards
    lower error throughout, so images under the threshold keep a margin).
    """
    if threshold <= 0:
        raise PipelineError(f"detector threshold must be > 0, got {threshold}")
    model = DetectorAware(autoencoder, cnn, threshold)
    nb_classes = int(cnn(torch.from_numpy(x[:1]).to(device)).shape[1])
    # any loss other than cross-entropy gets one-hot targets from ART (read by EvadeLoss)
    classifier = make_art_classifier(model, x.shape[1:], nb_classes, device, loss=EvadeLoss(lam))
    adv = pgd(
        classifier, x, y, eps, steps, params.pgd_step_fraction, params.pgd_random_init,
        params.batch_size, seed=seed,
    )  # fmt: skip
    check_perturbation(x, adv, eps, f"detector-aware pgd eps={eps:g}")
    return adv
