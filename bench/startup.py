"""The start-up floor of a run: what each stage's process costs before it does any work.

Every stage is its own Python process (DVC runs its `cmd`), which imports torch, and for five of
them ART, before it reads params.yaml. Here each dvc.yaml command runs with `--params` pointing to
a missing file, so it imports what it imports, fails on the params and exits: the time is the
start-up a cold `dvc repro` pays twelve times whatever the device (imports made later, inside a
stage's work, are not counted). Median of --reps runs per stage.

    python bench/startup.py [--reps 3]

Writes bench/results/startup.json and .md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from advdenoise.core.runtime import cpu_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    seconds = {}
    for name, spec in stages.items():
        argv = shlex.split(spec["cmd"])
        argv[0] = sys.executable
        argv[argv.index("--params") + 1] = str(ROOT / "bench" / "no-such-params.yaml")
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if "params file not found" not in done.stderr:
                raise SystemExit(f"{name}: expected the missing-params error, got {done.stderr!r}")
        seconds[name] = statistics.median(times)
        print(f"{name}: {seconds[name]:.2f} s", flush=True)
    total = sum(seconds.values())
    result = {"machine": cpu_model(), "reps": args.reps, "seconds": seconds, "total": total}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Stage start-up, import to exit (median of {args.reps})",
        "",
        f"- machine: {result['machine']}",
        f"- all {len(seconds)} stages: **{total:.1f} s** per cold `dvc repro`",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *(f"| {name} | {s:.2f} |" for name, s in seconds.items()),
    ]
    (args.out / "startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
