"""Plot data and figures of the denoise stage: the paper's Figs. 3, 4, 5 and 7.

Fig. 3: accuracy vs eps (clean, adversarial, denoised adversarial), one panel per method;
Fig. 4: images with |x_adv - x| and |AE(x_adv) - x| heatmaps for a few test images per class;
Fig. 5: pixel-intensity histograms of clean, adversarial and denoised images;
Fig. 7: reconstruction loss (MSE to the original clean image) vs eps, clean vs adversarial input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

INTENSITY_BINS = 50
LINTHRESH = 1e-3  # eps axes are symlog: linear below this, so eps = 0 and 0.001 .. 0.1 all show


def example_indices(y: np.ndarray, per_class: int, num_classes: int) -> list[int]:
    """The first `per_class` test images of each class, in test-split order (deterministic)."""
    return [int(i) for c in range(num_classes) for i in np.flatnonzero(y == c)[:per_class]]


def intensity_table(
    clean: np.ndarray,
    adversarial: Mapping[str, np.ndarray],
    denoised: Mapping[str, np.ndarray],
    bins: int = INTENSITY_BINS,
) -> pd.DataFrame:
    """Pixel counts per intensity bin (bin = bin centre in [0, 1]) for every image set."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = {"bin": (edges[:-1] + edges[1:]) / 2, "clean": np.histogram(clean, edges)[0]}
    for m in adversarial:
        counts[f"adversarial_{m}"] = np.histogram(adversarial[m], edges)[0]
        counts[f"denoised_{m}"] = np.histogram(denoised[m], edges)[0]
    return pd.DataFrame(counts)


def _eps_axis(ax: plt.Axes, headline: float) -> None:
    ax.set_xscale("symlog", linthresh=LINTHRESH)
    ax.axvline(headline, color="0.6", linestyle=":", linewidth=1)
    ax.set_xlabel("eps (L-inf bound; symlog scale)")
    ax.grid(True, alpha=0.3)


def accuracy_figure(tables: Mapping[str, pd.DataFrame], headline: float) -> Figure:
    """Fig. 3: one panel per method; columns eps, clean, adversarial, denoised, denoised_clean."""
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 4.0), squeeze=False)
    for ax, (method, t) in zip(axes[0], tables.items(), strict=True):
        ax.plot(t.eps, t.clean, "k--", label="clean")
        ax.plot(t.eps, t.denoised_clean, ":", color="tab:green", label="AE(clean)")
        ax.plot(t.eps, t.adversarial, "o-", color="tab:red", label="adversarial")
        ax.plot(t.eps, t.denoised, "s-", color="tab:blue", label="AE(adversarial)")
        _eps_axis(ax, headline)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{method.upper()}: accuracy vs eps")
        ax.legend(loc="lower left", fontsize=8)
    fig.suptitle(f"Accuracy under attack, with and without the denoiser (dotted: eps={headline:g})")
    fig.tight_layout()
    return fig


def recon_figure(tables: Mapping[str, pd.DataFrame], headline: float) -> Figure:
    """Fig. 7: MSE(x, AE(input)) vs eps; columns eps, clean_mse, adversarial_mse per method."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    first = next(iter(tables.values()))
    ax.plot(first.eps, first.clean_mse, "k--", label="clean input")
    for (method, t), marker in zip(tables.items(), "os^v", strict=False):
        ax.plot(t.eps, t.adversarial_mse, marker=marker, label=f"{method.upper()} input")
    _eps_axis(ax, headline)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_ylabel("MSE(original clean x, AE(input))")
    ax.set_title("Reconstruction loss of the denoiser vs eps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def intensity_figure(table: pd.DataFrame, methods: Sequence[str], eps: float) -> Figure:
    """Fig. 5: step histograms of pixel intensities, one panel per method, log counts."""
    fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 3.8), squeeze=False)
    width = float(table.bin.iloc[1] - table.bin.iloc[0]) if len(table) > 1 else 1.0
    edges = np.append(table.bin.to_numpy() - width / 2, table.bin.iloc[-1] + width / 2)
    for ax, m in zip(axes[0], methods, strict=True):
        for col, style, label in (
            ("clean", dict(color="k", linewidth=1.6), "clean"),
            (f"adversarial_{m}", dict(color="tab:red"), f"{m.upper()} adversarial"),
            (f"denoised_{m}", dict(color="tab:blue"), "AE(adversarial)"),
        ):
            ax.stairs(table[col].to_numpy(), edges, label=label, **style)
        ax.set_yscale("log")
        ax.set_xlabel("pixel intensity")
        ax.set_ylabel("pixel count (log)")
        ax.set_title(f"{m.upper()}, eps={eps:g}")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.suptitle("Pixel-intensity histograms of the test set")
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class HeatmapRow:
    """One test image under one attack: the images and the predicted class names."""

    label: str  # e.g. "COVID #12, PGD"
    index: int  # position in the test split
    clean: np.ndarray  # (H, W)
    adversarial: np.ndarray
    denoised: np.ndarray  # AE(adversarial)
    pred_clean: str
    pred_adversarial: str
    pred_denoised: str


def heatmap_rows(
    method: str,
    indices: Sequence[int],
    clean: np.ndarray,
    adversarial: np.ndarray,
    denoised: np.ndarray,
    y: np.ndarray,
    preds: tuple[np.ndarray, np.ndarray, np.ndarray],
    classes: Sequence[str],
) -> list[HeatmapRow]:
    """Fig. 4 rows of one method for the test images `indices` (preds: clean, adv, denoised)."""
    return [
        HeatmapRow(
            label=f"{classes[y[i]]} #{i}, {method.upper()}",
            index=int(i),
            clean=clean[i, 0],
            adversarial=adversarial[i, 0],
            denoised=denoised[i, 0],
            pred_clean=classes[preds[0][i]],
            pred_adversarial=classes[preds[1][i]],
            pred_denoised=classes[preds[2][i]],
        )
        for i in indices
    ]


def heatmap_figure(rows: Sequence[HeatmapRow], eps: float) -> Figure:
    """Fig. 4: clean | adversarial | |x_adv - x| | AE(x_adv) | |AE(x_adv) - x|, one row per image."""
    fig, axes = plt.subplots(len(rows), 5, figsize=(14.5, 2.75 * len(rows)), squeeze=False)
    err_max = max(float(np.abs(r.denoised - r.clean).max()) for r in rows) or 1.0
    for ax_row, r in zip(axes, rows, strict=True):
        panels = (
            (r.clean, f"clean\npred {r.pred_clean}", "gray", (0, 1)),
            (r.adversarial, f"adversarial\npred {r.pred_adversarial}", "gray", (0, 1)),
            (np.abs(r.adversarial - r.clean), "|x_adv - x|", "magma", (0, eps or 1.0)),
            (r.denoised, f"AE(x_adv)\npred {r.pred_denoised}", "gray", (0, 1)),
            (np.abs(r.denoised - r.clean), "|AE(x_adv) - x|", "magma", (0, err_max)),
        )
        for ax, (img, title, cmap, (lo, hi)) in zip(ax_row, panels, strict=True):
            im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if cmap != "gray":
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
        ax_row[0].set_ylabel(r.label, fontsize=9)
    fig.suptitle(f"Perturbations and what the denoiser leaves of them (eps={eps:g})", y=1.0)
    fig.tight_layout()
    return fig
