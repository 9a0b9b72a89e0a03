"""AutoAttack's pair through ART: APGD-CE and the gradient-free Square Attack.

ART's private members used here, each pinned by a test in tests/test_robustness.py:
`PyTorchClassifier._model`, `._loss`, `._device` and the class of APGD's own estimator (APGD's
requests answered from the passes it already ran, `_ReusedPasses`), and the `projection` that
APGD's module imports (float32 projection, swapped for the call), and SquareAttack's schedule
`_get_percentage_of_elements` with its loop re-expressed (`_LinfSquare`):
test_apgd_with_one_forward_per_step_equals_arts_own_run,
test_reused_passes_serve_moved_rows_from_their_best_point, test_square_equals_arts_own_run,
tests/test_attacks.py::test_linf_projection_equals_arts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from unittest import mock

import numpy as np
import torch
from art.attacks.evasion import (
    AutoProjectedGradientDescent,
    SquareAttack,
    auto_projected_gradient_descent,
)
from art.estimators.classification import PyTorchClassifier
from art.utils import check_and_transform_label_format

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
    offered: it needs at least three classes.
    """
    check_inputs(x, y, eps, batch_size)
    if eps == 0 or len(x) == 0:
        return x.copy()
    attack = AutoProjectedGradientDescent(
        classifier,
        norm=np.inf,
        eps=float(eps),
        eps_step=float(2 * eps),
        max_iter=int(steps),
        targeted=False,
        nb_random_init=int(restarts),
        batch_size=int(batch_size),
        loss_type="cross_entropy",
        verbose=False,
    )
    if type(attack.estimator) is PyTorchClassifier:  # ART's own CE-loss copy of the classifier
        attack.estimator.__class__ = _ReusedPasses
    with (
        seeded(seed),
        input_gradients_only(classifier.model),
        mock.patch.object(auto_projected_gradient_descent, "projection", linf_projection),
    ):
        adv = attack.generate(x=x, y=y.astype(np.int64))
    return np.asarray(adv, dtype=np.float32)


@dataclasses.dataclass
class _Pass:
    """One forward pass of `_ReusedPasses`: its inputs, labels, per-image losses and scores
    (logits), and its autograd graph (`logits` from `x_grad`) until a backward pass uses it."""

    x: np.ndarray
    y: np.ndarray
    losses: np.ndarray
    scores: np.ndarray
    logits: torch.Tensor
    labels: torch.Tensor
    x_grad: torch.Tensor | None


@dataclasses.dataclass
class _Best:
    """Per position of the batch, the highest-loss point that had its gradient computed."""

    x: np.ndarray
    y: np.ndarray
    losses: np.ndarray
    scores: np.ndarray
    grads: np.ndarray


def _same_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row by row, whether two arrays hold the same bits (so -0.0 differs from 0.0)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return np.zeros(len(a), dtype=bool)
    width = {8: np.uint64, 4: np.uint32, 2: np.uint16, 1: np.uint8}[a.dtype.itemsize]
    bits_a = np.ascontiguousarray(a).view(width).reshape(len(a), -1)
    return np.asarray((bits_a == np.ascontiguousarray(b).view(width).reshape(len(b), -1)).all(1))


class _ReusedPasses(PyTorchClassifier):
    """A PyTorchClassifier that answers APGD's repeated requests from the passes it already ran.

    ART's APGD asks again for passes it has paid for: the gradient at its next iterate, one step
    after evaluating the loss there; the loss at its start point, right after the gradient there;
    after a step-size checkpoint, the gradient at each moved image's best point, computed when
    the image was there; and the predictions at its last iterate, whose loss it has evaluated.
    Here each forward pass keeps its logits, per-image losses and (until a backward pass uses
    it) its graph, and each position of the batch keeps the gradient at its highest-loss point.
    A request is answered from them only for rows whose images and labels hold the same bits as
    the ones those passes ran on, in a batch of the same shape; anything else runs a full pass
    as ART's estimator would. In eval mode the rows of a batch do not interact, so the answers
    are ART's bits (tests/test_robustness.py checks APGD's images against ART's own run).
    """

    _pass: _Pass | None = None
    _best: _Best | None = None

    def _plain(self, x: object, kwargs: dict[str, object]) -> bool:
        return isinstance(x, np.ndarray) and not kwargs and not self.preprocessing_operations

    def _forward(self, x: np.ndarray, y: np.ndarray) -> _Pass:
        """ART's forward pass of `loss_gradient`, keeping the graph and the per-image losses."""
        self._model.eval()  # noqa: SLF001
        labels = self.reduce_labels(check_and_transform_label_format(y, self.nb_classes))
        x_grad = torch.tensor(x).to(self._device).requires_grad_(True)  # noqa: SLF001
        labels_t = torch.from_numpy(labels).to(self._device)  # noqa: SLF001
        logits = self._model(x_grad)[-1]  # noqa: SLF001
        loss = self._loss  # noqa: SLF001 - ART's loss object, reduction switched as ART does
        previous, loss.reduction = loss.reduction, "none"
        losses = loss(logits, labels_t).detach().cpu().numpy()
        loss.reduction = previous
        scores = logits.detach().cpu().numpy().astype(np.float32)  # as ART's predict
        self._pass = _Pass(x.copy(), y.copy(), losses, scores, logits, labels_t, x_grad)
        return self._pass

    def compute_loss(  # type: ignore[override]
        self, x: np.ndarray, y: np.ndarray, reduction: str = "none", **kwargs: object
    ) -> np.ndarray:
        if not self._plain(x, kwargs) or reduction != "none":
            self._pass = None
            return super().compute_loss(x, y, reduction=reduction, **kwargs)
        y = np.asarray(y)
        p = self._pass
        if p is None or not (_same_rows(x, p.x).all() and _same_rows(y, p.y).all()):
            p = self._forward(x, y)
        return p.losses.copy()

    def loss_gradient(  # type: ignore[override]
        self, x: np.ndarray, y: np.ndarray, training_mode: bool = False, **kwargs: object
    ) -> np.ndarray:
        if training_mode or not self._plain(x, kwargs):
            self._pass = None
            return super().loss_gradient(x, y, training_mode=training_mode, **kwargs)
        y = np.asarray(y)
        p, best = self._pass, self._best
        if best is not None and best.x.shape != x.shape:
            best = None  # another batch shape: its rows would not give ART's bits
        kept = np.zeros(len(x), dtype=bool)
        if p is not None and p.x_grad is not None:
            kept = _same_rows(x, p.x) & _same_rows(y, p.y)
        known = np.zeros(len(x), dtype=bool)
        if best is not None and not kept.all():
            known = ~kept & _same_rows(x, best.x) & _same_rows(y, best.y)
        new_batch = not (kept.any() or known.any())
        if not (kept | known).all():  # a full pass, as ART's
            p = self._forward(x, y)
            kept, known = np.ones(len(x), dtype=bool), np.zeros(len(x), dtype=bool)
        grads = np.empty_like(x)
        if kept.any():
            assert p is not None and p.x_grad is not None
            self._model.zero_grad()  # noqa: SLF001
            self._loss(p.logits, p.labels).backward()  # noqa: SLF001 - ART's loss and reduction
            if p.x_grad.grad is None:
                raise ValueError("Gradient term in PyTorch model is `None`.")
            grads[kept] = p.x_grad.grad.cpu().numpy()[kept]
            p.x_grad = None  # the graph is spent
        if best is not None:
            grads[known] = best.grads[known]
        if new_batch or best is None:
            assert p is not None
            self._best = _Best(x.copy(), y.copy(), p.losses.copy(), p.scores.copy(), grads.copy())
        elif kept.any():  # rows of the pass p, in a batch of best's shape
            assert p is not None
            better = kept & (p.losses > best.losses)
            best.x[better], best.y[better], best.grads[better] = x[better], y[better], grads[better]
            best.losses[better], best.scores[better] = p.losses[better], p.scores[better]
        return grads

    def predict(  # type: ignore[override]
        self, x: np.ndarray, batch_size: int = 128, training_mode: bool = False, **kwargs: object
    ) -> np.ndarray:
        p, best = self._pass, self._best
        if (
            training_mode
            or not self._plain(x, kwargs)
            or self.postprocessing_defences
            or p is None
            or len(x) > batch_size  # ART would split it into other batch shapes
        ):
            return super().predict(x, batch_size=batch_size, training_mode=training_mode, **kwargs)
        kept = _same_rows(x, p.x)  # all False unless the shapes match
        if kept.all():
            return p.scores.copy()
        if best is None or not (kept | _same_rows(x, best.x)).all():
            return super().predict(x, batch_size=batch_size, training_mode=training_mode, **kwargs)
        scores = best.scores.copy()
        scores[kept] = p.scores[kept]
        return scores


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
    """ART's SquareAttack (L-inf, one restart) with its `generate` loop re-expressed: the same
    draws from NumPy's global generator in the same order, the same arithmetic, the same images
    bit for bit (tests/test_robustness.py checks them against ART's own run). ART's schedule of
    square sizes (`_get_percentage_of_elements`) and success test (`adv_criterion`) are its own.

    Two costs of ART's loop go, both on the host and growing with the image (bench/host_floor.py):
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
        predict = functools.partial(self.estimator.predict, batch_size=self.batch_size)
        clip_lo, clip_hi = self.estimator.clip_values
        _, channels, height, width = x.shape
        x_adv = x.copy()
        scores = predict(x_adv)

        def keep_better(rows: np.ndarray, new: np.ndarray) -> np.ndarray:
            """ART's update: a candidate replaces the iterate where it lowers the loss."""
            new_scores, y_rows = predict(new), labels[rows]
            better = (_logits_diff(new_scores, y_rows) - _logits_diff(scores[rows], y_rows)) < 0.0
            x_adv[rows[better]], scores[rows[better]] = new[better], new_scores[better]
            return rows[better]

        def robust_rows() -> np.ndarray:
            return np.flatnonzero(np.logical_not(self.adv_criterion(scores, labels)))

        rows = robust_rows()
        if len(rows) == 0:
            return x_adv
        # ART's first step: vertical stripes of +-eps
        stripes = np.random.choice([-1, 1], size=(len(rows), channels, 1, width))  # noqa: NPY002
        new = np.clip(x[rows] + self.eps * stripes, a_min=clip_lo, a_max=clip_hi)
        keep_better(rows, new.astype(np.float32))

        lower, upper = x - self.eps, x + self.eps  # float32, as ART's `x_init -/+ self.eps`
        clamped = np.clip(np.minimum(np.maximum(x_adv, lower), upper), clip_lo, clip_hi)
        for i_iter in range(self.max_iter):
            fraction = self._get_percentage_of_elements(i_iter)
            rows = robust_rows()
            if len(rows) == 0:
                break
            side = max(int(round(math.sqrt(fraction * height * width))), 1)
            top = np.random.randint(0, height - side)  # noqa: NPY002
            left = np.random.randint(0, width - side)  # noqa: NPY002
            step = np.random.choice([-2 * self.eps, 2 * self.eps], size=[channels, 1, 1])  # noqa: NPY002
            sq = (slice(None), slice(top, top + side), slice(left, left + side))
            inside = np.maximum(x_adv[(rows, *sq)] + step, lower[(rows, *sq)])  # float64, as ART
            inside = np.clip(np.minimum(inside, upper[(rows, *sq)]), clip_lo, clip_hi)
            new = clamped[rows]
            new[(slice(None), *sq)] = inside  # rounded to float32, as ART's astype
            kept = keep_better(rows, new)
            clamped[kept] = x_adv[kept]
        return x_adv
