"""Prepared splits: the contract between `prepare` and every later stage.

`data/prepare/splits.npz` holds, for each split in SPLITS, `x_<split>` (uint8, N x 1 x H x W),
`y_<split>` (int64, N) and `files_<split>` (str, N), plus `classes` (str, K; index = label).
The `prepare` stage builds them here too: reading a Kaggle-layout image folder, grouping
byte-identical files, and the stratified, group-aware split.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from advdenoise.errors import PipelineError
from advdenoise.io import read_npz, write_npz
from advdenoise.runtime import generator

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


# --------------------------------------------------------------------------- reading a dataset folder
#
# Layout (Kaggle): <root>/<class folder>/<image>, class folders mapped to labels by data.classes.
# Decisions, so that results do not depend on how a file happens to be stored:
# - Only the top level of each class folder is read; extensions IMAGE_EXTENSIONS, any case. Hidden
#   files are skipped; other files and sub-folders are counted as ignored. Folders in the root that
#   are not in data.classes are ignored and reported (metrics "ignored_folders", names on stderr).
# - Every mode is reduced to one 8-bit grey channel: colour by ITU-R 601 luma (Pillow's "L"); alpha
#   is dropped, not composited (the SARS-CoV-2 files' alpha is fully opaque); palette images through
#   their palette; CMYK/YCbCr through RGB; 16-bit greyscale scaled by its bit depth (65535 -> 255),
#   never by the image's own maximum ("I", 32-bit int, is read as 16-bit and clipped); float images
#   are refused (unknown intensity scale). EXIF orientation is applied.
# - Resizing stretches to image_size x image_size (aspect ratio not kept, as in the paper) with
#   Pillow's bilinear filter, whose support widens when shrinking, i.e. it is antialiased.
# - Per-file problems (empty, corrupt, truncated, not an image, smaller than data.min_side, larger
#   than data.max_pixels -- checked from the header before decoding) are collected for all files and
#   reported together; data.skip_bad_files skips them instead and counts them.
# - File ids are paths relative to the root ("COVID/Covid (1).png"), '/'-separated, Unicode NFC, so
#   outputs are identical on every machine. Listings are sorted by that id.

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLIT_STREAM = 101  # RNG stream offset of the splitter (see runtime.generator)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_MAX_LISTED = 5  # bad files named in an error message before "... and N more"


class BadImageError(Exception):
    """One unusable file; the message is the reason. Collected per dataset, then reported at once."""


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

    @property
    def duplicate_groups(self) -> int:
        """Number of groups of two or more byte-identical files."""
        _, counts = np.unique(self.groups, return_counts=True)
        return int((counts > 1).sum())


def class_names(classes: Mapping[str, int]) -> tuple[str, ...]:
    """Class names ordered by label (index = label)."""
    return tuple(name for name, _ in sorted(classes.items(), key=lambda kv: kv[1]))


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _listed(items: list[str]) -> str:
    head = "; ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return head + (f"; ... and {more} more" if more > 0 else "")


def list_image_files(
    root: str | Path, classes: Mapping[str, int]
) -> tuple[list[tuple[Path, int]], tuple[str, ...], int]:
    """Sorted (path, label) of every image file; plus ignored root folders and ignored-entry count.

    Raises PipelineError naming the path for a missing root, a root that is a file, a missing or
    empty class folder, and a root that holds only one of the classes.
    """
    root = Path(root)
    if not root.exists():
        raise PipelineError(
            f"data.source directory {str(root)!r} does not exist "
            "(expected <root>/<class>/*.png, or data.source: synthetic)"
        )
    if not root.is_dir():
        raise PipelineError(
            f"data.source {str(root)!r} is a file, not a directory of class folders"
        )
    wanted = class_names(classes)
    folders = sorted(_nfc(p.name) for p in root.iterdir() if p.is_dir())
    folders = [f for f in folders if not f.startswith(".")]
    present = [c for c in wanted if (root / c).is_dir()]
    missing = [c for c in wanted if c not in present]
    if len(present) == 1:
        raise PipelineError(
            f"only one class present in {root}: found class folder {present[0]!r}, "
            f"missing {missing} (data.classes: {list(wanted)})"
        )
    if missing:
        what = "is a file, not a class folder" if (root / missing[0]).exists() else "is missing"
        raise PipelineError(
            f"class folder {str(root / missing[0])!r} {what} "
            f"(data.classes: {list(wanted)}; folders in {root}: {folders})"
        )
    items: list[tuple[Path, int]] = []
    ignored = 0
    for name in wanted:
        folder = root / name
        images = []
        for path in sorted(folder.iterdir(), key=lambda p: _nfc(p.name)):
            if path.name.startswith("."):
                continue
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(path)
            else:
                ignored += 1
        if not images:
            raise PipelineError(
                f"class folder {str(folder)!r} is empty: no {'/'.join(IMAGE_EXTENSIONS)} files"
            )
        items += [(path, classes[name]) for path in images]
    extra = tuple(f for f in folders if f not in wanted)
    return items, extra, ignored


def count_nested_images(root: str | Path, classes: Mapping[str, int]) -> int:
    """Image files inside sub-folders of the class folders: the loader reads one level only."""
    count = 0
    for name in class_names(classes):
        folder = Path(root) / name
        if folder.is_dir():
            count += sum(
                1
                for path in folder.rglob("*")
                if path.parent != folder and path.is_file()
                and path.suffix.lower() in IMAGE_EXTENSIONS
            )  # fmt: skip
    return count


def _to_grey(im: Image.Image) -> Image.Image:
    """Reduce any supported mode to one 8-bit channel (rules at the top of this section)."""
    if im.mode == "L":
        return im
    if im.mode in _SIXTEEN_BIT_MODES:
        a = np.asarray(im).astype(np.float64) * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))
    if im.mode == "F":
        raise BadImageError("32-bit float image: intensity scale unknown, not supported")
    if im.mode in ("PA", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGBA" if im.mode == "PA" else "RGB")
    return im.convert("L")  # 1, L(A), P, RGB(A/X): luma, alpha dropped


def decode_image(
    data: bytes, image_size: int, min_side: int = 1, max_pixels: int = 40_000_000
) -> np.ndarray:
    """Decode one file's bytes to a uint8 (image_size, image_size) greyscale array.

    The pixel count is checked from the header before any pixel data is decoded (decompression-bomb
    guard). Raises BadImageError with the reason for any unusable file.
    """
    if not data:
        raise BadImageError("empty file (0 bytes)")
    # data.max_pixels governs (checked below from the header, before decoding), not Pillow's own
    # limit (~89 M pixels, refusing at twice that), which would cap the key silently
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # own limit below
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise BadImageError(
                        f"{w}x{h} = {w * h} pixels exceeds data.max_pixels = {max_pixels} "
                        "(refused before decoding)"
                    )
                if min(w, h) < min_side:
                    raise BadImageError(f"{w}x{h} is smaller than data.min_side = {min_side} px")
                im.load()
                ImageOps.exif_transpose(im, in_place=True)
                grey = _to_grey(im).resize((image_size, image_size), Image.Resampling.BILINEAR)
                return np.asarray(grey, dtype=np.uint8).copy()
    except BadImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"refused as a decompression bomb ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise BadImageError("not an image (no known image format)") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure means a bad file, reported by name
        detail = " ".join(str(exc).split())  # one line
        raise BadImageError(f"cannot decode: {type(exc).__name__}: {detail}") from exc


def load_image_folder(
    root: str | Path,
    classes: Mapping[str, int],
    image_size: int,
    *,
    min_side: int = 1,
    max_pixels: int = 40_000_000,
    skip_bad_files: bool = False,
) -> LabelledImages:
    """Read a Kaggle-layout dataset: every file decoded, bad files reported together, duplicates grouped.

    All bad files are collected first; then one PipelineError lists them (the first few and a count)
    unless `skip_bad_files`, in which case they are left out and returned in `skipped`.
    Byte-identical files (sha256) share a group id; in different classes they are an error.
    """
    root = Path(root)
    items, extra, ignored = list_image_files(root, classes)
    names = class_names(classes)
    xs, ys, ids, digests, bad = [], [], [], [], []
    for path, label in items:
        file_id = _nfc(path.relative_to(root).as_posix())
        try:
            data = path.read_bytes()
            img = decode_image(data, image_size, min_side, max_pixels)
        except OSError as exc:
            bad.append(f"{file_id} (unreadable: {exc.strerror or exc})")
            continue
        except BadImageError as exc:
            bad.append(f"{file_id} ({exc})")
            continue
        xs.append(img)
        ys.append(label)
        ids.append(file_id)
        digests.append(hashlib.sha256(data).hexdigest())
    if bad and not skip_bad_files:
        raise PipelineError(
            f"{len(bad)} bad image file(s) in {root} (fix or remove them, or set "
            f"data.skip_bad_files: true): {_listed(bad)}"
        )
    y = np.asarray(ys, dtype=np.int64)
    for label, name in enumerate(names):
        if not (y == label).any():
            raise PipelineError(
                f"class folder {str(root / name)!r} has no readable images (all skipped as bad)"
            )
    first: dict[str, int] = {}  # digest -> index of its first file
    groups = np.empty(len(ids), dtype=np.int64)
    group_of: dict[str, int] = {}
    conflicts = []
    for i, digest in enumerate(digests):
        j = first.setdefault(digest, i)
        groups[i] = group_of.setdefault(digest, len(group_of))
        if y[j] != y[i]:
            conflicts.append(f"{ids[j]} = {ids[i]}")
    if conflicts:
        raise PipelineError(
            f"byte-identical files in different class folders (contradictory labels) in {root}: "
            f"{_listed(conflicts)}"
        )
    return LabelledImages(
        x=np.stack(xs)[:, None],
        y=y,
        files=np.asarray(ids, dtype=str),
        groups=groups,
        classes=names,
        skipped=tuple(bad),
        ignored_folders=extra,
        ignored_files=ignored,
    )


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

    Per class, groups of byte-identical images are shuffled (generator(seed, SPLIT_STREAM, label))
    and dealt to test until round(test_fraction * n) images, then to val until
    round(val_fraction * (n - n_test)), the rest to train; a group never straddles two splits.
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
        order = generator(seed, SPLIT_STREAM, label).permutation(len(gids))
        n = len(idx)
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
            raise PipelineError(
                f"class {name!r} has only {n} images: too few to split with data.test_fraction="
                f"{test_fraction} and data.val_fraction={val_fraction}"
            )
    out = {}
    for stream, s in enumerate(SPLITS, start=len(classes)):
        a = np.sort(np.concatenate(parts[s])) if parts[s] else np.zeros(0, dtype=np.int64)
        out[s] = a[generator(seed, SPLIT_STREAM, stream).permutation(len(a))]
    return out


def split_images(
    images: LabelledImages, seed: int, test_fraction: float, val_fraction: float
) -> Splits:
    """Split a dataset into train/val/test (see `split_indices`)."""
    idx = split_indices(images.y, images.groups, images.classes, seed, test_fraction, val_fraction)
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


def evaluation_subset(y: np.ndarray, max_images: int, seed: int, stream: int) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset of at most `max_images` (0: all).

    Why: attacks through every defence and certification dominate the pipeline's cost, and a
    robust accuracy on a hundred or so images (binomial s.e. <= 5 points) decides the verdicts.
    `stream` gives each stage its own subset.
    """
    if max_images == 0 or max_images >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    state = int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])
    chosen, _ = train_test_split(
        np.arange(len(y)), train_size=max_images, stratify=y, random_state=state
    )
    return np.sort(chosen)
