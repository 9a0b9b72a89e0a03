"""Scan leakage on a real dataset: the groups that inference finds per threshold, and the `prepare`
stage's leakage probe under the random and the grouped split.

    python bench/leakage.py [--source ../shared/datasets/sarscov2-ct] [--image-size 64]

The probe runs the stage itself (`stages/prepare.py`, the project's params.yaml with
data.source, data.image_size and data.split set), as `dvc exp run prepare -S data.source=...
-S data.split=...` would. Writes bench/results/leakage/{summary.md,summary.json,prepare_<split>.json}.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from advdenoise.core.errors import PipelineError
from advdenoise.core.params import DataParams, load_params, read_yaml
from advdenoise.core.runtime import cpu_model
from advdenoise.data.folders import load_image_folder
from advdenoise.data.groups import folder_steps, infer_groups, merge, thumbnails
from advdenoise.data.leakage import probe
from advdenoise.data.splits import LabelledImages, split_images

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4)
SPLITS = ("random", "grouped")
SEEDS = tuple(range(10))


def group_sizes(groups: np.ndarray) -> dict[str, float]:
    _, sizes = np.unique(groups, return_counts=True)
    q1, median, q3 = np.percentile(sizes, [25, 50, 75])
    return {
        "groups": len(sizes),
        "singletons": int((sizes == 1).sum()),
        "size_q1": float(q1),
        "size_median": float(median),
        "size_q3": float(q3),
        "size_max": int(sizes.max()),
    }


def grouped_nn_accuracy(
    images: LabelledImages, thumbs: np.ndarray, groups: np.ndarray, d: DataParams
) -> list[float]:
    """1-NN accuracy of the grouped split, one per seed that can split with these groups."""
    accs = []
    for seed in SEEDS:
        try:
            splits = split_images(images, seed, d.test_fraction, d.val_fraction, groups=groups)
        except PipelineError:  # too few groups: the dealing left a split without any
            continue
        accs.append(probe(images, thumbs, groups, splits).nn_accuracy)
    return accs


def run_prepare(source: Path, image_size: int, split: str, work: Path) -> dict:
    raw = read_yaml((ROOT / "params.yaml").read_text())
    raw["data"].update(source=str(source), image_size=image_size, split=split)
    params = work / f"params_{split}.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = work / split
    cmd = [sys.executable, str(ROOT / "stages" / "prepare.py"), "--params", str(params)]
    cmd += ["--data-root", str(ROOT / "data" / "raw"), "--out", str(out / "data")]
    cmd += ["--metrics", str(out / "prepare.json"), "--plots", str(out / "plots")]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    metrics = json.loads((out / "prepare.json").read_text())
    return {"seconds": round(time.perf_counter() - start, 1), "metrics": metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("../shared/datasets/sarscov2-ct"))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "leakage")
    args = parser.parse_args()
    d = load_params(ROOT / "params.yaml").data
    source = ROOT / args.source  # relative to the project root (an absolute path stays as it is)
    images = load_image_folder(source, d.classes, args.image_size, workers=2)
    thumbs = thumbnails(images.x)
    sweep = {}
    for t in THRESHOLDS:
        groups = merge(images.groups, infer_groups(images.files, images.y, thumbs, t))
        accs = grouped_nn_accuracy(images, thumbs, groups, d)
        sweep[f"{t:g}"] = group_sizes(groups) | {
            "grouped_nn_accuracy_mean": round(float(np.mean(accs)), 4) if accs else None,
            "grouped_nn_accuracy_sd": round(float(np.std(accs, ddof=1)), 4) if accs else None,
            "unsplittable_seeds": len(SEEDS) - len(accs),
        }
    steps = np.concatenate([d for _, d in folder_steps(images.files, images.y, thumbs)])
    histogram = np.histogram(steps, bins=np.arange(0, 2.01, 0.1))[0].tolist()
    with tempfile.TemporaryDirectory() as tmp:
        probes = {s: run_prepare(source.resolve(), args.image_size, s, Path(tmp)) for s in SPLITS}
    args.out.mkdir(parents=True, exist_ok=True)
    for s, result in probes.items():
        (args.out / f"prepare_{s}.json").write_text(json.dumps(result["metrics"], indent=2) + "\n")
    command = f"python bench/leakage.py --source {args.source} --image-size {args.image_size}"
    summary = {
        "command": command,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "image_size": args.image_size,
        "default_threshold": d.group_threshold,
        "threshold_sweep": sweep,
        "consecutive_distance_histogram": {"bin_width": 0.1, "counts": histogram},
        "probe": {
            s: {k: v for k, v in r["metrics"].items() if k.startswith("leakage.")}
            | {"test.total": r["metrics"]["test.total"], "seconds": r["seconds"]}
            for s, r in probes.items()
        },
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# Scan leakage on the real data",
        "",
        f"`{command}` ({summary['machine']}; images at {args.image_size} px, thumbnails 32 x 32).",
        "",
        "Groups inferred per `data.group_threshold` (runs of consecutive files per class folder,"
        " byte-identical files merged):",
        "",
        "| threshold | groups | singletons | size q1 | median | q3 | max | grouped 1-NN accuracy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t, g in sweep.items():
        lines.append(
            f"| {t} | {g['groups']} | {g['singletons']} | {g['size_q1']:g} | "
            f"{g['size_median']:g} | {g['size_q3']:g} | {g['size_max']} | "
            + (
                f"{g['grouped_nn_accuracy_mean']:.3f} ± {g['grouped_nn_accuracy_sd']:.3f}"
                if g["unsplittable_seeds"] == 0
                else f"{g['unsplittable_seeds']} of {len(SEEDS)} seeds cannot split"
            )
            + " |"
        )
    lines += [
        "",
        f"(grouped 1-NN accuracy: the probe's figure under the grouped split, mean ± sd over "
        f"seeds {SEEDS[0]}-{SEEDS[-1]}; a seed that cannot split, with too few groups in a "
        "class, is left out and counted.)",
        "",
        "RMS distance between consecutive files of a class folder (natural order), counts per bin"
        " of 0.1 from 0 to 2:",
        "",
        "`" + " ".join(map(str, histogram)) + "`",
    ]
    lines += [
        "",
        f"The `prepare` stage's leakage probe (threshold {d.group_threshold:g}):",
        "",
        "| data.split | leakage.nn_accuracy | leakage.groups_shared | leakage.groups | test images | s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s, p in summary["probe"].items():
        lines.append(
            f"| {s} | {p['leakage.nn_accuracy']:.4f} | {p['leakage.groups_shared']} | "
            f"{p['leakage.groups']} | {p['test.total']} | {p['seconds']} |"
        )
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
