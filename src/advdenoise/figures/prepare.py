"""Figures of the `prepare` stage: example images of every class, so a person can check the input,
and the leakage probe's distances from test to training images."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from advdenoise.data.leakage import Leakage
from advdenoise.data.splits import Split, Splits


def samples_figure(splits: Splits, per_class: int = 8, title: str = "") -> Figure:
    """A grid: one row per class, `per_class` training images (in split order) per row."""
    split: Split = splits.train
    k = len(splits.classes)
    fig, axes = plt.subplots(k, per_class, figsize=(1.3 * per_class, 1.45 * k + 0.4), squeeze=False)
    for label, name in enumerate(splits.classes):
        idx = np.flatnonzero(split.y == label)[:per_class]
        for j, ax in enumerate(axes[label]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(idx):
                ax.imshow(
                    split.x[idx[j], 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest"
                )
                ax.set_title(str(split.files[idx[j]]).rsplit("/", 1)[-1], fontsize=6)
        n = int((split.y == label).sum())
        axes[label, 0].set_ylabel(f"{name}\n(train n={n})", fontsize=9)
    size = splits.image_size
    fig.suptitle(title or f"training examples per class ({size}x{size} px)", fontsize=10)
    fig.tight_layout()
    return fig


def nn_distance_figure(leak: Leakage, split: str) -> Figure:
    """Histogram per class of each test image's RMS distance to its nearest training image.

    Why: near-copies across the split (neighbouring slices of one scan) pile up near 0.
    """
    table = leak.nn_distance
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.linspace(0, max(float(table["distance"].max()), 1e-6), 31).tolist()
    for name, part in table.groupby("class", sort=True):
        ax.hist(part["distance"], bins=bins, alpha=0.6, label=f"{name} (n={len(part)})")
    ax.set_xlabel("RMS distance to the nearest training image (32x32 z-scored thumbnails)")
    ax.set_ylabel("test images")
    ax.set_title(
        f"{split} split: 1-NN accuracy {leak.nn_accuracy:.1%}, {leak.groups_shared} of "
        f"{leak.groups} scan groups on both sides",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
