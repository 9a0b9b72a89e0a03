"""Figure of the certify stage: certified accuracy vs L2 radius, a line per model and sigma."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

STYLES = ("-", "--", ":", "-.")


def certified_accuracy_figure(curves: pd.DataFrame, pixels: int) -> Figure:
    """Colour = model, line style = sigma; the top axis gives the L-inf radius r / sqrt(d)."""
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    models = list(dict.fromkeys(curves.model))
    sigmas = sorted(set(curves.sigma))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, model in enumerate(models):
        for j, sigma in enumerate(sigmas):
            rows = curves[(curves.model == model) & (curves.sigma == sigma)]
            ax.plot(
                rows.radius,
                rows.certified_accuracy,
                color=colours[i % len(colours)],
                ls=STYLES[j % len(STYLES)],
                label=f"{model}, sigma={sigma:g}",
            )
    ax.set_xlabel("L2 radius")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    scale = math.sqrt(pixels)

    def to_linf(r: ArrayLike) -> ArrayLike:
        return np.asarray(r) / scale

    def to_l2(e: ArrayLike) -> ArrayLike:
        return np.asarray(e) * scale

    top = ax.secondary_xaxis("top", functions=(to_linf, to_l2))
    top.set_xlabel(f"L-inf radius contained in the L2 ball (r / sqrt({pixels}))")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def bounds_figure(bounds: dict[str, pd.DataFrame]) -> Figure:
    """One panel per model: per sigma (colour) certified accuracy (solid, a lower bound) and the
    accuracy under the L2 attack (dashed, an upper bound); the true robust accuracy lies between."""
    fig, axes = plt.subplots(1, len(bounds), figsize=(3.6 * len(bounds), 3.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (model, table) in zip(axes[0], bounds.items(), strict=True):
        sigmas = [c.removeprefix("certified_sigma_") for c in table if c.startswith("certified_")]
        for i, sigma in enumerate(sigmas):
            colour = colours[i % len(colours)]
            low, high = table[f"certified_sigma_{sigma}"], table[f"attacked_sigma_{sigma}"]
            ax.plot(table.radius, low, "o-", color=colour, label=f"sigma={sigma} certified")
            ax.plot(table.radius, high, "s--", color=colour, label=f"sigma={sigma} attacked")
            ax.fill_between(table.radius, low, high, color=colour, alpha=0.12)
        ax.set_title(model)
        ax.set_xlabel("L2 radius")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy of the smoothed classifier")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig
