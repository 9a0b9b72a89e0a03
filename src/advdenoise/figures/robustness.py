"""Figures of the robustness stage: the table as grouped bars, and accuracy-vs-eps curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from advdenoise.attacks.specs import label


def bars(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, legend label) of the bars: clean, the oblivious worst case, each adaptive attack of
    the table (the registry's, as run), the worst cases, Square, every attack, random noise."""

    def attacks(threat: str) -> list[str]:
        prefix = f"{threat}_"
        return [c.removeprefix(prefix) for c in table.columns
                if c.startswith(prefix) and c != "adaptive_pgd_2x_steps"]  # fmt: skip

    oblivious = ", ".join(label(a) for a in attacks("oblivious"))
    return [
        ("clean_accuracy", "clean"),
        ("worst_oblivious", f"oblivious (worst of {oblivious})"),
        *((f"adaptive_{a}", f"adaptive {label(a)}") for a in attacks("adaptive")),
        ("worst_worst", "worst case of the gradient attacks"),
        ("square", "Square alone (gradient-free)"),
        ("robust_accuracy", "robust accuracy (every attack)"),
        ("random_noise", "random sign noise"),
    ]


VIEW_TITLES = {
    "oblivious": "oblivious (attack ignores the defence)",
    "adaptive": "adaptive (white-box)",
    "worst": "worst case over the gradient attacks",
}


MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")
STYLES = ("-", "--", "-.", ":")  # overlapping curves (several defences at 0) stay distinguishable


def table_figure(table: pd.DataFrame, eps: float) -> Figure:
    """Grouped bars: one group per defence, one bar per column of the robustness table."""
    columns = bars(table)
    n_def, n_bar = len(table), len(columns)
    width = 0.8 / n_bar
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * n_def + 2), 4.2))
    centres = np.arange(n_def)
    for k, (column, name) in enumerate(columns):
        ax.bar(centres + (k - (n_bar - 1) / 2) * width, table[column], width, label=name)
    ax.set_xticks(centres, table["defence"], rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Accuracy per defence and threat model at eps = {eps:g}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=3, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    return fig


def curves_figure(curves: pd.DataFrame, headline: float) -> Figure:
    """Accuracy vs eps, one panel per threat model (its per-image worst case), a line per defence."""
    worst = curves[curves.method == "worst"]
    views = list(dict.fromkeys(worst.threat))
    fig, axes = plt.subplots(1, len(views), figsize=(4.6 * len(views), 3.6), squeeze=False)
    for ax, view in zip(axes[0], views, strict=True):
        part = worst[worst.threat == view]
        for k, (defence, rows) in enumerate(part.groupby("defence", sort=False)):
            ax.plot(
                rows.eps,
                rows.accuracy,
                marker=MARKERS[k % len(MARKERS)],
                ls=STYLES[k % len(STYLES)],
                ms=4,
                label=defence,
            )
        ax.axvline(headline, color="grey", ls="--", lw=1)
        ax.set_title(VIEW_TITLES.get(view, view), fontsize=10)
        ax.set_xlabel("eps (L-inf; 0 = clean)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def test_sets_figure(table: pd.DataFrame, eps: float) -> Figure:
    """Grouped bars per defence: clean and robust accuracy on each test set of the table."""
    defences = list(dict.fromkeys(table.defence))
    columns = list(dict.fromkeys(zip(table.set, table.measure, strict=True)))
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(defences) + 2), 4.0))
    centres = np.arange(len(defences))
    for k, (test_set, measure) in enumerate(columns):
        part = table[(table.set == test_set) & (table.measure == measure)].set_index("defence")
        ax.bar(
            centres + (k - (len(columns) - 1) / 2) * width,
            part.accuracy.reindex(defences).to_numpy(),
            width,
            label=f"{test_set}: {measure}" + (f" (eps = {eps:g})" if measure == "robust" else ""),
            hatch="//" if test_set != "test" else None,
        )
    ax.set_xticks(centres, defences, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title("Internal test split vs external test set")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=2, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    return fig


def stage_figures(tables: dict[str, pd.DataFrame], eps: float) -> dict[str, Figure]:
    """The stage's PNGs by file name, from its plot tables (`plot_tables`); the test sets' bars
    only where an external set ran."""
    figures = {
        "robustness.png": table_figure(tables["robustness.csv"], eps),
        "curves.png": curves_figure(tables["curves.csv"], eps),
    }
    test_sets = tables["test_sets.csv"]
    if (test_sets.set != "test").any():
        figures["test_sets.png"] = test_sets_figure(test_sets, eps)
    return figures
