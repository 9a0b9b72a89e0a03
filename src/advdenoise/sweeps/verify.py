"""Did this run reproduce the committed one? Bit for bit, or else within the seed-to-seed spread.

    make verify          # after `make repro` on a fresh clone

First every metrics file is compared with the committed one (git HEAD): equal bytes everywhere is
the answer to hope for (see advdenoise.portable). Otherwise each headline figure of the committed
seed summary (advdenoise.sweeps.seeds, `--csv`) must lie within SPREAD seed standard deviations (at least
FLOOR) of its committed value, and the `env.*` keys that differ are printed as the likely cause.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SPREAD = 2.0  # tolerance in seed standard deviations
FLOOR = 0.01  # the least tolerance: one image in 100


@dataclass(frozen=True)
class Check:
    figure: str  # "<metrics file stem>:<key>", as advdenoise.sweeps.seeds names it
    committed: float
    now: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return abs(self.now - self.committed) <= self.tolerance


def checks(
    committed: Mapping[str, Mapping[str, object]],
    now: Mapping[str, Mapping[str, object]],
    sd: Mapping[str, float],
) -> list[Check]:
    """One check per figure with a seed sd, present in both runs; a missing one fails as NaN."""
    out = []
    for figure, spread in sd.items():
        stem, key = figure.split(":", 1)
        before, after = committed.get(stem, {}).get(key), now.get(stem, {}).get(key)
        if before is None:
            continue
        value = float(after) if isinstance(after, (int, float)) else math.nan
        tolerance = max(SPREAD * spread, FLOOR) if math.isfinite(spread) else FLOOR
        out.append(Check(figure, float(before), value, tolerance))  # type: ignore[arg-type]
    return out


def environment_changes(
    committed: Mapping[str, Mapping[str, object]], now: Mapping[str, Mapping[str, object]]
) -> dict[str, tuple[object, object]]:
    """`env.*` values that differ between the runs, or that only one records (first stage of each)."""
    out: dict[str, tuple[object, object]] = {}
    for stem, before in committed.items():
        after = now.get(stem, {})
        for key in dict.fromkeys([*before, *after]):
            if key.startswith("env.") and key not in out and before.get(key) != after.get(key):
                out[key] = (before.get(key), after.get(key))
    return out


def _committed(path: Path) -> str | None:
    proc = subprocess.run(
        ["git", "show", f"HEAD:{path.as_posix()}"], capture_output=True, text=True
    )
    return proc.stdout if proc.returncode == 0 else None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--metrics", type=Path, required=True, help="the run's metrics folder")
    p.add_argument(
        "--seeds", type=Path, required=True, help="committed advdenoise.sweeps.seeds --csv"
    )
    args = p.parse_args(argv)
    files = sorted(args.metrics.glob("*.json"))
    committed_text = {f.stem: _committed(f) for f in files}
    now_text = {f.stem: f.read_text(encoding="utf-8") for f in files}
    differ = [s for s in now_text if committed_text[s] != now_text[s]]
    if not differ:
        print(f"reproduced bit for bit: {len(files)} metrics files equal the committed ones")
        return 0
    print(f"differ from the committed run: {', '.join(differ)}")
    committed = {s: json.loads(t) for s, t in committed_text.items() if t is not None}
    now = {s: json.loads(t) for s, t in now_text.items()}
    for key, (before, after) in environment_changes(committed, now).items():
        print(f"  environment {key}: committed {before!r}, this run {after!r}")
    summary = pd.read_csv(args.seeds)
    results = checks(committed, now, dict(zip(summary["figure"], summary["sd"], strict=True)))
    for c in results:
        mark = "ok  " if c.ok else "FAIL"
        print(
            f"  {mark} {c.figure}: committed {c.committed:.4f}, now {c.now:.4f} (± {c.tolerance:.4f})"
        )
    failed = sum(not c.ok for c in results)
    print(f"{len(results) - failed} of {len(results)} headline figures within {SPREAD:g} seed sd")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
