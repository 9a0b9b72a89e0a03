"""The leakage probe of `prepare`: how much of the test split a lookup in the training split explains.

A 1-nearest-neighbour classifier on 32x32 z-scored thumbnails has no notion of disease; where it
scores as well as a CNN, test images have near-copies in training (neighbouring slices of one
scan), and a test accuracy measures recall of the scans rather than diagnosis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.neighbors import KNeighborsClassifier

from advdenoise.core.errors import PipelineError
from advdenoise.data.groups import THUMBNAIL
from advdenoise.data.splits import LabelledImages, Splits


@dataclass(frozen=True)
class Leakage:
    groups: int  # scan groups in the dataset
    group_size_median: float
    groups_shared: int  # groups with images in both train and test
    nn_accuracy: float  # 1-NN on thumbnails, test vs train
    nn_distance: pd.DataFrame  # per test image: its RMS distance to the nearest training image

    def metrics(self) -> dict[str, int | float]:
        return {
            "leakage.groups": self.groups,
            "leakage.group_size_median": self.group_size_median,
            "leakage.groups_shared": self.groups_shared,
            "leakage.nn_accuracy": round(self.nn_accuracy, 6),
        }


def probe(
    images: LabelledImages, thumbs: np.ndarray, groups: np.ndarray, splits: Splits
) -> Leakage:
    """Measure the leak of `splits` (as written for later stages) given the scan `groups`.

    `thumbs` are `thumbnails(images.x)`, made once by the caller for every split it probes.
    """
    index = {str(f): i for i, f in enumerate(images.files)}
    if len(index) != len(images.files):
        raise PipelineError("the leakage probe needs unique file ids")
    train, test = splits.train, splits.test
    train_rows, test_rows = ([index[str(f)] for f in s.files] for s in (train, test))
    _, sizes = np.unique(groups, return_counts=True)
    knn = KNeighborsClassifier(n_neighbors=1).fit(thumbs[train_rows], train.y)
    distance, nearest = knn.kneighbors(thumbs[test_rows])  # one search: 1-NN predicts its label
    table = pd.DataFrame(
        {
            "file": test.files,
            "class": [splits.classes[c] for c in test.y],
            "distance": np.round(distance[:, 0] / THUMBNAIL, 6),  # Euclidean -> RMS over pixels
        }
    ).sort_values(["distance", "file"], kind="stable", ignore_index=True)
    table.insert(0, "rank", np.arange(len(table)))
    return Leakage(
        groups=len(sizes),
        group_size_median=float(np.median(sizes)),
        groups_shared=len(np.intersect1d(groups[train_rows], groups[test_rows])),
        nn_accuracy=float(np.mean(train.y[nearest[:, 0]] == test.y)),
        nn_distance=table,
    )


def leakage_metrics(leaks: Mapping[str, Leakage], current: str) -> dict[str, int | float]:
    """The written split's figures as `leakage.*`, and every probed split's as `leakage.<split>.*`
    (so that a run shows what the other split would leak)."""
    out = leaks[current].metrics()
    for name, leak in leaks.items():
        out[f"leakage.{name}.groups_shared"] = leak.groups_shared
        out[f"leakage.{name}.nn_accuracy"] = round(leak.nn_accuracy, 6)
    return out
