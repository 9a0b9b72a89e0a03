"""The `prepare` stage's data, as params.yaml's `data` section asks: the images, their scan groups
and the split (slice-level as in the paper, or by scan).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advdenoise.core.errors import PipelineError
from advdenoise.core.params import DataParams
from advdenoise.data import folders, synthetic
from advdenoise.data.groups import scan_groups
from advdenoise.data.splits import LabelledImages, Splits, class_names, split_images


def load_images(d: DataParams, seed: int, workers: int) -> LabelledImages:
    """The synthetic default, or the folder `data.source` (relative to the working directory)."""
    names = class_names(d.classes)
    if d.is_synthetic:
        slices = (d.synthetic_slices[0], d.synthetic_slices[1])
        return synthetic.generate(
            d.synthetic_counts, names, d.image_size, seed, workers=workers, slices=slices
        )
    return _read_folder(d, d.source, d.classes, "data.source", workers)


def load_external(d: DataParams, workers: int) -> LabelledImages | None:
    """The external test set `data.external` (another site's images: tested, never trained on),
    read with data.source's checks and labelled by data.external_classes; None when unset."""
    if not d.external:
        return None
    return _read_folder(d, d.external, d.external_classes, "data.external", workers)


def _read_folder(
    d: DataParams, root: str, classes: dict[str, int], key: str, workers: int
) -> LabelledImages:
    """The folder `root` (params key `key`) with the data section's image checks."""
    return folders.load_image_folder(
        Path(root),
        classes,
        d.image_size,
        min_side=d.min_side,
        max_pixels=d.max_pixels,
        skip_bad_files=d.skip_bad_files,
        workers=workers,
        key=key,
    )


def check_disjoint(external: LabelledImages, internal: Splits) -> None:
    """Refuse an external set that holds an image of the dataset (the same pixels at image_size):
    a copy of a training image is no test of another site."""
    seen: dict[bytes, str] = {}
    for split in (internal.train, internal.val, internal.test):
        for img, name in zip(split.x, split.files, strict=True):
            seen.setdefault(img.tobytes(), str(name))
    shared = [
        f"{name} = {seen[img.tobytes()]}"
        for img, name in zip(external.x, external.files, strict=True)
        if img.tobytes() in seen
    ]
    if shared:
        raise PipelineError(
            f"data.external shares {len(shared)} image(s) with data.source (same pixels at "
            f"data.image_size): {folders.listed(shared)}"
        )


def split_dataset(
    d: DataParams, images: LabelledImages, seed: int
) -> tuple[dict[str, Splits], np.ndarray]:
    """Both splits, keyed "random" and "grouped", and the scan groups.

    `random` passes the duplicate groups alone, so it is the paper's slice-level split exactly;
    `grouped` passes the scan groups, so no scan has slices on two sides. The split of
    `data.split` is the one written; the other is only probed for leakage, and left out where it
    cannot be made (too few groups).
    """
    root = None if d.is_synthetic else Path(d.source)
    groups = scan_groups(images, d.groups, d.group_threshold, root)
    out = {}
    for kind, by in (("random", None), ("grouped", groups)):
        try:
            out[kind] = split_images(images, seed, d.test_fraction, d.val_fraction, groups=by)
        except PipelineError:
            if kind == d.split:
                raise
    return out, groups
