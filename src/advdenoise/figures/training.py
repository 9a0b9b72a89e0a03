"""Figures of the train_cnn and train_ae stages: curves, confusion, ROC, reliability, examples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def training_curves(history: Sequence[dict[str, float]], best_epoch: int, title: str) -> Figure:
    """Loss (and accuracy when logged) per epoch for train and val; the kept epoch is marked."""
    epochs = [r["epoch"] for r in history]
    panels = ["loss"] + (["accuracy"] if "train.accuracy" in history[0] else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, what in zip(axes[0], panels, strict=True):
        for split in ("train", "val"):
            key = f"{split}.{what}"
            if key in history[0]:
                ax.plot(epochs, [r[key] for r in history], marker="o", ms=3, label=split)
        ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"kept (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_figure(cm: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    """Counts with row-normalised shading (rows = actual class)."""
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{rates[i, j]:.1%}",
                ha="center",
                va="center",
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    fig.tight_layout()
    return fig


Corner = Literal["lower right", "upper left"]  # where a legend goes


def _unit_square(diagonal: str) -> tuple[Figure, Axes]:
    """A square figure over [0, 1]^2 with its grey dashed diagonal (the ROC's chance line, the
    reliability diagram's perfect calibration)."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label=diagonal)
    ax.grid(alpha=0.3)
    return fig, ax


def _finish(fig: Figure, ax: Axes, xlabel: str, ylabel: str, title: str, legend: Corner) -> Figure:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc=legend)
    fig.tight_layout()
    return fig


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, auc: float, title: str) -> Figure:
    fig, ax = _unit_square("chance")
    ax.plot(fpr, tpr, lw=2, label=f"AUC = {auc:.3f}")
    return _finish(fig, ax, "false positive rate", "true positive rate", title, "lower right")


def reliability_figure(
    confidence: np.ndarray, accuracy: np.ndarray, count: np.ndarray, ece: float, title: str
) -> Figure:
    """Accuracy against mean confidence per non-empty bin; marker area ~ bin size."""
    fig, ax = _unit_square("perfect calibration")
    sizes = 20 + 200 * count / max(int(count.sum()), 1)
    ax.plot(confidence, accuracy, color="C0", lw=1)
    ax.scatter(confidence, accuracy, s=sizes, color="C0", label=f"bins (ECE = {ece:.3f})")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    return _finish(fig, ax, "confidence (max probability)", "accuracy", title, "upper left")


def denoising_examples(
    noisy: dict[str, np.ndarray], reconstructed: dict[str, np.ndarray], clean: np.ndarray
) -> Figure:
    """Rows noisy / reconstructed / clean; columns = the same few test images for each noise type.

    Arrays are (k, 1, H, W) in [0, 1]; `clean` holds the k clean originals shared by every type.
    """
    names = list(noisy)
    k = len(clean)
    cols = len(names) * k
    fig, axes = plt.subplots(3, cols, figsize=(1.6 * cols, 5.2), squeeze=False)
    for t, name in enumerate(names):
        for i in range(k):
            c = t * k + i
            for r, (label, img) in enumerate(
                (
                    ("noisy", noisy[name][i]),
                    ("reconstructed", reconstructed[name][i]),
                    ("clean", clean[i]),
                )
            ):
                ax = axes[r, c]
                ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(label)
            axes[0, c].set_title(name, fontsize=9)
    fig.tight_layout()
    return fig
