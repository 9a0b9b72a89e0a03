"""Shared fixtures: a tiny prepared dataset that every stage's tests can load in milliseconds."""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: pins the CPU kernels (see its docstring)

from pathlib import Path

import pytest

from advdenoise.data import Splits, save_splits, split_images
from advdenoise.synthetic import generate_images

TINY_SIZE = 32
TINY_COUNTS = {"non-COVID": 50, "COVID": 50}  # -> 60 train / 16 val / 24 test, both classes in each


@pytest.fixture(scope="session")
def tiny_splits() -> Splits:
    """Deterministic synthetic 32x32 splits (60 train / 16 val / 24 test); do not modify."""
    images = generate_images(TINY_COUNTS, ("non-COVID", "COVID"), TINY_SIZE, seed=0)
    return split_images(images, seed=0, test_fraction=0.24, val_fraction=0.21)


@pytest.fixture
def tiny_splits_dir(tiny_splits: Splits, tmp_path: Path) -> Path:
    """A fresh directory holding `splits.npz` of `tiny_splits` (load it with `load_splits`)."""
    directory = tmp_path / "prepare"
    save_splits(directory, tiny_splits)
    return directory
