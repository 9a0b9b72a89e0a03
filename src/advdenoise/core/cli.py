"""What every stage CLI does first: parse its path arguments, load params, seed and pick a device."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from advdenoise.core.params import Params, load_params

if TYPE_CHECKING:
    import torch

EVAL_BATCH = 256  # inference batch of the training stages' evaluations


def parse_paths(doc: str | None, argv: Sequence[str] | None, *names: str) -> argparse.Namespace:
    """Required path options `--params` plus `names` (e.g. "--data", "--out"), all as Paths."""
    p = argparse.ArgumentParser(description=doc)
    for name in ("--params", *names):
        p.add_argument(name, required=True, type=Path)
    return p.parse_args(argv)


def start(args: argparse.Namespace) -> tuple[Params, torch.device]:
    """Validated params and the device, after seeding every generator and fixing threads."""
    from advdenoise.core import runtime

    params = load_params(args.params)
    return params, runtime.setup(params.seed, params.threads, params.device)


def write_metrics(path: Path, metrics: Mapping[str, object], device: torch.device) -> None:
    """A stage's flat metrics plus the environment that produced them (runtime.environment)."""
    from advdenoise.core import runtime
    from advdenoise.core.io import write_json

    write_json(path, {**metrics, **runtime.environment(device)})
