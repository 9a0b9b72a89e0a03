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
