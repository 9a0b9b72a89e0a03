"""Profile one dvc.yaml stage with torch.profiler: where its time goes, op by op.

    python bench/profile_stage.py STAGE [--params FILE] [--top N] [--trace FILE.json]

Runs the stage's `main` in this process with the arguments of its dvc.yaml `cmd` (optionally with
another params file, e.g. fewer defences), under torch.profiler with CPU activity and, when CUDA is
present, CUDA activity. Prints the N ops with the most self time on the device that ran them (CPU
self time on a CPU-only machine) and the share of wall time spent inside torch ops at all: a low
share means Python, NumPy or the data path dominate, not kernels. The stage writes its usual
outputs (to the paths of dvc.yaml), so profile in a scratch copy or re-run `dvc repro` after.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - as in every stage: the same kernels

import argparse
import importlib.util
import shlex
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def stage_argv(stage: str, params: Path | None) -> list[str]:
    """The stage's dvc.yaml arguments (after `python stages/<stage>.py`), params swapped if given."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    if stage not in spec:
        raise SystemExit(f"unknown stage {stage!r}; known: {list(spec)}")
    argv = shlex.split(spec[stage]["cmd"])[2:]
    if params is not None:
        argv[argv.index("--params") + 1] = str(params)
    return argv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage")
    parser.add_argument("--params", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--trace", type=Path, help="also write a Chrome trace (chrome://tracing)")
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    file = ROOT / "stages" / f"{args.stage}.py"
    spec = importlib.util.spec_from_file_location(f"stage_{args.stage}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        rc = module.main(stage_argv(args.stage, args.params))
    wall = time.perf_counter() - start
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.top))
    in_ops = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6
    print(f"{args.stage}: {wall:.1f} s wall, {in_ops:.1f} s of CPU self time inside torch ops "
          f"({100 * in_ops / wall:.0f}% of wall), exit {rc}")  # fmt: skip
    if args.trace:
        prof.export_chrome_trace(str(args.trace))


if __name__ == "__main__":
    main()
