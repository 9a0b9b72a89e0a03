"""Run dvc.yaml stages by their `cmd` without DVC, timing each (for machines without DVC).

Usage: python bench/run_stages.py STAGE [STAGE ...]   (in the project root; stops at a failure)

The commands are exactly those of dvc.yaml, so the outputs are what `dvc repro` would write; DVC's
caching and dependency checks are skipped (the caller orders the stages).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main(stages: list[str]) -> int:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    unknown = [s for s in stages if s not in spec]
    if unknown:
        print(f"unknown stages {unknown}; known: {list(spec)}", file=sys.stderr)
        return 2
    for stage in stages:
        start = time.perf_counter()
        rc = subprocess.run(spec[stage]["cmd"], shell=True, cwd=ROOT).returncode
        print(f"stage {stage}: {time.perf_counter() - start:.1f} s (rc {rc})", flush=True)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
