"""Grouped vs random k-fold cross-validation of a classifier (train_cnn.arch) over seeds.

    python bench/leakage_cv.py [--source ../shared/datasets/sarscov2-ct] [--image-size 64]
        [--arch paper|resnet18] [--augment on|off] [--epochs 30] [--folds 5] [--seeds 0 1 2]
        [--out bench/results/leakage]

The classifier, its training loop and its settings (architecture, lr, batch size, augmentation)
are the project's `train_cnn` from params.yaml; --arch, --augment and --epochs override them (best-validation
weights are kept, as in the stage). Scans are the `prepare` stage's groups (data.groups,
data.group_threshold). Resumable: a (split, seed, fold) already in cv_folds.csv is not run again,
and both CSVs are rewritten after every fold, so a stopped run loses at most the fold in flight.
Writes cv_folds.csv (one row per fold), cv_scans.csv (per fold and scan: test images and correct
ones, for the bootstrap), cv_summary.json and cv_summary.md.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin

import argparse
import dataclasses
import json
import os
from pathlib import Path

import pandas as pd

from advdenoise.core.io import write_csv
from advdenoise.core.params import load_params
from advdenoise.core.runtime import cpu_model, setup
from advdenoise.data.folders import load_image_folder
from advdenoise.data.groups import scan_groups, thumbnails
from advdenoise.sweeps import crossval

ROOT = Path(__file__).resolve().parents[1]


def read_frame(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def summary_markdown(summary: dict, command: str, machine: str, folds: pd.DataFrame) -> str:
    lines = [
        f"# Random vs grouped cross-validation of the {summary['arch']} classifier",
        "",
        f"`{command}` ({machine}). Pooled accuracy: every image tested once per seed; 95% CI by a "
        "bootstrap over scans (2000 draws); mean ± sd over seeds. AUROC and the 1-NN leakage "
        "probe (test thumbnails among the training folds') are means over folds.",
        "",
        "| split | seeds | CV accuracy, mean ± sd | 95% CI per seed (scan bootstrap) | "
        "AUROC | 1-NN accuracy | test images per seed |",
        "|---|---:|---|---|---|---|---:|",
    ]
    for split, s in summary["splits"].items():
        seeds = sorted(int(k.split(".")[0][5:]) for k in s if k.endswith(".ci_low"))
        cis = "; ".join(
            f"{100 * s[f'seed_{n}.accuracy']:.1f} [{100 * s[f'seed_{n}.ci_low']:.1f}, "
            f"{100 * s[f'seed_{n}.ci_high']:.1f}]"
            for n in seeds
        )
        lines.append(
            f"| {split} | {int(s['seeds'])} | {100 * s['accuracy.mean']:.1f} ± "
            f"{100 * s['accuracy.sd']:.1f}% | {cis} | {s['auroc.mean']:.3f} ± {s['auroc.sd']:.3f} "
            f"| {100 * s['nn_accuracy.mean']:.1f} ± {100 * s['nn_accuracy.sd']:.1f}% | "
            f"{s['images']:.0f} |"
        )
    lines += ["", "Per fold:", "", "| " + " | ".join(folds.columns) + " |"]
    lines.append("|" + "---|" * len(folds.columns))
    for row in folds.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v)
                                       for v in row) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/datasets/sarscov2-ct"))
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--arch", help="train_cnn.arch (default: params.yaml's)")
    parser.add_argument(
        "--augment", choices=("on", "off"), help="train_cnn.augment (default: params')"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--splits", nargs="+", default=list(crossval.SPLITS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "leakage")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    d, cfg = params.data, dataclasses.replace(params.train_cnn, epochs=args.epochs)
    if args.arch:
        cfg = dataclasses.replace(cfg, arch=args.arch)
    if args.augment:
        cfg = dataclasses.replace(cfg, augment=args.augment == "on")
    device = setup(params.seed, params.threads, params.device)
    source = args.source if args.source.is_absolute() else ROOT / args.source
    images = load_image_folder(source, d.classes, args.image_size, workers=params.threads)
    scans = scan_groups(images, d.groups, d.group_threshold, source)
    thumbs = thumbnails(images.x)
    folds_csv, scans_csv = args.out / "cv_folds.csv", args.out / "cv_scans.csv"
    folds = read_frame(folds_csv)
    scan_rows = read_frame(scans_csv)
    done = set() if folds is None else {(r.split, r.seed, r.fold) for r in folds.itertuples()}
    if scan_rows is not None:  # a fold stopped after its scan counts were written runs again
        keys = zip(scan_rows.split, scan_rows.seed, scan_rows.fold, strict=True)
        scan_rows = scan_rows[[k in done for k in keys]].reset_index(drop=True)
    for split, seed, fold in crossval.pending(done, args.splits, args.seeds, args.folds):
        out = crossval.run_fold(images, thumbs, scans, split, seed, fold, args.folds,
                                d.val_fraction, cfg, device)  # fmt: skip
        print(out.result)
        row = pd.DataFrame([out.result.row()])
        counts = pd.DataFrame(
            [(split, seed, fold, scan, n, c) for scan, (n, c) in sorted(out.scan_counts.items())],
            columns=["split", "seed", "fold", "scan", "n", "correct"],
        )
        folds = row if folds is None else pd.concat([folds, row], ignore_index=True)
        scan_rows = (
            counts if scan_rows is None else pd.concat([scan_rows, counts], ignore_index=True)
        )
        args.out.mkdir(parents=True, exist_ok=True)
        write_csv(scans_csv, scan_rows)  # first: a fold row always has its scan counts
        write_csv(folds_csv, folds)
    if folds is None or scan_rows is None:
        raise SystemExit("nothing to summarise: no fold has run")
    results = [crossval.FoldResult(**r) for r in folds.to_dict("records")]
    counts_by_fold: dict[tuple[str, int, int], dict[int, tuple[int, int]]] = {}
    for r in scan_rows.itertuples():
        counts_by_fold.setdefault((r.split, r.seed, r.fold), {})[r.scan] = (r.n, r.correct)
    command = (
        f"python bench/leakage_cv.py --source {args.source} --image-size {args.image_size} "
        f"--arch {cfg.arch} --augment {'on' if cfg.augment else 'off'} --epochs {args.epochs} "
        f"--folds {args.folds} --seeds {' '.join(map(str, args.seeds))}"
    )
    machine = f"{cpu_model()}, {os.cpu_count()} cores, {device.type}"
    summary = {
        "command": command,
        "machine": machine,
        "image_size": args.image_size,
        "arch": cfg.arch,
        "augment": cfg.augment,
        "epochs": args.epochs,
        "splits": crossval.summarise(results, counts_by_fold, args.folds),
    }
    (args.out / "cv_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "cv_summary.md").write_text(summary_markdown(summary, command, machine, folds))
    print((args.out / "cv_summary.md").read_text())


if __name__ == "__main__":
    main()
