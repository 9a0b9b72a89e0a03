"""Prepared splits: the contract between `prepare` and every later stage.

`data/prepare/splits.npz` holds, for each split in SPLITS, `x_<split>` (uint8, N x 1 x H x W),
`y_<split>` (int64, N) and `files_<split>` (str, N), plus `classes` (str, K; index = label).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from advdenoise.errors import PipelineError
from advdenoise.io import read_npz, write_npz

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


def to_float(x: np.ndarray) -> torch.Tensor:
    """uint8 images -> float32 tensor in [0, 1] (the models' input scale)."""
    return torch.from_numpy(x).float().div_(255.0)
