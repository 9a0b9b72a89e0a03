"""Scan groups: which images come from one CT scan (or patient), so that a split keeps them together.

Slices of one scan look alike, so a split that puts neighbouring slices on both sides measures
recall of the scan, not diagnosis (the leak `leakage` measures). Groups come from a `file,group`
CSV where a dataset provides scan or patient ids, else they are inferred: within each class folder,
files in natural order ("Covid (9)" before "Covid (10)") start a new group where two consecutive
thumbnails differ by more than `data.group_threshold`. Byte-identical files always share a group.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from advdenoise.core.errors import PipelineError
from advdenoise.data.folders import listed
from advdenoise.data.splits import LabelledImages

GROUPS_FILE = "groups.csv"  # read by data.groups: auto when it lies at the dataset root
THUMBNAIL = 32  # side of the thumbnails that inference and the leakage probe compare


def thumbnails(x: np.ndarray) -> np.ndarray:
    """uint8 (N, 1, S, S) -> float64 (N, 32*32): area-averaged, each image z-scored on its own.

    Why z-scored: consecutive slices differ in exposure and window less than in anatomy; the RMS
    distance of two z-scored thumbnails is sqrt(2 - 2r) for their correlation r, so lies in [0, 2].
    """
    t = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x).double(), THUMBNAIL)
    a = t.reshape(len(x), -1).numpy()
    a = a - a.mean(axis=1, keepdims=True)
    sd = a.std(axis=1, keepdims=True)
    return np.divide(a, sd, out=np.zeros_like(a), where=sd > 0)


def rms_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise RMS distance of two thumbnail arrays (the unit of data.group_threshold)."""
    return np.sqrt(np.mean((a - b) ** 2, axis=1))


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key reading digit runs as numbers: 'Covid (9).png' < 'Covid (10).png'."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p)


def canonical(labels: np.ndarray) -> np.ndarray:
    """Relabel groups 0..G-1 in order of their first image, so ids do not depend on how they arose."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def merge(*partitions: np.ndarray) -> np.ndarray:
    """The finest grouping coarser than every partition: images that share a group in any share one."""
    n = len(partitions[0])
    rows, cols = [], []
    for labels in partitions:  # each image joined to the first image of its group
        _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
        rows.append(np.arange(n))
        cols.append(first[inverse.reshape(-1)])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    return canonical(connected_components(graph, directed=False)[1])


def folder_steps(
    files: np.ndarray, y: np.ndarray, thumbs: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per class folder: its images in natural file order, and each one's RMS distance to the next."""
    out = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        order = np.array(sorted(idx, key=lambda i: natural_key(str(files[i]))), dtype=np.int64)
        out.append((order, rms_distance(thumbs[order[1:]], thumbs[order[:-1]])))
    return out


def infer_groups(
    files: np.ndarray, y: np.ndarray, thumbs: np.ndarray, threshold: float
) -> np.ndarray:
    """Runs of consecutive, similar files within each class folder (see the module docstring)."""
    groups = np.empty(len(files), dtype=np.int64)
    start = 0
    for order, steps in folder_steps(files, y, thumbs):
        runs = np.cumsum(np.concatenate([[True], steps > threshold]))
        groups[order] = start + runs - 1
        start += int(runs[-1])
    return canonical(groups)


def read_groups_csv(path: Path, root: Path, files: Sequence[str]) -> np.ndarray:
    """The group name of each of `files` (ids relative to `root`) from a `file,group` CSV.

    A row may name a file that the loader left out (a skipped bad file); it may not name a file
    that does not exist, and every image needs a row.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise PipelineError(f"data.groups file {str(path)!r} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"data.groups file {str(path)!r} cannot be read: {exc}") from exc
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != ["file", "group"]:
        raise PipelineError(f"{path} line 1: the header must be 'file,group', got {header}")
    group_of: dict[str, str] = {}
    line_of: dict[str, int] = {}
    missing = []
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise PipelineError(f"{path} line {line}: expected 'file,group', got {row}")
        file = unicodedata.normalize("NFC", row[0].strip())
        if file in group_of:
            raise PipelineError(
                f"{path} line {line}: {file!r} already has a row (line {line_of[file]})"
            )
        if not (root / file).is_file():
            missing.append(f"line {line}: {file!r}")
        group_of[file], line_of[file] = row[1].strip(), line
    if missing:
        raise PipelineError(f"{path} names files that do not exist in {root}: {listed(missing)}")
    unlisted = [f for f in files if f not in group_of]
    if unlisted:
        raise PipelineError(
            f"{path} has no row for {len(unlisted)} image(s): {listed([repr(f) for f in unlisted])}"
        )
    return np.asarray([group_of[f] for f in files], dtype=str)


def check_one_class(names: np.ndarray, images: LabelledImages) -> None:
    """A group is one scan, so one class: name the group and a file of each class otherwise."""
    frame = pd.DataFrame({"group": names, "label": images.y, "file": images.files})
    classes = frame.groupby("group", sort=True)["label"].nunique()
    if (classes > 1).any():
        name = classes.index[classes > 1][0]
        one = frame[frame["group"] == name].drop_duplicates("label").sort_values("label").head(2)
        shown = ", ".join(
            f"{f!r} ({images.classes[c]})" for f, c in zip(one["file"], one["label"], strict=True)
        )
        raise PipelineError(f"group {name!r} holds two classes: {shown}")


def scan_groups(
    images: LabelledImages, groups: str, threshold: float, root: Path | None
) -> np.ndarray:
    """The scan groups of a dataset for `data.groups` (`auto` or a CSV path), merged with duplicates.

    `root` is the dataset folder; None for the synthetic default, whose scans the generator knows
    (with data.synthetic_slices [1, 1] every image is a scan of its own).
    """
    if root is None:  # params refuse a groups CSV for synthetic images
        known = images.groups if images.scans is None else images.scans
        return merge(images.groups, known)
    csv_path = root / GROUPS_FILE if groups == "auto" else Path(groups)
    if groups == "auto" and not csv_path.is_file():
        found = infer_groups(images.files, images.y, thumbnails(images.x), threshold)
        return merge(images.groups, found)
    names = read_groups_csv(csv_path, root, [str(f) for f in images.files])
    check_one_class(names, images)
    return merge(images.groups, np.unique(names, return_inverse=True)[1].reshape(-1))
