"""The adversarial-set contract: bounds and ranges are enforced on write and again on read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from advdenoise.attacks.sets import (
    ADVERSARIAL_FILE,
    check_perturbation,
    load_adversarial,
    save_adversarial,
)
from advdenoise.core.errors import PipelineError
from advdenoise.core.io import write_npz


@pytest.fixture
def clean() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, size=(6, 1, 8, 8)) / 255.0).astype(np.float32)


def _perturb(clean: np.ndarray, eps: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(clean + rng.choice([-eps, eps], size=clean.shape), 0, 1).astype(np.float32)


def test_round_trip_is_exact(tmp_path: Path, clean: np.ndarray) -> None:
    eps = (0.0, 0.01, 0.03)
    stack = np.stack([_perturb(clean, e) for e in eps])
    save_adversarial(tmp_path, eps, {"fgsm": stack, "pgd": stack[::-1] * 0 + clean}, clean)
    sets = load_adversarial(tmp_path, clean)
    assert sets.eps == eps
    assert sets.methods == ("fgsm", "pgd")
    np.testing.assert_array_equal(sets.get("fgsm", 0.03), stack[2])
    with pytest.raises(PipelineError, match="no adversarial set at eps=0.5"):
        sets.get("fgsm", 0.5)
    with pytest.raises(PipelineError, match="no adversarial set for method 'cw'"):
        sets.get("cw", 0.03)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: np.clip(a + 0.02, 0, 1), "exceeds eps 0.01"),
        (lambda a: a * 0 - 0.001, "values outside"),
        (lambda a: a * np.nan, "NaN"),
        (lambda a: a[:3], "does not match"),
    ],
)
def test_check_perturbation_refuses_bad_sets(clean: np.ndarray, mutate, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        check_perturbation(clean, mutate(_perturb(clean, 0.01)), 0.01, "test")


def test_bound_is_checked_again_on_load(tmp_path: Path, clean: np.ndarray) -> None:
    """A file tampered with (or produced by a buggy attack) is refused where it is consumed."""
    too_far = np.stack([_perturb(clean, 0.05)])
    write_npz(tmp_path / ADVERSARIAL_FILE, {"eps": np.array([0.01]), "pgd": too_far})
    with pytest.raises(
        PipelineError, match=r"pgd eps=0.01: L-inf perturbation .* exceeds eps 0.01"
    ):
        load_adversarial(tmp_path, clean)


def test_nothing_written_when_save_fails(tmp_path: Path, clean: np.ndarray) -> None:
    with pytest.raises(PipelineError):
        save_adversarial(tmp_path, (0.01,), {"fgsm": np.stack([_perturb(clean, 0.1)])}, clean)
    assert list(tmp_path.iterdir()) == []
