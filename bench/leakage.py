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
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from advdenoise.core.params import load_params, read_yaml
from advdenoise.data.folders import load_image_folder
from advdenoise.data.groups import infer_groups, merge, thumbnails

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.6, 0.8, 1.0, 1.2, 1.4)
SPLITS = ("random", "grouped")


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
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared/datasets/sarscov2-ct")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "leakage")
    args = parser.parse_args()
    d = load_params(ROOT / "params.yaml").data
    images = load_image_folder(args.source, d.classes, args.image_size, workers=2)
    thumbs = thumbnails(images.x)
    sweep = {
        f"{t:g}": group_sizes(merge(images.groups, infer_groups(images.files, images.y, thumbs, t)))
        for t in THRESHOLDS
    }
    with tempfile.TemporaryDirectory() as tmp:
        probes = {
            s: run_prepare(args.source.resolve(), args.image_size, s, Path(tmp)) for s in SPLITS
        }
    args.out.mkdir(parents=True, exist_ok=True)
    for s, result in probes.items():
        (args.out / f"prepare_{s}.json").write_text(json.dumps(result["metrics"], indent=2) + "\n")
    command = f"python bench/leakage.py --source {args.source} --image-size {args.image_size}"
    summary = {
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {shutil.os.cpu_count()} cores",
        "image_size": args.image_size,
        "default_threshold": d.group_threshold,
        "threshold_sweep": sweep,
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
        "| threshold | groups | singletons | size q1 | median | q3 | max |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t, g in sweep.items():
        lines.append(
            f"| {t} | {g['groups']} | {g['singletons']} | {g['size_q1']:g} | "
            f"{g['size_median']:g} | {g['size_q3']:g} | {g['size_max']} |"
        )
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
