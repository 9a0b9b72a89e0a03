"""`make verify`: bit for bit against the committed metrics, else within the seed spread."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from advdenoise.sweeps import verify


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository whose HEAD holds metrics/train_cnn.json and a seed summary."""
    (tmp_path / "metrics").mkdir()
    committed = {"test.accuracy": 0.80, "env.device": "cpu", "env.torch": "2.14.1"}
    (tmp_path / "metrics/train_cnn.json").write_text(json.dumps(committed))
    (tmp_path / "seeds.csv").write_text("figure,mean,sd\ntrain_cnn:test.accuracy,0.79,0.02\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run_with(repo: Path, accuracy: float, torch: str = "2.14.1") -> int:
    now = {"test.accuracy": accuracy, "env.device": "cpu", "env.torch": torch}
    (repo / "metrics/train_cnn.json").write_text(json.dumps(now))
    return verify.main(["--metrics", "metrics", "--seeds", "seeds.csv"])


def test_identical_bytes_pass(repo: Path, capsys: pytest.CaptureFixture) -> None:
    assert verify.main(["--metrics", "metrics", "--seeds", "seeds.csv"]) == 0
    assert "reproduced bit for bit" in capsys.readouterr().out


def test_within_two_seed_sd_passes_and_names_the_environment(
    repo: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _run_with(repo, 0.83, torch="2.13.0") == 0  # 0.03 <= 2 x 0.02
    out = capsys.readouterr().out
    assert "environment env.torch: committed '2.14.1', this run '2.13.0'" in out
    assert "ok   train_cnn:test.accuracy" in out


def test_beyond_the_spread_fails(repo: Path, capsys: pytest.CaptureFixture) -> None:
    assert _run_with(repo, 0.75) == 1  # 0.05 > 2 x 0.02
    assert "FAIL train_cnn:test.accuracy" in capsys.readouterr().out


def test_a_missing_figure_fails() -> None:
    (check,) = verify.checks({"a": {"k": 0.5}}, {"a": {}}, {"a:k": 0.1, "b:k": 0.1})
    assert not check.ok and check.figure == "a:k"


def test_an_environment_key_only_this_run_records_is_named() -> None:
    changes = verify.environment_changes(
        {"train_cnn": {"env.torch": "2.14.1"}},
        {"train_cnn": {"env.torch": "2.14.1", "env.cpu": "AMD EPYC"}},
    )
    assert changes == {"env.cpu": (None, "AMD EPYC")}
