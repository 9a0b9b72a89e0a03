"""Figure of the `prepare` stage: example images of every class, so a person can check the input."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

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
