"""One command for every benchmark: attack throughput, training throughput, the host floor of
robustness, stage start-up, pipeline wall time.

    python bench/run.py          # or: make bench

Each part writes its JSON + Markdown under bench/results/; this script concatenates the Markdown
tables into bench/results/summary.md. Medians over repetitions throughout: the machine is noisy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("attack_throughput", "training_throughput", "host_floor", "startup", "pipeline")


def main() -> None:
    results = ROOT / "bench" / "results"
    for part in PARTS:
        subprocess.run([sys.executable, str(ROOT / "bench" / f"{part}.py")], check=True)
    summary = "\n".join((results / f"{part}.md").read_text() for part in PARTS)
    (results / "summary.md").write_text(summary)
    print(f"wrote {results / 'summary.md'}")


if __name__ == "__main__":
    main()
