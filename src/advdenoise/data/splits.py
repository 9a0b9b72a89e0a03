"""Prepared splits: the contract between `prepare` and every later stage.

`data/prepare/splits.npz` holds, for each split in SPLITS, `x_<split>` (uint8, N x 1 x H x W),
`y_<split>` (int64, N) and `files_<split>` (str, N), plus `classes` (str, K; index = label).
The `prepare` stage builds them here too: the stratified, group-aware split of the images that
`folders` (a Kaggle-layout image folder) or `synthetic` (the embedded default) provide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from advdenoise.core.errors import PipelineError
from advdenoise.core.io import read_npz, write_npz
from advdenoise.core.seeding import named_rng, named_seed

SPLITS = ("train", "val", "test")
SPLITS_FILE = "splits.npz"


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # uint8, (N, 1, H, W)
    y: np.ndarray  # int64, (N,)
    files: np.ndarray  # str, (N,): source file (or synthetic id) of each image

    def __post_init__(self) -> None:
        n = len(self.y)
        if self.x.dtype != np.uint8 or self.x.ndim != 4 or self.x.shape[1] != 1:
            raise PipelineError(
                f"split images must be uint8 N x 1 x H x W, got {self.x.dtype} {self.x.shape}"
            )
        if len(self.x) != n or len(self.files) != n:
            raise PipelineError(
                f"split has {len(self.x)} images, {n} labels and {len(self.files)} file names"
            )


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...]

    @property
    def image_size(self) -> int:
        return int(self.train.x.shape[-1])


def save_splits(directory: str | Path, splits: Splits) -> None:
    arrays: dict[str, np.ndarray] = {"classes": np.array(splits.classes, dtype=str)}
    for name in SPLITS:
        split: Split = getattr(splits, name)
        arrays[f"x_{name}"] = split.x
        arrays[f"y_{name}"] = split.y.astype(np.int64)
        arrays[f"files_{name}"] = np.asarray(split.files, dtype=str)
    write_npz(Path(directory) / SPLITS_FILE, arrays)


def load_splits(directory: str | Path) -> Splits:
    """Load and validate the prepared splits (pickle-free)."""
    path = Path(directory) / SPLITS_FILE
    keys = ("classes",) + tuple(f"{k}_{s}" for s in SPLITS for k in ("x", "y", "files"))
    a = read_npz(path, keys)
    parts = {s: Split(a[f"x_{s}"], a[f"y_{s}"].astype(np.int64), a[f"files_{s}"]) for s in SPLITS}
    classes = tuple(str(c) for c in a["classes"])
    for s, split in parts.items():
        if len(split.y) == 0 and s != "val":
            raise PipelineError(f"{path}: the {s} split is empty")
        if len(split.y) and (split.y.min() < 0 or split.y.max() >= len(classes)):
            raise PipelineError(
                f"{path}: labels of the {s} split are outside 0..{len(classes) - 1}"
            )
    return Splits(classes=classes, **parts)


SPLIT_STREAM = "split"  # the splitter's stream, keyed by class (its groups' order) or split


@dataclass(frozen=True)
class LabelledImages:
    """Every image of a dataset before splitting; `groups` ties byte-identical files together."""

    x: np.ndarray  # uint8, (N, 1, S, S)
    y: np.ndarray  # int64, (N,)
    files: np.ndarray  # str, (N,)
    groups: np.ndarray  # int64, (N,): byte-identical files share a group id
    classes: tuple[str, ...]  # index = label
    skipped: tuple[str, ...] = ()  # "file (reason)" of bad files skipped with data.skip_bad_files
    ignored_folders: tuple[str, ...] = ()  # folders in the root that are not class folders
    ignored_files: int = 0  # non-image entries inside class folders
    scans: np.ndarray | None = None  # int64, (N,): the scan of each image, where the source knows

    @property
    def duplicate_groups(self) -> int:
        """Number of groups of two or more byte-identical files."""
        _, counts = np.unique(self.groups, return_counts=True)
        return int((counts > 1).sum())


def class_names(classes: Mapping[str, int]) -> tuple[str, ...]:
    """Class names ordered by label (index = label)."""
    return tuple(name for name, _ in sorted(classes.items(), key=lambda kv: kv[1]))


# --------------------------------------------------------------------------- splitting


def _round(v: float) -> int:
    return int(np.floor(v + 0.5))  # half up, not Python's half-to-even


def split_indices(
    y: np.ndarray,
    groups: np.ndarray,
    classes: tuple[str, ...],
    seed: int,
    test_fraction: float,
    val_fraction: float,
) -> dict[str, np.ndarray]:
    """Stratified, seeded, group-aware split into SPLITS: indices per split.

    Per class, groups (of byte-identical images, or of one scan's slices) are shuffled
    (named_rng(seed, SPLIT_STREAM, label)) and dealt to test until round(test_fraction * n)
    images, then to val until round(val_fraction * (n - n_test)), the rest to train; a group never
    straddles two splits.
    Each class gets at least one test image (and one val image when val_fraction > 0). Within a
    split the order is a seeded shuffle (classes mixed).
    """
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for label, name in enumerate(classes):
        idx = np.flatnonzero(y == label)
        members: dict[int, list[int]] = {}
        for i in idx:
            members.setdefault(int(groups[i]), []).append(int(i))
        gids = sorted(members)
        order = named_rng(seed, SPLIT_STREAM, label).permutation(len(gids))
        n = len(idx)
        needed = 3 if val_fraction > 0 else 2  # one group each for test, (val,) train
        fractions = f"data.test_fraction={test_fraction} and data.val_fraction={val_fraction}"
        if len(gids) < needed:
            raise PipelineError(
                f"class {name!r} has only {n} images in {len(gids)} group(s): too few to split "
                f"with {fractions}, which need at least {needed} groups (one each for "
                f"{'test, val and train' if val_fraction > 0 else 'test and train'})"
            )
        n_test = max(1, _round(test_fraction * n))
        n_val = max(1, _round(val_fraction * (n - n_test))) if val_fraction > 0 else 0
        counts = dict.fromkeys(SPLITS, 0)
        for k in order:
            m = members[gids[k]]
            target = (
                "test" if counts["test"] < n_test else "val" if counts["val"] < n_val else "train"
            )
            parts[target].append(np.asarray(m, dtype=np.int64))
            counts[target] += len(m)
        if counts["train"] == 0 or (val_fraction > 0 and counts["val"] == 0):
            biggest = max(len(m) for m in members.values())
            raise PipelineError(
                f"class {name!r} has only {n} images in {len(gids)} group(s) (the largest holds "
                f"{biggest}): too few to split with {fractions}; the test and val splits took "
                "every group"
            )
    out = {}
    for s in SPLITS:
        a = np.sort(np.concatenate(parts[s])) if parts[s] else np.zeros(0, dtype=np.int64)
        out[s] = a[named_rng(seed, SPLIT_STREAM, s).permutation(len(a))]
    return out


def split_images(
    images: LabelledImages,
    seed: int,
    test_fraction: float,
    val_fraction: float,
    groups: np.ndarray | None = None,
) -> Splits:
    """Split a dataset into train/val/test (see `split_indices`), keeping each group on one side.

    `groups` defaults to the images' duplicate groups (the paper's slice-level split); scan groups
    give the grouped split.
    """
    groups = images.groups if groups is None else groups
    idx = split_indices(images.y, groups, images.classes, seed, test_fraction, val_fraction)
    parts = {s: Split(images.x[i], images.y[i], images.files[i]) for s, i in idx.items()}
    return Splits(classes=images.classes, **parts)


def split_counts(splits: Splits) -> dict[str, int]:
    """Image counts: "<split>.<class>", "<split>.total", "all.<class>", "all.total"."""
    out: dict[str, int] = {}
    for s in SPLITS:
        y = getattr(splits, s).y
        for label, name in enumerate(splits.classes):
            out[f"{s}.{name}"] = int((y == label).sum())
        out[f"{s}.total"] = len(y)
    for name in splits.classes:
        out[f"all.{name}"] = sum(out[f"{s}.{name}"] for s in SPLITS)
    out["all.total"] = sum(out[f"{s}.total"] for s in SPLITS)
    return out


def prepare_metrics(images: LabelledImages, splits: Splits) -> dict[str, int | float]:
    """The flat, numeric metrics of the `prepare` stage (counts, duplicates, skips, shortcut check)."""
    return {
        **split_counts(splits),
        "duplicate_groups": images.duplicate_groups,
        "skipped_files": len(images.skipped),
        "ignored_files": images.ignored_files,
        "ignored_folders": len(images.ignored_folders),
        "image_size": splits.image_size,
        "baseline.mean_intensity_accuracy": round(mean_intensity_baseline(splits), 6),
    }


def mean_intensity_baseline(splits: Splits) -> float:
    """Test accuracy of a logistic regression on mean image intensity, fit on train.

    Why: a shortcut check. If mean brightness alone predicts the class, a CNN's accuracy says little.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def feature(split: Split) -> np.ndarray:
        return split.x.reshape(len(split.x), -1).mean(axis=1, keepdims=True) / 255.0

    if len(np.unique(splits.train.y)) < 2 or len(splits.test.y) == 0:
        raise PipelineError("mean-intensity baseline needs two classes in train and a test set")
    model = make_pipeline(StandardScaler(), LogisticRegression())
    model.fit(feature(splits.train), splits.train.y)
    return float(model.score(feature(splits.test), splits.test.y))


def to_float(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 tensor in [0, 1] (the models' input scale); floats pass as float32.

    The one uint8 -> float conversion of the project (training batches, batched inference, stages).
    """
    t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


def evaluation_subset(y: np.ndarray, max_images: int, seed: int, stream: str) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset of at most `max_images` (0: all).

    Why: attacks through every defence and certification dominate the pipeline's cost, and a
    robust accuracy on a hundred or so images (binomial s.e. <= 5 points) decides the verdicts.
    `stream` names each stage's own subset.
    """
    if max_images == 0 or max_images >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    chosen, _ = train_test_split(
        np.arange(len(y)), train_size=max_images, stratify=y, random_state=named_seed(seed, stream)
    )
    return np.sort(chosen)
