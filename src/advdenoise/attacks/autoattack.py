"""AutoAttack's pair through ART: APGD-CE and the gradient-free Square Attack.

Both run ART's attack classes (parameter checks, estimators) with their `generate` loops
re-expressed, the same images bit for bit at a fraction of the host time: `_DeviceAPGD`
and `_LinfSquare`. ART's private member used here, SquareAttack's schedule
`_get_percentage_of_elements`, and the loops' parity with ART's own runs are pinned by tests in
tests/test_robustness.py (test_apgd_equals_arts_own_run, test_square_equals_arts_own_run).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
from art.estimators.classification import PyTorchClassifier
from art.utils import check_and_transform_label_format, random_sphere
from torch import nn

from advdenoise.attacks.estimator import (
    check_inputs,
    input_gradients_only,
    seeded,
)
from advdenoise.attacks.gradient import linf_projection


def apgd(
    classifier: PyTorchClassifier,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    steps: int,
    restarts: int,
    batch_size: int,
    *,
    seed: int | None = None,
) -> np.ndarray:
    """Untargeted L-inf APGD with the cross-entropy loss (ART `AutoProjectedGradientDescent`).

    Croce & Hein 2020: step size adapted per image (first step 2 * eps, as in AutoAttack), momentum,
    `restarts` random starts, each on the images still classified correctly. The DLR loss is not
    offered: it needs at least three classes. ART's loop runs as `_DeviceAPGD` (the same images
    bit for bit, one model pass per step, the iterates on the model's device).
    """
    check_inputs(x, y, eps, batch_size)
    return _run_apgd(_DeviceAPGD, np.inf, classifier, x, y, eps, steps, restarts, batch_size, seed)


def apgd_l2(
    classifier: PyTorchClassifier,
    x: np.ndarray,
    y: np.ndarray,
    radius: float,
    steps: int,
    restarts: int,
    batch_size: int,
    *,
    seed: int | None = None,
) -> np.ndarray:
    """Untargeted L2 APGD-CE within `radius` (ART `AutoProjectedGradientDescent`, norm 2): the
    threat model of randomized smoothing's certified radii. First step 2 * radius (AutoAttack's);
    ART's own loop (the re-expressed `_DeviceAPGD` is L-inf only)."""
    check_inputs(x, y, radius, batch_size, max_eps=math.inf)
    return _run_apgd(
        AutoProjectedGradientDescent, 2, classifier, x, y, radius, steps, restarts, batch_size, seed
    )


def _run_apgd(
    attack_class: type[AutoProjectedGradientDescent],
    norm: float,
    classifier: PyTorchClassifier,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    steps: int,
    restarts: int,
    batch_size: int,
    seed: int | None,
) -> np.ndarray:
    """APGD-CE, untargeted, first step 2 * eps (AutoAttack's), seeded; nothing to do at eps 0."""
    if eps == 0 or len(x) == 0:
        return x.copy()
    attack = attack_class(
        classifier,
        norm=norm,
        eps=float(eps),
        eps_step=float(2 * eps),
        max_iter=int(steps),
        targeted=False,
        nb_random_init=int(restarts),
        batch_size=int(batch_size),
        loss_type="cross_entropy",
        verbose=False,
    )
    with seeded(seed), input_gradients_only(classifier.model):
        adv = attack.generate(x=x, y=np.eye(classifier.nb_classes, dtype=np.float32)[y])
    return np.asarray(adv, dtype=np.float32)


def _plain_model(estimator: PyTorchClassifier) -> tuple[torch.device, nn.Module]:
    """The estimator's device and its model in eval mode, which the re-expressed loops call
    themselves: so ART's estimator must not pre- or postprocess (`make_art_classifier`'s do not)."""
    if estimator.preprocessing_operations or estimator.postprocessing_defences:
        raise ValueError("the re-expressed ART loops need an estimator without pre/postprocessing")
    return estimator.device, estimator.model.eval()


def _on(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Row indices (NumPy) as an index tensor on `device`."""
    return torch.from_numpy(rows).to(device)


def _where(rows: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per image (the first axis): `new` where `rows`, else `old` (ART's masked assignments)."""
    return torch.where(rows.view(-1, *([1] * (new.dim() - 1))), new, old)


class _DeviceAPGD(AutoProjectedGradientDescent):
    """ART's AutoProjectedGradientDescent (L-inf, untargeted, cross-entropy) with its loop
    re-expressed in torch on the model's device: the same random starts (NumPy's global
    generator), the same float32 arithmetic in the same order, the same images bit for bit
    (tests/test_robustness.py checks them against ART's own run). ART's parameter checks and its
    CE-loss copy of the estimator (whose model, device and predictions the loop uses) are its
    own; the schedule of step-size checkpoints, local to ART's `generate`, is `_checkpoints`.

    Two costs of ART's loop go (bench/host_floor.py):
    - ART steps in NumPy on the host, copying each batch's iterates several times a step and
      sending them to the device and back twice; here they stay on the device, so a GPU is not
      left waiting for the host.
    - ART asks the model for passes it has already run: the gradient at its next iterate one step
      after the loss there, the loss at its start point after the gradient there, after a
      checkpoint the gradient at each moved image's best point (computed when it was there), and
      the predictions at its last iterate. Here each iterate is evaluated once: its per-image
      losses and (from the same graph) the gradient of their mean, as ART's `loss_gradient`
      computes it; each image keeps the gradient and scores at its best point. In eval mode an
      image's results do not depend on the others in its batch, so they are ART's bits.
    """

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: object) -> np.ndarray:
        if x.ndim != 4 or x.dtype != np.float32 or y is None or kwargs:
            raise ValueError("_DeviceAPGD takes float32 images N x C x H x W and one-hot labels")
        if self.norm not in (np.inf, "inf") or self.targeted:
            raise ValueError("_DeviceAPGD runs the untargeted L-inf attack only")
        labels = check_and_transform_label_format(y, nb_classes=self.estimator.nb_classes)
        device, model = _plain_model(self.estimator)
        clip_lo, clip_hi = self.estimator.clip_values
        x_adv = x.copy()
        for _ in range(max(1, self.nb_random_init)):
            robust = np.argmax(self.estimator.predict(x_adv), axis=1) == np.argmax(labels, axis=1)
            if not robust.any():
                break
            x_init, y_robust = x[robust], labels[robust]
            n, m = len(x_init), int(np.prod(x.shape[1:]))
            start = x_adv[robust] + random_sphere(n, m, self.eps, self.norm).reshape(
                x_init.shape
            ).astype(np.float32)
            start = np.clip(start, clip_lo, clip_hi)
            start = x_init + linf_projection(start - x_init, self.eps, self.norm)
            for first in range(0, n, self.batch_size):
                rows = slice(first, first + self.batch_size)
                x_k, fooled = self._attack_batch(
                    device, model, start[rows], x_init[rows], y_robust[rows]
                )
                start[rows][fooled] = x_k[fooled]
            x_adv[robust] = start
        return x_adv

    def _checkpoints(self) -> list[int]:
        """ART's iterations at which the step size may halve (Croce & Hein's p_j schedule)."""
        w = [0.0, 0.22]
        while (p := w[-1] + max(w[-1] - w[-2] - 0.03, 0.06)) <= 1:
            w.append(p)
        return [math.ceil(p * self.max_iter) for p in w]

    def _attack_batch(
        self,
        device: torch.device,
        model: nn.Module,
        start: np.ndarray,
        x_init_np: np.ndarray,
        y: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """ART's loop over one batch: the last iterate, and which images it misclassifies."""
        lo, hi = (float(v) for v in self.estimator.clip_values)
        labels = torch.from_numpy(np.argmax(y, axis=1)).to(device)
        x_init = torch.from_numpy(x_init_np).to(device)
        x_k = torch.from_numpy(start).to(device)
        n = len(x_k)

        def evaluate(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """One forward pass: the leaf input, the logits and the per-image losses (ART's CE)."""
            leaf = point.detach().requires_grad_(True)
            logits = model(leaf)
            return leaf, logits, nn.functional.cross_entropy(logits, labels, reduction="none")

        def gradient(leaf: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
            """The gradient of the batch's mean loss, as ART's `loss_gradient`."""
            losses.mean().backward()
            if leaf.grad is None:
                raise ValueError("Gradient term in PyTorch model is `None`.")
            return leaf.grad

        def project(point: torch.Tensor) -> torch.Tensor:
            """ART's clip to the valid range, then projection onto the eps-ball around x_init."""
            return x_init + linf_projection(point.clamp(lo, hi) - x_init, self.eps, self.norm)

        checkpoints = self._checkpoints()
        eta = torch.full((n, 1, 1, 1), self.eps_step, dtype=torch.float32, device=device)
        count = torch.zeros(n, dtype=torch.float64, device=device)
        # iteration 0: the gradient at the start, one step, the loss at both points
        leaf, logits, losses = evaluate(x_k)
        grad, f_0 = gradient(leaf, losses), losses.detach()
        x_1 = project(x_k + eta * grad.sign())
        best_grad, best_scores = grad, logits.detach()
        leaf, logits, losses = evaluate(x_1)
        f_1 = losses.detach()
        up = f_1 >= f_0
        f_max = torch.where(up, f_1, f_0)
        x_max, x_max_m_1 = _where(up, x_1, x_k), x_init
        best_scores = _where(up, logits.detach(), best_scores)
        count += up
        eta_w, f_max_w = eta, f_0
        x_k_m_1, x_k = x_k, x_1
        moved = torch.zeros(n, dtype=torch.bool, device=device)
        for k in range(1, self.max_iter):
            # the gradient at x_k: the last pass's, or the best point's for images moved there
            grad = gradient(leaf, losses)
            best_grad = _where(up, grad, best_grad)
            grad = _where(moved & ~up, best_grad, grad)
            z = project(x_k + eta * grad.sign())
            x_next = project(x_k + 0.75 * (z - x_k) + 0.25 * (x_k - x_k_m_1))
            leaf, logits, losses = evaluate(x_next)
            f = losses.detach()
            moved = torch.zeros_like(moved)
            if bool((f == 0.0).all()):
                x_k = x_next
                break
            up = f > f_max
            count += up
            x_max, x_max_m_1 = _where(up, x_next, x_max), _where(up, x_k, x_max_m_1)
            f_max, best_scores = torch.where(up, f, f_max), _where(up, logits.detach(), best_scores)
            x_k_m_1, x_k = x_k, x_next
            if k in checkpoints:
                since = k - checkpoints[checkpoints.index(k) - 1]
                moved = (count < 0.75 * since) | ((eta_w == eta).view(n) & (f_max_w == f_max))
                eta = _where(moved, eta / 2, eta)
                x_k, x_k_m_1 = _where(moved, x_max, x_k), _where(moved, x_max_m_1, x_k_m_1)
                count.zero_()
                eta_w, f_max_w = eta, f_max
        scores = _where(moved & ~up, best_scores, logits.detach())
        fooled = np.argmax(scores.cpu().numpy(), axis=1) != np.argmax(y, axis=1)
        return x_k.detach().cpu().numpy(), fooled


def square(
    classifier: PyTorchClassifier,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    queries: int,
    p_init: float,
    batch_size: int,
    *,
    seed: int | None = None,
) -> np.ndarray:
    """Untargeted L-inf Square Attack (ART `SquareAttack`, Andriushchenko et al. 2020).

    Gradient-free (scores only, `queries` iterations of random square updates): a defence that
    masks gradients (BPDA-style or shattered) cannot hide from it, so a Square accuracy below the
    white-box one is a red flag for the white-box evaluation. One restart; ART's loop runs as
    `_LinfSquare` (the same images bit for bit, a fraction of the host time).
    """
    check_inputs(x, y, eps, batch_size)
    if eps == 0 or len(x) == 0:
        return x.copy()
    attack = _LinfSquare(classifier, float(eps), int(queries), float(p_init), int(batch_size))
    with seeded(seed), torch.no_grad():
        adv = attack.generate(x=x, y=np.eye(classifier.nb_classes, dtype=np.float32)[y])
    return np.asarray(adv, dtype=np.float32)


def _logits_diff(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ART SquareAttack's loss (`_get_logits_diff`) from scores already computed: the logit of
    the true class minus the highest other one (the second highest in ART's argsort)."""
    correct = np.take_along_axis(scores, np.argmax(y, axis=1)[:, None], axis=1)
    runner_up = np.take_along_axis(scores, np.argsort(scores, axis=1)[:, -2][:, None], axis=1)
    return (correct - runner_up)[:, 0]


class _LinfSquare(SquareAttack):
    """ART's SquareAttack (L-inf, one restart) with its `generate` loop re-expressed in torch on
    the model's device: the same draws from NumPy's global generator in the same order, the same
    arithmetic, the same images bit for bit (tests/test_robustness.py checks them against ART's
    own run). ART's schedule of square sizes (`_get_percentage_of_elements`), its loss and its
    success test (`adv_criterion`) are its own, and run in NumPy on the scores, as in ART.

    Three costs of ART's loop go, all on the host and growing with the image (bench/host_floor.py):
    - ART keeps the images on the host and sends every batch of candidates to the model's device;
      here they stay on the device, and only their scores (a few numbers each) come back.
    - ART scores every image's current iterate twice an iteration (the robustness test and the
      loss) and then the candidates, the only new inputs; here the scores of the iterates are kept
      (in eval mode a row's scores do not depend on its batch), so the model sees each candidate
      once and nothing is hashed or looked up.
    - ART builds each candidate in float64 over the whole image: the iterate plus a delta that is
      zero outside one square, clamped to the eps-ball and the clip values. Outside the square
      that is the clamp of float32 values, which float32 computes exactly; it is kept for every
      image (a kept candidate is its own clamp), so only the square is computed per iteration.
    """

    def __init__(
        self,
        estimator: PyTorchClassifier,
        eps: float,
        max_iter: int,
        p_init: float,
        batch_size: int,
    ) -> None:
        super().__init__(
            estimator,
            norm=np.inf,
            eps=eps,
            max_iter=max_iter,
            p_init=p_init,
            nb_restarts=1,
            batch_size=batch_size,
            verbose=False,
        )

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: object) -> np.ndarray:
        if x.ndim != 4 or x.dtype != np.float32 or y is None or kwargs:
            raise ValueError("_LinfSquare takes float32 images N x C x H x W and one-hot labels")
        labels = check_and_transform_label_format(y, nb_classes=self.estimator.nb_classes)
        device, model = _plain_model(self.estimator)
        clip_lo, clip_hi = self.estimator.clip_values
        _, channels, height, width = x.shape

        def predict(images: torch.Tensor) -> np.ndarray:
            """ART's `predict` (batches of batch_size, float32 scores) of images on the device."""
            return np.concatenate(
                [
                    model(part).cpu().numpy().astype(np.float32)
                    for part in images.split(self.batch_size)
                ]
            )

        x_t = torch.from_numpy(x).to(device)
        x_adv = x_t.clone()
        scores = predict(x_adv)

        def keep_better(rows: np.ndarray, new: torch.Tensor) -> np.ndarray:
            """ART's update: a candidate replaces the iterate where it lowers the loss."""
            new_scores, y_rows = predict(new), labels[rows]
            better = (_logits_diff(new_scores, y_rows) - _logits_diff(scores[rows], y_rows)) < 0.0
            x_adv[_on(rows[better], device)] = new[_on(np.flatnonzero(better), device)]
            scores[rows[better]] = new_scores[better]
            return rows[better]

        def robust_rows() -> np.ndarray:
            return np.flatnonzero(np.logical_not(self.adv_criterion(scores, labels)))

        rows = robust_rows()
        if len(rows) == 0:
            return x.copy()
        # ART's first step: vertical stripes of +-eps
        stripes = np.random.choice([-1, 1], size=(len(rows), channels, 1, width))  # noqa: NPY002
        new = np.clip(x[rows] + self.eps * stripes, a_min=clip_lo, a_max=clip_hi)
        keep_better(rows, torch.from_numpy(new.astype(np.float32)).to(device))

        lower, upper = x_t - self.eps, x_t + self.eps  # float32, as ART's `x_init -/+ self.eps`
        lo, hi = float(clip_lo), float(clip_hi)
        clamped = torch.minimum(torch.maximum(x_adv, lower), upper).clamp(lo, hi)
        for i_iter in range(self.max_iter):
            fraction = self._get_percentage_of_elements(i_iter)
            rows = robust_rows()
            if len(rows) == 0:
                break
            side = max(int(round(math.sqrt(fraction * height * width))), 1)
            top = np.random.randint(0, height - side)  # noqa: NPY002
            left = np.random.randint(0, width - side)  # noqa: NPY002
            step = np.random.choice([-2 * self.eps, 2 * self.eps], size=[channels, 1, 1])  # noqa: NPY002
            sq = (slice(None), slice(None), slice(top, top + side), slice(left, left + side))
            at = _on(rows, device)
            inside = torch.maximum(  # float64, as ART
                x_adv[sq][at] + torch.from_numpy(step).to(device), lower[sq][at]
            )
            inside = torch.minimum(inside, upper[sq][at]).clamp(lo, hi)
            new = clamped[at]
            new[sq] = inside  # rounded to float32, as ART's astype
            kept = _on(keep_better(rows, new), device)
            clamped[kept] = x_adv[kept]
        return x_adv.cpu().numpy()
