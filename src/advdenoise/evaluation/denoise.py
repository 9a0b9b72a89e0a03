"""The denoise stage's analysis: the paper's Figs. 3, 4, 5 and 7 as tables, and their metrics.

Pure given the two model calls: `denoise` (the autoencoder) and `predict` (the CNN's labels), both
on float images in [0, 1], so the stage keeps the models and the files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from advdenoise.attacks.sets import AdversarialSets
from advdenoise.evaluation import metrics
from advdenoise.figures import denoise as figs

Images = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DenoiseAnalysis:
    metrics: dict[str, float]  # metrics/denoise.json
    accuracy: dict[str, pd.DataFrame]  # per method: accuracy vs eps (Fig. 3)
    recon: dict[str, pd.DataFrame]  # per method: reconstruction loss vs eps (Fig. 7)
    heat_rows: list  # perturbation heatmaps of the example images (Fig. 4)
    intensity: pd.DataFrame  # pixel intensities clean / adversarial / denoised (Fig. 5)


def analyse(
    x: np.ndarray,
    y: np.ndarray,
    sets: AdversarialSets,
    eps: float,
    denoise: Images,
    predict: Images,
    examples: list[int],
    classes: tuple[str, ...],
) -> DenoiseAnalysis:
    """Accuracy and reconstruction error at every eps of `sets`; the rest at the headline `eps`."""
    ae_x = denoise(x)
    pred_x, pred_ae_x = predict(x), predict(ae_x)
    clean_acc, den_clean_acc = metrics.accuracy(y, pred_x), metrics.accuracy(y, pred_ae_x)
    result: dict[str, float] = {
        "eps": eps, "clean_accuracy": clean_acc, "denoised_clean_accuracy": den_clean_acc,
        "recon.clean.mse": metrics.mse(x, ae_x), "recon.clean.psnr": metrics.psnr(x, ae_x),
    }  # fmt: skip
    acc_tables, recon_tables, heat_rows, adv_at, den_at = {}, {}, [], {}, {}
    for m in sets.methods:
        acc_rows, recon_rows = [], []
        for e, adv in zip(sets.eps, sets.images[m], strict=True):
            den = denoise(adv)
            pred_adv, pred_den = predict(adv), predict(den)
            acc_rows.append((e, clean_acc, metrics.accuracy(y, pred_adv),
                             metrics.accuracy(y, pred_den), den_clean_acc))  # fmt: skip
            recon_rows.append((e, result["recon.clean.mse"], metrics.mse(x, den)))
            if abs(e - eps) < 1e-12:
                adv_at[m], den_at[m] = adv, den
                flipped = (pred_x == y) & (pred_adv != y)
                result.update({
                    f"{m}.adversarial_accuracy": acc_rows[-1][2],
                    f"{m}.denoised_accuracy": acc_rows[-1][3],
                    f"{m}.recovered_rate": float(np.mean(pred_den[flipped] == y[flipped]))
                    if flipped.any() else 0.0,
                    f"{m}.recon.mse": recon_rows[-1][2],
                    f"{m}.recon.psnr": metrics.psnr(x, den),
                })  # fmt: skip
                heat_rows += figs.heatmap_rows(
                    m, examples, x, adv, den, y, (pred_x, pred_adv, pred_den), classes
                )
        acc_tables[m] = pd.DataFrame(
            acc_rows, columns=["eps", "clean", "adversarial", "denoised", "denoised_clean"]
        )
        recon_tables[m] = pd.DataFrame(recon_rows, columns=["eps", "clean_mse", "adversarial_mse"])
    intensity = figs.intensity_table(x, adv_at, den_at)
    heat_rows.sort(key=lambda r: examples.index(r.index))  # images together, methods beside
    return DenoiseAnalysis(result, acc_tables, recon_tables, heat_rows, intensity)
