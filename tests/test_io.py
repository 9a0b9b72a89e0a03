"""Atomic writers leave either the new file or the old one, never a partial file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from advdenoise.core.errors import PipelineError
from advdenoise.core.io import atomic_path, read_json, read_npz, write_json, write_npz

ROOT = Path(__file__).resolve().parents[1]


def test_failed_write_keeps_previous_output(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{half")
        raise RuntimeError("killed mid-write")
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_json_is_byte_stable_and_refuses_nan(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"b": 1.5, "a": 2})
    write_json(tmp_path / "b.json", {"a": 2, "b": 1.5})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    with pytest.raises(ValueError):
        write_json(tmp_path / "c.json", {"x": float("nan")})
    assert not (tmp_path / "c.json").exists()


def test_npz_refuses_object_arrays_and_pickles(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="pickle"):
        write_npz(tmp_path / "x.npz", {"x": np.array([{"a": 1}], dtype=object)})
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))  # a pickle inside an npz
    with pytest.raises(PipelineError, match="evil.npz"):
        read_npz(path)
    with pytest.raises(PipelineError, match="missing arrays"):
        write_npz(tmp_path / "ok.npz", {"a": np.zeros(2)})
        read_npz(tmp_path / "ok.npz", ("a", "b"))


def test_truncated_and_missing_files_name_the_file(tmp_path: Path) -> None:
    write_npz(tmp_path / "t.npz", {"a": np.zeros(1000)})
    data = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError, match="t.npz"):
        read_npz(tmp_path / "t.npz")
    with pytest.raises(PipelineError, match="nothere.json: file not found"):
        read_json(tmp_path / "nothere.json")


def test_no_unsafe_loading_anywhere_in_the_code() -> None:
    """No pickle-enabled loading in the library, the stages or the benchmarks."""
    unsafe = re.compile(r"allow_pickle\s*=\s*True|weights_only\s*=\s*False|pickle\.loads?\(")
    torch_load = re.compile(r"torch\.load\((?![^)]*weights_only=True)")
    offenders = []
    for folder in ("src", "stages", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if unsafe.search(text) or torch_load.search(text):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
