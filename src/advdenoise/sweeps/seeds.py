"""Across seeds: mean ± sd of the headline figures and whether each defence's verdict holds.

One seed decides nothing: the CNN, the denoisers and the attack starts all move with it. Run the
pipeline for several seeds as DVC experiments, then aggregate what `dvc exp show --json` reports:

    dvc exp run --queue -S 'seed=0,1,2' && dvc exp run --run-all
    advdenoise-seeds                      # or: dvc exp show --json | advdenoise-seeds --show -
    advdenoise-seeds --runs DIR DIR ...   # runs kept as folders: <stage>.json and params.yaml

The baseline commit counts as the run of its seed; of its experiments, only those whose params
equal the baseline's except for `seed` are used (one per seed, the latest), so other experiments
in the same repository do not leak in. A defence's verdict
(`verdicts.verdict`, the rule of the report) is stated only when every seed gives the same one.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from advdenoise.core.io import flatten
from advdenoise.core.params import DEFENCES, load_params
from advdenoise.evaluation.verdicts import verdict

# (metrics file stem, key) of the figures the README quotes; `{d}` expands to every defence
HEADLINE = (
    ("train_cnn", "test.accuracy"),
    ("robustness", "{d}.clean_accuracy"),
    ("robustness", "{d}.robust_accuracy"),
    ("robustness", "detector.adaptive.tpr_at_5fpr"),
    ("embed", "detector.pgd.auroc"),
    ("certify", "cnn.sigma_0.25.radius_0.25.certified_accuracy"),
    ("certify", "ae_gauss.sigma_0.25.radius_0.25.certified_accuracy"),
)


SEED_KEY = "params.yaml.seed"  # the run seed, as `_params` flattens it


@dataclass(frozen=True)
class SeedRun:
    name: str
    seed: int
    timestamp: str
    metrics: dict[str, dict[str, float | bool]]  # metrics file stem -> flat numeric metrics


def _params(data: Mapping[str, Any]) -> dict[str, Any]:
    """The params of one `dvc exp show --json` entry's data, flat ("params.yaml.data.split")."""
    return flatten({f: (v or {}).get("data", {}) for f, v in (data.get("params") or {}).items()})


def _metrics(data: Mapping[str, Any]) -> dict[str, dict[str, float | bool]]:
    """The numeric metrics of one entry's data: metrics file stem -> flat metrics."""
    metrics = (data.get("metrics") or {}).items()
    return {Path(path).stem: _numeric((value or {}).get("data") or {}) for path, value in metrics}


def _numeric(data: Mapping[str, Any]) -> dict[str, float | bool]:
    return {k: v for k, v in flatten(data).items() if isinstance(v, (int, float))}


class Run(NamedTuple):
    name: str
    timestamp: str
    metrics: dict[str, dict[str, float | bool]]  # metrics file stem -> flat numeric metrics


def runs_varying(show: Sequence[Mapping[str, Any]], key: str) -> dict[Any, Run]:
    """The latest run per value of the flat param `key` among each baseline commit of `dvc exp
    show --json` output and its finished experiments whose other params equal the commit's
    (queued, running or failed ones have no metrics of their own)."""
    latest: dict[Any, Run] = {}
    for commit in show:
        if commit.get("rev") == "workspace" or not commit.get("data"):
            continue
        base = {k: v for k, v in _params(commit["data"]).items() if k != key}
        entries = [commit]
        for exp in commit.get("experiments") or []:
            if (exp.get("executor") or {}).get("state") in (None, "success"):
                entries += exp.get("revs") or []
        for entry in entries:
            data = entry.get("data") or {}
            params = _params(data)
            others = {k: v for k, v in params.items() if k != key}
            if entry.get("error") or key not in params or others != base:
                continue
            name = entry.get("name") or str(entry.get("rev", ""))[:7]
            run = Run(name, data.get("timestamp") or "", _metrics(data))
            value = params[key]
            if value not in latest or run.timestamp > latest[value].timestamp:
                latest[value] = run
    return latest


def read_show(path: Path | None) -> list[dict[str, Any]]:
    """`dvc exp show --json` output: from `path` ('-': stdin), else by running it here."""
    if path is None:
        text = subprocess.run(
            ["dvc", "exp", "show", "--json"], check=True, capture_output=True, text=True
        ).stdout
    else:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    return json.loads(text)


def seed_runs(show: Sequence[Mapping[str, Any]]) -> list[SeedRun]:
    """The baseline commit and its seed experiments in `dvc exp show --json` output: one run per
    seed (the latest), sorted by seed."""
    latest = runs_varying(show, SEED_KEY)
    return [SeedRun(r.name, int(s), r.timestamp, r.metrics) for s, r in sorted(latest.items())]


def folder_runs(folders: Sequence[Path]) -> list[SeedRun]:
    """Runs kept as folders (a results record): each holds its params.yaml, whose `seed` names
    the run, and metrics as `<stage>.json`; sorted by seed, one folder per seed."""
    runs = []
    for folder in folders:
        seed = load_params(folder / "params.yaml").seed
        files = sorted(folder.glob("*.json"))
        metrics = {f.stem: _numeric(json.loads(f.read_text(encoding="utf-8"))) for f in files}
        runs.append(SeedRun(str(folder), seed, "", metrics))
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: two folders hold the same seed: {seeds}")
    return sorted(runs, key=lambda r: r.seed)


def _keys(runs: Sequence[SeedRun]) -> list[tuple[str, str]]:
    present = [
        d
        for d in DEFENCES
        if any(f"{d}.clean_accuracy" in r.metrics.get("robustness", {}) for r in runs)
    ]
    keys = []
    for stem, key in HEADLINE:
        keys += [(stem, key.format(d=d)) for d in present] if "{d}" in key else [(stem, key)]
    return keys


def summary(runs: Sequence[SeedRun]) -> list[dict[str, Any]]:
    """Rows of figure, mean, sd (n - 1), min, max and n over the seeds that report the figure."""
    rows = []
    for stem, key in _keys(runs):
        values = [float(r.metrics[stem][key]) for r in runs if key in r.metrics.get(stem, {})]
        if values:
            sd = statistics.stdev(values) if len(values) > 1 else math.nan
            rows.append(
                {"figure": f"{stem}:{key}", "mean": statistics.fmean(values), "sd": sd,
                 "min": min(values), "max": max(values), "n": len(values)}
            )  # fmt: skip
    return rows


def seed_verdicts(runs: Sequence[SeedRun]) -> dict[str, tuple[str, list[str]]]:
    """Per defence: the verdict if every seed agrees (else "seeds disagree"), and each seed's."""
    per_seed = [r.metrics.get("robustness", {}) for r in runs]
    out = {}
    for d in DEFENCES:
        if d == "none" or not all(
            f"{d}.clean_accuracy" in m and "none.clean_accuracy" in m for m in per_seed
        ):
            continue
        labels = [verdict(m, d).label for m in per_seed]
        out[d] = (labels[0] if len(set(labels)) == 1 else "seeds disagree", labels)
    return out


def markdown(runs: Sequence[SeedRun]) -> str:
    """The summary and the verdicts as Markdown (percent for accuracies, as the README quotes)."""
    seeds = ", ".join(f"{r.seed} ({r.name})" for r in runs)
    lines = [f"Seeds: {seeds}. Figures x 100 (accuracies and rates in %, AUROC x 100).", ""]
    lines += ["| figure | mean ± sd | min – max | n |", "|---|---|---|---|"]
    for row in summary(runs):
        lines.append(
            f"| {row['figure']} | {100 * row['mean']:.1f} ± {100 * row['sd']:.1f} | "
            f"{100 * row['min']:.1f} – {100 * row['max']:.1f} | {row['n']} |"
        )
    lines += ["", "| defence | verdict over all seeds | per seed |", "|---|---|---|"]
    for d, (label, labels) in seed_verdicts(runs).items():
        lines.append(f"| {d} | {label} | {', '.join(labels)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--show",
        type=Path,
        help="saved `dvc exp show --json` output ('-': stdin); default: run it here",
    )
    p.add_argument("--runs", type=Path, nargs="+", help="run folders instead of `dvc exp show`")
    p.add_argument("--out", type=Path, help="also write the Markdown here")
    p.add_argument(
        "--csv", type=Path, help="also write the summary rows here (read by `make verify`)"
    )
    args = p.parse_args(argv)
    runs = folder_runs(args.runs) if args.runs else seed_runs(read_show(args.show))
    if len(runs) < 2:
        print(f"error: need experiments for at least 2 seeds, found {len(runs)}; run "
              "dvc exp run --queue -S 'seed=0,1,2' && dvc exp run --run-all", file=sys.stderr)  # fmt: skip
        return 2
    text = markdown(runs)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    if args.csv is not None:
        pd.DataFrame(summary(runs)).to_csv(args.csv, index=False)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
