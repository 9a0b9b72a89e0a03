"""Classification, calibration and image-quality metrics, and the perturbation-bound check.

Conventions: inputs are NumPy arrays or torch tensors (converted with `as_numpy`, never kept on a
GPU); labels are int class indices; the positive class for precision/recall/F1/ROC is label 1
("COVID") unless `positive` says otherwise. Metrics of an empty set raise PipelineError instead of
returning NaN; a precision or recall whose denominator is zero (no predicted / no actual positives)
is 0.0, as in scikit-learn's `zero_division=0`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from advdenoise.core.errors import PipelineError

ECE_BINS = 15
PSNR_MAX_DB = 100.0  # PSNR of identical images (MSE 0) is reported as this instead of infinity


def as_numpy(a: Any, dtype: Any = None) -> np.ndarray:
    """Tensor (any device) or array-like -> NumPy array (optionally cast)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    return a.astype(dtype, copy=False) if dtype is not None else a


def _nonempty(n: int, what: str) -> None:
    if n == 0:
        raise PipelineError(f"cannot compute {what} of an empty set")


def softmax(logits: Any) -> np.ndarray:
    """Row-wise softmax in float64 (numerically stable)."""
    z = as_numpy(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(y_true: Any, y_pred: Any) -> float:
    y_true, y_pred = as_numpy(y_true), as_numpy(y_pred)
    _nonempty(len(y_true), "accuracy")
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """K x K counts, rows = actual class, columns = predicted class."""
    y_true, y_pred = as_numpy(y_true, np.int64), as_numpy(y_pred, np.int64)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def precision_recall_f1(y_true: Any, y_pred: Any, positive: int = 1) -> tuple[float, float, float]:
    """Precision, recall and F1 of the `positive` class (0.0 where a denominator is zero)."""
    y_true, y_pred = as_numpy(y_true), as_numpy(y_pred)
    _nonempty(len(y_true), "precision/recall")
    tp = int(np.sum((y_pred == positive) & (y_true == positive)))
    fp = int(np.sum((y_pred == positive) & (y_true != positive)))
    fn = int(np.sum((y_pred != positive) & (y_true == positive)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return float(precision), float(recall), float(f1)


def roc_auc(y_true: Any, scores: Any, positive: int = 1) -> float:
    """Area under the ROC curve of `scores` (higher = more positive); needs both classes present."""
    from sklearn.metrics import roc_auc_score

    y = as_numpy(y_true) == positive
    if y.all() or not y.any():
        raise PipelineError("ROC AUC needs both positive and negative examples in the test set")
    return float(roc_auc_score(y, as_numpy(scores, np.float64)))


def roc_curve(
    y_true: Any, scores: Any, positive: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, threshold); the leading threshold (sklearn's +inf, 'predict nothing') is 1.0."""
    from sklearn.metrics import roc_curve as _roc

    y = as_numpy(y_true) == positive
    if y.all() or not y.any():
        raise PipelineError("the ROC curve needs both positive and negative examples")
    fpr, tpr, thr = _roc(y, as_numpy(scores, np.float64), drop_intermediate=True)
    thr = np.where(np.isfinite(thr), thr, 1.0)
    return fpr, tpr, thr


def entropy(probs: Any) -> np.ndarray:
    """Predictive entropy (nats) of each row of a probability matrix."""
    p = as_numpy(probs, np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)


def reliability_bins(
    probs: Any, y_true: Any, n_bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin (lo, hi]: (bin_upper, mean confidence, accuracy, count).

    Confidence = max class probability, prediction = its argmax. Empty bins have count 0 and
    confidence/accuracy 0 (drop them before plotting).
    """
    p = as_numpy(probs, np.float64)
    y = as_numpy(y_true, np.int64)
    _nonempty(len(y), "calibration")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds conf in (edges[i], edges[i+1]]; conf 0 cannot occur for a probability maximum
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    safe = np.maximum(count, 1)
    mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / safe
    acc = np.bincount(idx, weights=correct, minlength=n_bins) / safe
    return edges[1:], mean_conf, acc, count


def expected_calibration_error(probs: Any, y_true: Any, n_bins: int = ECE_BINS) -> float:
    """ECE = sum_b |B_b| / n * |accuracy(B_b) - confidence(B_b)| over equal-width bins."""
    _, conf, acc, count = reliability_bins(probs, y_true, n_bins)
    return float(np.sum(count / count.sum() * np.abs(acc - conf)))


def classification_metrics(logits: Any, y_true: Any, positive: int = 1) -> dict[str, float]:
    """Every headline classification number from logits [N, K] and labels [N]."""
    probs = softmax(logits)
    y = as_numpy(y_true, np.int64)
    pred = probs.argmax(axis=1)
    acc = accuracy(y, pred)
    precision, recall, f1 = precision_recall_f1(y, pred, positive)
    return {
        "accuracy": acc,
        "top1_error": 1.0 - acc,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(y, probs[:, positive], positive),
        "ece": expected_calibration_error(probs, y),
        "mean_entropy": float(entropy(probs).mean()),
    }


# --------------------------------------------------------------------------- image quality


def mse(reference: Any, estimate: Any) -> float:
    """Mean squared error over all pixels (images in [0, 1])."""
    a, b = as_numpy(reference, np.float64), as_numpy(estimate, np.float64)
    if a.shape != b.shape:
        raise PipelineError(f"mse: shapes differ {a.shape} vs {b.shape}")
    _nonempty(a.size, "mse")
    return float(np.mean((a - b) ** 2))


def psnr(reference: Any, estimate: Any, data_range: float = 1.0) -> float:
    """Mean over images of per-image PSNR in dB (10 log10(range^2 / MSE_i)); capped at PSNR_MAX_DB.

    Inputs are N x ... image stacks (a single image is one item of a stack of one).
    """
    a, b = as_numpy(reference, np.float64), as_numpy(estimate, np.float64)
    if a.shape != b.shape:
        raise PipelineError(f"psnr: shapes differ {a.shape} vs {b.shape}")
    _nonempty(a.size, "psnr")
    per_image = np.mean((a - b).reshape(len(a), -1) ** 2, axis=1)
    floor = data_range**2 / 10 ** (PSNR_MAX_DB / 10)
    return float(np.mean(10 * np.log10(data_range**2 / np.maximum(per_image, floor))))


def ssim(
    reference: Any,
    estimate: Any,
    data_range: float = 1.0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> float:
    """Mean structural similarity of N x 1 x H x W stacks (Gaussian window 11, sigma 1.5, 'valid').

    The standard Wang et al. (2004) definition with K1 = 0.01, K2 = 0.03, in float64. The Gaussian
    window is separable, so each local mean is a column pass then a row pass (2 x 11 taps instead
    of 121: 5x less arithmetic for the same sums up to float64 rounding).
    """
    a = torch.as_tensor(as_numpy(reference, np.float32))
    b = torch.as_tensor(as_numpy(estimate, np.float32))
    if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 1:
        raise PipelineError(f"ssim needs equal N x 1 x H x W stacks, got {a.shape} vs {b.shape}")
    _nonempty(len(a), "ssim")
    size = min(11, a.shape[-1], a.shape[-2])
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = (g / g.sum()).to(device)
    column, row = g.view(1, 1, size, 1), g.view(1, 1, 1, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.conv2d(torch.conv2d(t, column), row)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(a), batch_size):
            x = a[s : s + batch_size].to(device, torch.float64)
            y = b[s : s + batch_size].to(device, torch.float64)
            mx, my = blur(x), blur(y)
            sxx = blur(x * x) - mx**2
            syy = blur(y * y) - my**2
            sxy = blur(x * y) - mx * my
            num = (2 * mx * my + c1) * (2 * sxy + c2)
            den = (mx**2 + my**2 + c1) * (sxx + syy + c2)
            total += float((num / den).mean(dim=(1, 2, 3)).sum())
    return total / len(a)


# --------------------------------------------------------------------------- perturbations
