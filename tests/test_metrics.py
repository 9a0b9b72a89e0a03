"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from advdenoise.core.errors import PipelineError
from advdenoise.evaluation import metrics

# 6 images, label 1 positive. Probabilities of class 1:
P1 = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.45])
Y = np.array([1, 1, 1, 0, 0, 0])
PROBS = np.stack([1 - P1, P1], axis=1)
LOGITS = np.log(PROBS)  # softmax(log p) = p


def test_confusion_precision_recall_f1() -> None:
    pred = (P1 > 0.5).astype(int)  # [1, 1, 0, 1, 0, 0]: TP 2, FN 1, FP 1, TN 2
    cm = metrics.confusion_matrix(Y, pred, 2)
    assert cm.tolist() == [[2, 1], [1, 2]]  # rows actual, columns predicted
    precision, recall, f1 = metrics.precision_recall_f1(Y, pred)
    assert precision == pytest.approx(2 / 3)
    assert recall == pytest.approx(2 / 3)
    assert f1 == pytest.approx(2 / 3)
    assert metrics.accuracy(Y, pred) == pytest.approx(4 / 6)


def test_zero_division_is_zero_not_nan() -> None:
    assert metrics.precision_recall_f1([0, 1], [0, 0]) == (0.0, 0.0, 0.0)


def test_ece_hand_computed() -> None:
    # confidences (max prob): 0.9, 0.8, 0.7, 0.6, 0.8, 0.55; correct: 1, 1, 0, 1, 1, 0
    # 15 bins of width 1/15: 0.9 -> bin 13, 0.8 (x2) -> bin 11, 0.7 -> bin 10, 0.6 -> bin 8,
    # 0.55 -> bin 8. Bin 8: conf 0.575, acc 0.5; bin 10: 0.7 vs 0; bin 11: 0.8 vs 1; bin 13: 0.9 vs 1
    expected = (2 * 0.075 + 1 * 0.7 + 2 * 0.2 + 1 * 0.1) / 6
    assert metrics.expected_calibration_error(PROBS, Y) == pytest.approx(expected)
    _, conf, acc, count = metrics.reliability_bins(PROBS, Y)
    assert count.sum() == 6 and count[8] == 2 and count[11] == 2
    assert conf[8] == pytest.approx(0.575) and acc[8] == pytest.approx(0.5)


def test_ece_of_perfect_calibration_is_zero() -> None:
    probs = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert metrics.expected_calibration_error(probs, [1, 0]) == 0.0


def test_classification_metrics_from_logits() -> None:
    m = metrics.classification_metrics(torch.tensor(LOGITS, dtype=torch.float32), torch.tensor(Y))
    assert m["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    assert m["top1_error"] == pytest.approx(2 / 6, abs=1e-6)
    # AUC: positive scores {0.9, 0.8, 0.3} vs negative {0.6, 0.2, 0.45}: 7 of 9 pairs ordered
    assert m["roc_auc"] == pytest.approx(7 / 9)
    ent = -np.sum(PROBS * np.log(PROBS), axis=1).mean()
    assert m["mean_entropy"] == pytest.approx(ent, rel=1e-5)
    assert all(math.isfinite(v) for v in m.values())


def test_roc_needs_both_classes_and_has_finite_thresholds() -> None:
    with pytest.raises(PipelineError, match="both"):
        metrics.roc_auc([1, 1], [0.2, 0.3])
    fpr, tpr, thr = metrics.roc_curve(Y, P1)
    assert np.isfinite(thr).all() and thr.max() <= 1.0
    assert fpr[0] == 0 and tpr[-1] == 1


def test_empty_set_is_an_error() -> None:
    with pytest.raises(PipelineError, match="empty"):
        metrics.accuracy([], [])


def test_mse_psnr_ssim() -> None:
    a = np.zeros((2, 1, 16, 16), dtype=np.float32)
    b = a.copy()
    b[0] += 0.1  # image 0: MSE 0.01 -> 20 dB; image 1 identical -> capped at 100 dB
    assert metrics.mse(a, b) == pytest.approx(0.005)
    assert metrics.psnr(a, b) == pytest.approx((20.0 + metrics.PSNR_MAX_DB) / 2)
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 32, 32)).astype(np.float32)
    noisy = np.clip(x + rng.normal(0, 0.3, x.shape), 0, 1)
    assert metrics.ssim(x, noisy) < 0.9
