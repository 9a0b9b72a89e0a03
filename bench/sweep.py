"""What fanning experiments out costs and gains: `advdenoise-sweep` on 1 and on 2 single-thread
local workers vs the same points as plain `dvc exp run`s, one after another, in one workspace.

The project is the tiny config of tests/test_pipeline.py, with a bare git origin and a folder as
the DVC remote. The points are `seed=0..N-1` with `threads=1`, so that each worker uses one core;
nothing is computed before (every point runs all stages). Usage:

    python bench/sweep.py [--points 4] [--out bench/results/sweep]

The engine's overhead per point is (sweep on 1 worker - plain runs) / points: clone, `--pull`,
`dvc exp push`, `dvc exp pull` and Dask together. Writes sweep.json and sweep.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from advdenoise.core.runtime import cpu_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_pipeline import copy_project, run  # noqa: E402 - the tiny config, one place


def project(root: Path) -> Path:
    """The tiny project, committed and pushed to a bare origin, with a folder as DVC remote."""
    repo = copy_project(root / "proj")
    run(["dvc", "remote", "add", "-d", "store", str(root / "store")], repo)
    run(["git", "init", "-q", "--bare", "--initial-branch=main", str(root / "origin.git")], repo)
    run(["git", "remote", "add", "origin", str(root / "origin.git")], repo)
    run(["git", "commit", "-qam", "remote"], repo)
    run(["git", "push", "-q", "origin", "HEAD:refs/heads/main"], repo)
    return repo


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    run(args, cwd)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--points", type=int, default=4)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sweep")
    args = p.parse_args()
    seeds = ",".join(str(s) for s in range(args.points))
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        repo = project(Path(tmp))
        plain = 0.0
        for seed in range(args.points):
            plain += timed(["dvc", "exp", "run", "-S", f"seed={seed}", "-S", "threads=1"], repo)
        run(["git", "checkout", "-q", "--", "."], repo)  # exp run leaves the last point's files
        run(["git", "clean", "-fdxq"], repo)
        sweeps = {}
        for workers in (1, 2):
            cmd = ["advdenoise-sweep", "--local", str(workers), "--name", f"w{workers}",
                   "-S", f"seed={seeds}", "-S", "threads=1"]  # fmt: skip
            sweeps[workers] = timed(cmd, repo)
    result = {
        "machine": cpu_model(),
        "points": args.points,
        "config": "tests/test_pipeline.py TINY, threads=1, every stage run",
        "plain_dvc_exp_run_s": round(plain, 1),
        "sweep_1_worker_s": round(sweeps[1], 1),
        "sweep_2_workers_s": round(sweeps[2], 1),
        "speedup_2_over_1": round(sweeps[1] / sweeps[2], 2),
        "overhead_per_point_s": round((sweeps[1] - plain) / args.points, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# advdenoise-sweep, {args.points} points of the tiny config (`bench/sweep.py`)",
        "",
        f"- machine: {result['machine']}",
        f"- config: {result['config']}",
        "",
        "| how | wall s |",
        "|---|---:|",
        f"| plain `dvc exp run`, one after another | {result['plain_dvc_exp_run_s']} |",
        f"| advdenoise-sweep --local 1 | {result['sweep_1_worker_s']} |",
        f"| advdenoise-sweep --local 2 | {result['sweep_2_workers_s']} |",
        "",
        f"Two workers over one: **{result['speedup_2_over_1']}x**. The engine's overhead per point "
        f"(clone, pull, push and Dask): **{result['overhead_per_point_s']} s**.",
    ]
    (args.out / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
