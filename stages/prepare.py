"""prepare: read the dataset (or generate the synthetic default), split it, write the splits.

Outputs: <out>/splits.npz (advdenoise.data.splits contract), <metrics> (counts per split and class,
duplicate groups, skipped files, a mean-intensity shortcut baseline), <plots>/samples.png and
<plots>/counts.csv. `--data-root` is the DVC-tracked folder for real data; `data.source` is read.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from advdenoise.core import cli
from advdenoise.core.errors import entrypoint
from advdenoise.core.io import save_figure, write_csv, write_json
from advdenoise.core.params import DataParams, load_params
from advdenoise.data import folders, synthetic
from advdenoise.data import splits as data
from advdenoise.figures.prepare import samples_figure


def _load(d: DataParams, seed: int, data_root: Path, workers: int) -> data.LabelledImages:
    names = data.class_names(d.classes)
    if d.is_synthetic:
        return synthetic.generate_images(
            d.synthetic_counts, names, d.image_size, seed, workers=workers
        )
    source = Path(d.source)  # relative to the working directory (the project root under DVC)
    kwargs = {
        "min_side": d.min_side,
        "max_pixels": d.max_pixels,
        "skip_bad_files": d.skip_bad_files,
        "workers": workers,
    }
    images = folders.load_image_folder(source, d.classes, d.image_size, **kwargs)
    if not source.resolve().is_relative_to(data_root.resolve()):
        print(
            f"note: data.source {str(source)!r} is outside {str(data_root)!r}; DVC will not "
            "notice changes to its images (see data/raw/README.md)",
            file=sys.stderr,
        )
    return images


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(__doc__, argv, "--data-root", "--out", "--metrics", "--plots")
    params = load_params(args.params)
    d = params.data
    images = _load(d, params.seed, args.data_root, params.threads)
    splits = data.split_images(images, params.seed, d.test_fraction, d.val_fraction)
    metrics = data.prepare_metrics(images, splits)
    table = pd.DataFrame(
        [(s, c, metrics[f"{s}.{c}"]) for s in data.SPLITS for c in splits.classes],
        columns=["split", "class", "count"],
    )
    source = "synthetic" if d.is_synthetic else Path(d.source).name
    fig = samples_figure(splits, title=f"{source}: training examples ({d.image_size} px)")
    for bad in images.skipped:
        print(f"note: skipped bad file {bad}", file=sys.stderr)
    if images.ignored_folders:
        print(
            f"note: ignored folders not in data.classes: {images.ignored_folders}", file=sys.stderr
        )
    nested = 0 if d.is_synthetic else folders.count_nested_images(d.source, d.classes)
    if nested:
        print(
            f"note: {nested} image(s) in sub-folders of the class folders of {d.source} are "
            "ignored (only <root>/<class>/<image> is read)",
            file=sys.stderr,
        )
    data.save_splits(args.out, splits)
    write_csv(args.plots / "counts.csv", table)
    save_figure(args.plots / "samples.png", fig)
    write_json(args.metrics, metrics)
    print(f"prepare: {', '.join(f'{k}={v}' for k, v in metrics.items() if 'total' in k)}")


if __name__ == "__main__":
    raise SystemExit(main())
