"""Shared fixtures: a tiny prepared dataset that every stage's tests can load in milliseconds, and the
project's params (params.yaml is the one source of defaults)."""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from advdenoise.core.params import load_params, read_yaml
from advdenoise.data.splits import Splits, save_splits, split_images
from advdenoise.data.synthetic import generate

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"
PROJECT_PARAMS = load_params(PARAMS_FILE)
TINY_SIZE = 32
TINY_COUNTS = {"non-COVID": 50, "COVID": 50}  # -> 60 train / 16 val / 24 test, both classes in each


@pytest.fixture(scope="session")
def tiny_splits() -> Splits:
    """Deterministic synthetic 32x32 splits (60 train / 16 val / 24 test); do not modify."""
    images = generate(TINY_COUNTS, ("non-COVID", "COVID"), TINY_SIZE, seed=0)
    return split_images(images, seed=0, test_fraction=0.24, val_fraction=0.21)


@pytest.fixture
def tiny_splits_dir(tiny_splits: Splits, tmp_path: Path) -> Path:
    """A fresh directory holding `splits.npz` of `tiny_splits` (load it with `load_splits`)."""
    directory = tmp_path / "prepare"
    save_splits(directory, tiny_splits)
    return directory


def section(name: str, **changes: Any) -> Any:
    """Section `name` of the project's params.yaml with `changes` (validated again)."""
    return dataclasses.replace(getattr(PROJECT_PARAMS, name), **changes)


def write_params(path: Path, overrides: dict[str, Any]) -> Path:
    """The project's params.yaml with `overrides` merged in section by section, written to `path`."""
    raw = read_yaml(PARAMS_FILE.read_text())
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw[key].update(value)
        else:
            raw[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
