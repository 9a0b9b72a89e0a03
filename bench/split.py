"""One config under both splits: what the paper's random slice-level split adds to the scores.

    dvc exp run -S data.split=random      # beside a grouped baseline (the default), or the reverse
    python bench/split.py [--show show.json] [--out bench/results/split]

Reads `dvc exp show --json` (run here unless --show): the baseline commit and, of its finished
experiments, the latest whose params differ from the baseline's in `data.split` only. Writes
summary.md and summary.json: the leakage probe, the CNN, the paper's autoencoder and every
defence's worst case under each split.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from advdenoise.defences.specs import DEFENCES
from advdenoise.sweeps.seeds import read_show, runs_varying

SPLIT_KEY = "params.yaml.data.split"
FIGURES = (  # (metrics file stem, key, what it is)
    ("prepare", "leakage.groups_shared", "scan groups with images in train and test"),
    ("prepare", "leakage.nn_accuracy", "1-NN accuracy of test thumbnails among train"),
    ("train_cnn", "test.accuracy", "CNN clean test accuracy"),
    ("denoise", "denoised_clean_accuracy", "CNN on clean test images through the paper's AE"),
    ("denoise", "pgd.denoised_accuracy", "CNN on PGD images (attack.eps) through the AE"),
    *(
        (
            "robustness",
            f"{d}.robust_accuracy",
            f"{d}: robust accuracy (every attack) at robustness.eps",
        )
        for d in DEFENCES
    ),
)


def split_runs(show: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """split -> metrics (file stem -> flat metrics) of the baseline and its split experiments."""
    return {split: run.metrics for split, run in sorted(runs_varying(show, SPLIT_KEY).items())}


def rows(runs: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per figure that some run reports: figure, what, and its value per split."""
    out = []
    for stem, key, what in FIGURES:
        values = {s: m.get(stem, {}).get(key) for s, m in runs.items()}
        if any(v is not None for v in values.values()):
            out.append({"figure": f"{stem}:{key}", "what": what, **values})
    return out


def markdown(table: Sequence[Mapping[str, Any]], splits: Sequence[str]) -> str:
    lines = ["| figure | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    for row in table:
        cells = [
            "-" if v is None else (f"{v:g}" if "groups" in row["figure"] else f"{100 * v:.1f}%")
            for v in (row[s] for s in splits)
        ]
        lines.append(f"| {row['what']} (`{row['figure']}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--show", type=Path, help="saved `dvc exp show --json` output ('-': stdin)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "split")
    args = p.parse_args(argv)
    runs = split_runs(read_show(args.show))
    if len(runs) < 2:
        print(f"error: need runs of both splits, found {sorted(runs)}; run "
              "dvc exp run -S data.split=random (or grouped)", file=sys.stderr)  # fmt: skip
        return 2
    table = rows(runs)
    text = markdown(table, list(runs))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text(text, encoding="utf-8")
    (args.out / "summary.json").write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
