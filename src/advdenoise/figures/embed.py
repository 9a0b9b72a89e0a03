"""Figures of the `embed` stage: embedding grids and the reconstruction-error detector."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
GROUP_PALETTE = "tab10"
CLASS_PALETTE = "Dark2"  # different from the groups' colours, so blue never means two things
SPACE_TITLES = {"cnn": "CNN penultimate layer", "ae": "autoencoder bottleneck"}


def _colours(
    names: Sequence[str], palette: str = "tab10"
) -> dict[str, tuple[float, float, float, float]]:
    cmap = plt.get_cmap(palette)
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _handles(order: Sequence[str], palette: str) -> list[Line2D]:
    colours = _colours(order, palette)
    return [
        Line2D([], [], marker="o", linestyle="", color=colours[k], label=k, markersize=6)
        for k in order
    ]


def _scatter(
    ax, xy: np.ndarray, keys: np.ndarray, order: Sequence[str], palette: str, title: str
) -> None:
    colours = _colours(order, palette)
    # one scatter in a fixed shuffled order, so no group is painted over by the next one
    draw = np.random.default_rng(0).permutation(len(xy))
    ax.scatter(
        xy[draw, 0],
        xy[draw, 1],
        c=[colours[k] for k in keys[draw]],
        s=8,
        alpha=0.65,
        linewidths=0,
    )
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def embedding_grid(
    space: str,
    coords: Mapping[str, np.ndarray],
    groups: np.ndarray,
    labels: np.ndarray,
    group_order: Sequence[str],
    class_order: Sequence[str],
    probe_auroc: Mapping[str, str] | None = None,
) -> Figure:
    """Rows = embedding method; columns = coloured by group, coloured by class.

    `probe_auroc` maps an embedding to a short annotation (e.g. "probe AUROC fgsm 0.52, pgd 0.61").
    """
    rows = list(coords)
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 4.2 * len(rows)), squeeze=False)
    for r, emb in enumerate(rows):
        name = TITLES.get(emb, emb)
        note = f"\n{probe_auroc[emb]}" if probe_auroc and emb in probe_auroc else ""
        _scatter(
            axes[r, 0], coords[emb], groups, group_order, GROUP_PALETTE, f"{name}: by group{note}"
        )
        _scatter(axes[r, 1], coords[emb], labels, class_order, CLASS_PALETTE, f"{name}: by class")
    fig.suptitle(f"Embeddings of the {SPACE_TITLES.get(space, space)}", fontsize=12)
    fig.tight_layout()
    # one legend per column, below the grid, so no legend hides points
    for column, order, palette in (
        (0, group_order, GROUP_PALETTE),
        (1, class_order, CLASS_PALETTE),
    ):
        box = axes[-1, column].get_position()
        fig.legend(
            handles=_handles(order, palette),
            loc="upper center",
            bbox_to_anchor=((box.x0 + box.x1) / 2, box.y0 - 0.01),
            ncol=min(len(order), 3),
            fontsize=8,
            frameon=False,
        )
    return fig


def detector_figure(
    rocs: Mapping[str, tuple[np.ndarray, np.ndarray, float]],
    errors: Mapping[str, np.ndarray],
    eps: float,
) -> Figure:
    """Left: ROC of the reconstruction-error detector per method. Right: the error distributions."""
    fig, (ax_roc, ax_hist) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, (fpr, tpr, auroc) in rocs.items():
        ax_roc.plot(fpr, tpr, label=f"{method} (AUROC {auroc:.3f})")
    ax_roc.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax_roc.set_xlabel("false-positive rate (clean flagged)")
    ax_roc.set_ylabel("true-positive rate (adversarial flagged)")
    ax_roc.set_title(f"Reconstruction-error detector, eps={eps:g}")
    ax_roc.legend(fontsize=8, loc="lower right")
    values = np.concatenate([np.asarray(v, dtype=np.float64) for v in errors.values()])
    bins = np.linspace(values.min(), values.max(), 40) if np.ptp(values) > 0 else 10
    for name, err in errors.items():
        ax_hist.hist(err, bins=bins, histtype="step", linewidth=1.4, label=name)
    ax_hist.set_xlabel("mean squared reconstruction error ||AE(x) - x||^2 / pixels")
    ax_hist.set_ylabel("test images")
    ax_hist.set_title("Reconstruction error distributions")
    ax_hist.legend(fontsize=8)
    fig.tight_layout()
    return fig
