"""prepare: read the dataset (or generate the synthetic default), split it, write the splits.

Outputs: <out>/splits.npz (advdenoise.data.splits contract), <metrics> (counts per split and class,
duplicate groups, skipped files, a mean-intensity shortcut baseline, the leakage probe of this
split and of the other),
<plots>/samples.png, <plots>/counts.csv and <plots>/nn_distance.{csv,png}. `--data-root` is the
DVC-tracked folder for real data; `data.source` is read.
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
from advdenoise.core.params import load_params
from advdenoise.data import folders, leakage, sources
from advdenoise.data import splits as data
from advdenoise.data.groups import thumbnails
from advdenoise.figures.prepare import nn_distance_figure, samples_figure


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(__doc__, argv, "--data-root", "--out", "--metrics", "--plots")
    params = load_params(args.params)
    d = params.data
    images = sources.load_images(d, params.seed, params.threads)
    both, groups = sources.split_dataset(d, images, params.seed)
    splits = both[d.split]
    thumbs = thumbnails(images.x)
    leaks = {kind: leakage.probe(images, thumbs, groups, s) for kind, s in both.items()}
    leak = leaks[d.split]
    metrics = {**data.prepare_metrics(images, splits), **leakage.leakage_metrics(leaks, d.split)}
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
    if not d.is_synthetic and not Path(d.source).resolve().is_relative_to(args.data_root.resolve()):
        print(
            f"note: data.source {d.source!r} is outside {str(args.data_root)!r}; DVC will not "
            "notice changes to its images (see data/raw/README.md)",
            file=sys.stderr,
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
    write_csv(args.plots / "nn_distance.csv", leak.nn_distance)
    save_figure(args.plots / "samples.png", fig)
    save_figure(args.plots / "nn_distance.png", nn_distance_figure(leak, d.split))
    write_json(args.metrics, metrics)
    print(f"prepare: {', '.join(f'{k}={v}' for k, v in metrics.items() if 'total' in k)}")


if __name__ == "__main__":
    raise SystemExit(main())
