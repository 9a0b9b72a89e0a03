"""The MagNet-style reconstruction-error detector under oblivious and detector-aware PGD."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from advdenoise import attacks
from advdenoise.attacks.sets import AdversarialSets
from advdenoise.core.errors import PipelineError
from advdenoise.core.params import AttackParams, RobustnessParams
from advdenoise.core.seeding import eps_key, named_seed
from advdenoise.evaluation import metrics
from advdenoise.models.inference import batched_apply, predict_labels

DETECTOR_FPR = 0.05  # the detector's threshold flags this fraction of clean images


def reconstruction_errors(
    autoencoder: nn.Module, x: np.ndarray, batch_size: int, device: torch.device | str
) -> np.ndarray:
    """Per-image mean squared error between AE(x) and x (the MagNet-style detector's score)."""
    autoencoder.eval()

    def err(batch: torch.Tensor) -> torch.Tensor:
        return (autoencoder(batch) - batch).pow(2).flatten(1).mean(1)

    return batched_apply(err, torch.from_numpy(np.ascontiguousarray(x)), batch_size, device).numpy()


def _detection(
    clean_err: np.ndarray, adv_err: np.ndarray, fooled: np.ndarray, threshold: float
) -> dict[str, float]:
    flagged = adv_err > threshold
    scores = np.concatenate([clean_err, adv_err])
    labels = np.concatenate([np.zeros(len(clean_err)), np.ones(len(adv_err))])
    return {
        "auroc": metrics.roc_auc(labels, scores),
        f"tpr_at_{round(100 * DETECTOR_FPR)}fpr": float(flagged.mean()),
        "attack_success": float(fooled.mean()),
        "evasion_rate": float((fooled & ~flagged).mean()),  # fooled the CNN and not flagged
    }


def evaluate_detector(
    autoencoder: nn.Module,
    cnn: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    oblivious: AdversarialSets,
    attack: AttackParams,
    params: RobustnessParams,
    *,
    seed: int,
    device: torch.device | str,
) -> dict[str, float]:
    """The reconstruction-error detector (threshold at DETECTOR_FPR of clean images) under the
    oblivious PGD of the attack stage and under a detector-aware PGD, at params.detector_eps.

    Both on the images the CNN classifies correctly; evasion_rate = fraction that fool the CNN
    and stay under the threshold (what a detector-guarded CNN lets through).
    """
    bs, eps = attack.batch_size, params.detector_eps
    rows = np.flatnonzero(predict_labels(cnn, x, bs, device) == y)
    if len(rows) < 2:
        raise PipelineError("detector evaluation needs at least two correctly classified images")
    xa, ya = x[rows], y[rows]
    clean_err = reconstruction_errors(autoencoder, xa, bs, device)
    threshold = float(np.quantile(clean_err, 1 - DETECTOR_FPR))
    obl = oblivious.get("pgd", eps)[rows]
    ada = attacks.detector_aware_pgd(
        autoencoder, cnn, threshold, xa, ya, eps, attack, params.detector_steps,
        params.detector_lambda, device=device, seed=named_seed(seed, "robustness.detector", eps_key(eps)),
    )  # fmt: skip
    out: dict[str, float] = {"detector.eps": float(eps), "detector.threshold": threshold}
    for threat, adv in (("oblivious", obl), ("adaptive", ada)):
        fooled = predict_labels(cnn, adv, bs, device) != ya
        stats = _detection(
            clean_err, reconstruction_errors(autoencoder, adv, bs, device), fooled, threshold
        )
        out.update({f"detector.{threat}.{k}": v for k, v in stats.items()})
    return out
