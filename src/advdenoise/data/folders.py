"""Reading a dataset folder in the Kaggle layout: <root>/<class folder>/<image>, for `prepare`.

Every image becomes one 8-bit grey channel at image_size x image_size; byte-identical files are
grouped (the splitter keeps a group in one split); every unusable file is reported at once.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from advdenoise.core.errors import PipelineError
from advdenoise.data.splits import LabelledImages, class_names

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
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_MAX_LISTED = 5  # bad files named in an error message before "... and N more"


class BadImageError(Exception):
    """One unusable file; the message is the reason. Collected per dataset, then reported at once."""


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def listed(items: list[str]) -> str:
    head = "; ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return head + (f"; ... and {more} more" if more > 0 else "")


def list_image_files(
    root: str | Path, classes: Mapping[str, int], key: str = "data.source"
) -> tuple[list[tuple[Path, int]], tuple[str, ...], int]:
    """Sorted (path, label) of every image file; plus ignored root folders and ignored-entry count.

    Raises PipelineError naming the path for a missing root, a root that is a file, a missing or
    empty class folder, and a root that holds only one of the classes. `key` is the params key
    that names the root (`data.source`, `data.external`); its classes are `<key>`'s `classes`.
    """
    root = Path(root)
    if not root.exists():
        raise PipelineError(
            f"{key} directory {str(root)!r} does not exist (expected <root>/<class>/*.png"
            + (", or data.source: synthetic)" if key == "data.source" else ")")
        )
    if not root.is_dir():
        raise PipelineError(f"{key} {str(root)!r} is a file, not a directory of class folders")
    wanted = class_names(classes)
    classes_key = "data.classes" if key == "data.source" else f"{key}_classes"
    folders = sorted(_nfc(p.name) for p in root.iterdir() if p.is_dir())
    folders = [f for f in folders if not f.startswith(".")]
    present = [c for c in wanted if (root / c).is_dir()]
    missing = [c for c in wanted if c not in present]
    if len(present) == 1:
        raise PipelineError(
            f"only one class present in {root}: found class folder {present[0]!r}, "
            f"missing {missing} ({classes_key}: {list(wanted)})"
        )
    if missing:
        what = "is a file, not a class folder" if (root / missing[0]).exists() else "is missing"
        raise PipelineError(
            f"class folder {str(root / missing[0])!r} {what} "
            f"({classes_key}: {list(wanted)}; folders in {root}: {folders})"
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
    """Reduce any supported mode to one 8-bit channel (rules at the top of this module)."""
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
    # (with no limit, Pillow warns of no decompression bomb either: nothing to silence, which keeps
    # this function free of the process-wide warning filters and safe to run in threads)
    Image.MAX_IMAGE_PIXELS = None
    try:
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
    workers: int = 1,
    key: str = "data.source",
) -> LabelledImages:
    """Read a Kaggle-layout dataset: every file decoded, bad files reported together, duplicates grouped.

    All bad files are collected first; then one PipelineError lists them (the first few and a count)
    unless `skip_bad_files`, in which case they are left out and returned in `skipped`.
    Byte-identical files (sha256) share a group id; in different classes they are an error.
    `workers` threads decode at once (Pillow decodes and resizes outside the GIL); results keep
    the listing's order, so the output does not depend on `workers`.
    """
    root = Path(root)
    items, extra, ignored = list_image_files(root, classes, key)
    names = class_names(classes)

    def read(path: Path) -> tuple[np.ndarray | None, str]:
        """(image, sha256) of one file, or (None, reason) for a bad one."""
        try:
            data = path.read_bytes()
            return decode_image(data, image_size, min_side, max_pixels), hashlib.sha256(
                data
            ).hexdigest()
        except OSError as exc:
            return None, f"unreadable: {exc.strerror or exc}"
        except BadImageError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        decoded = list(pool.map(read, [path for path, _ in items]))
    xs, ys, ids, digests, bad = [], [], [], [], []
    for (path, label), (img, detail) in zip(items, decoded, strict=True):
        file_id = _nfc(path.relative_to(root).as_posix())
        if img is None:
            bad.append(f"{file_id} ({detail})")
            continue
        xs.append(img)
        ys.append(label)
        ids.append(file_id)
        digests.append(detail)
    if bad and not skip_bad_files:
        raise PipelineError(
            f"{len(bad)} bad image file(s) in {root} (fix or remove them, or set "
            f"data.skip_bad_files: true): {listed(bad)}"
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
            f"{listed(conflicts)}"
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
