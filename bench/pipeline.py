"""Wall time and peak memory of the pipeline, stage by stage (default config, or --set overrides).

In a fresh clone of the current commit (what a new user gets): a cold `dvc repro` (with --set,
`dvc exp run -S KEY=VALUE ...`), timed per stage from DVC's "Running stage" lines, with the peak
RSS of the largest process it waited for; then `dvc exp run -S attack.eps=0.016`, timed, with the
stages it ran (it must run no training stage). Usage:

    python bench/pipeline.py [--reps 1] [--workdir DIR] [--target STAGE] [--out DIR]
        [--set KEY=VALUE ...]

`--target` runs only that stage and those before it (and skips the `exp run`); a second call
with the same `--workdir` and no `--target` runs the rest, as DVC skips what is done. That splits
a run that outlasts a job's time limit (a batch scheduler's, say) into parts whose stage times
add up to the whole run's.

The paper's scale on the embedded data (no data to copy to a GPU machine):
    python bench/pipeline.py --set data.image_size=224 --set train_cnn.epochs=50 \
        --set robustness.max_images=0 --set robustness.workers=8 --out bench/results/gpu

Writes pipeline.json and pipeline.md (default: bench/results/); the GPU, if any, is named.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from advdenoise.core.runtime import cpu_model

ROOT = Path(__file__).resolve().parents[1]
TRAINING = {"train_cnn", "train_ae", "train_ae_adv", "train_ae_guided"}
EXP_RUN = ["-S", "attack.eps=0.016"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for role in ("AUTHOR", "COMMITTER"):  # dvc exp run commits experiment refs
        env.setdefault(f"GIT_{role}_NAME", "bench")
        env.setdefault(f"GIT_{role}_EMAIL", "bench@localhost")
    return env


def _gpu_name() -> str:
    """The GPU the stages will pick (`device: auto`), from nvidia-smi; "" without one."""
    if shutil.which("nvidia-smi") is None:
        return ""
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""


def timed_dvc(args: list[str], cwd: Path) -> dict:
    """Run a dvc command; return wall time, per-stage times and the peak RSS of its process tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["dvc", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    marks: list[tuple[str, float]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("Running stage"):
            marks.append((line.split("'")[1], time.perf_counter()))
    _, status, usage = os.wait4(proc.pid, 0)
    end = time.perf_counter()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed in {cwd}")
    bounds = [t for _, t in marks] + [end]
    stages = {name: bounds[i + 1] - t for i, (name, t) in enumerate(marks)}
    # ru_maxrss of wait4 covers the child and the descendants it waited for; Linux reports KiB.
    return {"wall_s": end - start, "stages_s": stages, "peak_rss_mb": usage.ru_maxrss / 1024}


def bench_once(workdir: Path, overrides: list[str], target: str | None) -> dict:
    """A cold run (resumed where `workdir` holds one), then the headline `exp run` unless a
    `target` stops the cold run short."""
    resumed = workdir.exists()
    if not resumed:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(workdir)], check=True)
    sets = [a for o in overrides for a in ("-S", o)]
    targets = [target] if target else []
    cold = timed_dvc(["exp", "run", *sets, *targets] if sets else ["repro", *targets], workdir)
    cold["resumed"] = resumed
    if target:
        return {"cold_repro": cold}
    return {"cold_repro": cold, "exp_run": timed_dvc(["exp", "run", *EXP_RUN], workdir)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument(
        "--workdir",
        type=Path,
        help="run in this clone (made if missing, kept after): a later call with it resumes",
    )
    p.add_argument("--target", metavar="STAGE", help="run the pipeline up to this stage only")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params override for the cold run (dvc exp run -S), e.g. data.image_size=224",
    )
    args = p.parse_args()
    if args.workdir and args.reps != 1:
        p.error("--workdir runs once: leave --reps at 1")
    runs = []
    for _ in range(args.reps):
        if args.workdir:
            runs.append(bench_once(args.workdir.resolve(), args.set, args.target))
            continue
        scratch = Path(tempfile.mkdtemp(prefix="advdenoise-bench-"))
        try:
            runs.append(bench_once(scratch / "repo", args.set, args.target))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    stages = list(runs[0]["cold_repro"]["stages_s"])
    result = {
        "reps": args.reps,
        "cpu": f"{cpu_model()}, {os.cpu_count()} logical cores",
        "gpu": _gpu_name(),
        "overrides": args.set,
        "target": args.target,
        "resumed": runs[0]["cold_repro"]["resumed"],
        "loadavg_1_5_15": os.getloadavg(),
        "cold_repro_s": med([r["cold_repro"]["wall_s"] for r in runs]),
        "cold_repro_peak_rss_mb": max(r["cold_repro"]["peak_rss_mb"] for r in runs),
        "stages_s": {s: med([r["cold_repro"]["stages_s"][s] for r in runs]) for s in stages},
        "self_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if "exp_run" in runs[0]:
        result["exp_run_s"] = med([r["exp_run"]["wall_s"] for r in runs])
        result["exp_run_stages"] = sorted(runs[0]["exp_run"]["stages_s"])
        result["exp_run_ran_training"] = bool(TRAINING & set(result["exp_run_stages"]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    config = f"config {' '.join(args.set)}" if args.set else "default config"
    cold = "dvc exp run" if args.set else "dvc repro"
    part = " (resumed: the stages left)" if result["resumed"] else ""
    part += f" up to {args.target}" if args.target else ""
    lines = [
        f"# Pipeline on the {config} (median of {args.reps})",
        "",
        f"- machine: {result['cpu']}" + (f", {result['gpu']}" if result["gpu"] else ""),
        f"- cold `{cold}`{part}: {result['cold_repro_s']:.0f} s, peak RSS "
        f"{result['cold_repro_peak_rss_mb']:.0f} MB",
    ]
    if "exp_run_s" in result:
        lines.append(
            f"- `dvc exp run {' '.join(EXP_RUN)}`: {result['exp_run_s']:.0f} s, ran "
            f"{', '.join(result['exp_run_stages'])} "
            f"(training re-run: {result['exp_run_ran_training']})"
        )
    lines += ["", "| stage | seconds | share |", "|---|---:|---:|"]
    total = sum(result["stages_s"].values())
    for s, t in result["stages_s"].items():
        lines.append(f"| {s} | {t:.1f} | {t / total:.0%} |")
    (args.out / "pipeline.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
