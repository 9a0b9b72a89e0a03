"""Across seeds: mean ± sd of the headline figures and whether each defence's verdict holds.

One seed decides nothing: the CNN, the denoisers and the attack starts all move with it. Run the
pipeline for several seeds as DVC experiments, then aggregate what `dvc exp show --json` reports:

    dvc exp run --queue -S 'seed=0,1,2' && dvc exp run --run-all
    advdenoise-seeds                      # or: dvc exp show --json | advdenoise-seeds --show -
    advdenoise-seeds --runs DIR DIR ...   # runs kept as folders: <stage>.json and params.yaml

Runs are grouped by every param that differs among them except `seed` (the axes of a sweep such
as `advdenoise-sweep -S seed=0,1,2 -S data.split=random,grouped`); within a group the latest run
per seed counts. `--baseline-only` keeps the baseline commit's group alone: the commit and the
experiments whose params equal its own but for `seed`. A defence's verdict
(`verdicts.verdict`, the rule of the report) is stated only when every seed gives the same one.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from advdenoise.core.io import flatten
from advdenoise.core.params import load_params
from advdenoise.defences.specs import DEFENCES
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


PARAMS_PREFIX = "params.yaml."  # how `_params` flattens params.yaml's keys
SEED_KEY = PARAMS_PREFIX + "seed"  # the run seed
Group = tuple[tuple[str, str], ...]  # swept params (key, value as text) that a group shares


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


def _finished(show: Sequence[Mapping[str, Any]]) -> Iterator[tuple[Mapping[str, Any], Mapping]]:
    """(baseline commit, entry) for each commit of `dvc exp show --json` output and each of its
    finished experiments (queued, running or failed ones have no metrics of their own)."""
    for commit in show:
        if commit.get("rev") == "workspace" or not commit.get("data"):
            continue
        entries = [commit]
        for exp in commit.get("experiments") or []:
            if (exp.get("executor") or {}).get("state") in (None, "success"):
                entries += exp.get("revs") or []
        yield from ((commit, e) for e in entries if not e.get("error"))


def _run(entry: Mapping[str, Any]) -> Run:
    data = entry.get("data") or {}
    name = entry.get("name") or str(entry.get("rev", ""))[:7]
    return Run(name, data.get("timestamp") or "", _metrics(data))


def finished_runs(show: Sequence[Mapping[str, Any]]) -> Iterator[Run]:
    """Every finished run of `dvc exp show --json` output: the commits and their experiments."""
    return (_run(entry) for _, entry in _finished(show))


def runs_varying(show: Sequence[Mapping[str, Any]], key: str) -> dict[Any, Run]:
    """The latest run per value of the flat param `key` among each baseline commit of `dvc exp
    show --json` output and its finished experiments whose other params equal the commit's."""
    latest: dict[Any, Run] = {}
    for commit, entry in _finished(show):
        base = {k: v for k, v in _params(commit["data"]).items() if k != key}
        params = _params(entry.get("data") or {})
        others = {k: v for k, v in params.items() if k != key}
        if key not in params or others != base:
            continue
        run, value = _run(entry), params[key]
        if value not in latest or run.timestamp > latest[value].timestamp:
            latest[value] = run
    return latest


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def seed_groups(show: Sequence[Mapping[str, Any]]) -> dict[Group, list[SeedRun]]:
    """Every finished run grouped by the params that differ among the runs, except `seed` (a
    sweep's axes); per group the latest run per seed, sorted by seed. One group, `()`, when
    only the seed varies."""
    found = [(_params(e.get("data") or {}), e) for _, e in _finished(show)]
    found = [(params, e) for params, e in found if SEED_KEY in params]
    keys = {k for params, _ in found for k in params} - {SEED_KEY}
    swept = sorted(k for k in keys if len({_text(p.get(k)) for p, _ in found}) > 1)
    latest: dict[Group, dict[int, SeedRun]] = {}
    for params, entry in found:
        group = tuple((k.removeprefix(PARAMS_PREFIX), _text(params.get(k))) for k in swept)
        name, stamp, metrics = _run(entry)
        run = SeedRun(name, int(params[SEED_KEY]), stamp, metrics)
        per_seed = latest.setdefault(group, {})
        if run.seed not in per_seed or run.timestamp > per_seed[run.seed].timestamp:
            per_seed[run.seed] = run
    return {g: [runs[s] for s in sorted(runs)] for g, runs in sorted(latest.items())}


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


def group_label(group: Group) -> str:
    return " ".join(f"{k}={v}" for k, v in group) or "all runs"


def grouped_markdown(groups: Mapping[Group, Sequence[SeedRun]]) -> str:
    """`markdown` of each group under a heading naming its swept params (none when one group)."""
    if len(groups) == 1:
        return markdown(next(iter(groups.values())))
    return "\n".join(f"## {group_label(g)}\n\n{markdown(runs)}" for g, runs in groups.items())


def grouped_summary(groups: Mapping[Group, Sequence[SeedRun]]) -> pd.DataFrame:
    """`summary` rows of every group, each led by one column per swept param."""
    return pd.DataFrame([{**dict(g), **row} for g, runs in groups.items() for row in summary(runs)])


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
    p.add_argument(
        "--baseline-only",
        action="store_true",
        help="only runs whose params equal the baseline commit's but for the seed",
    )
    p.add_argument("--out", type=Path, help="also write the Markdown here")
    p.add_argument(
        "--csv", type=Path, help="also write the summary rows here (read by `make verify`)"
    )
    args = p.parse_args(argv)
    if args.runs:
        groups: dict[Group, list[SeedRun]] = {(): folder_runs(args.runs)}
    elif args.baseline_only:
        groups = {(): seed_runs(read_show(args.show))}
    else:
        groups = seed_groups(read_show(args.show))
    most = max((len(runs) for runs in groups.values()), default=0)
    if most < 2:
        print(f"error: need experiments for at least 2 seeds, found {most}; run "
              "dvc exp run --queue -S 'seed=0,1,2' && dvc exp run --run-all", file=sys.stderr)  # fmt: skip
        return 2
    text = grouped_markdown(groups)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    if args.csv is not None:
        grouped_summary(groups).to_csv(args.csv, index=False)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
