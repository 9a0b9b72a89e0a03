"""Seed aggregation over `dvc exp show --json` (the end-to-end sweep is in test_pipeline)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd
import pytest

from advdenoise.sweeps import seeds


def _robustness(none: float, ae: float, ae_clean: float = 0.8) -> dict:
    """Flat keys with dots, as the stage writes them and `dvc exp show` reports them."""
    return {
        "eps": 0.008, "chance": 0.5, "none.clean_accuracy": 0.85, "ae.clean_accuracy": ae_clean,
        "none.robust_accuracy": none, "ae.robust_accuracy": ae,
        "none.oblivious.worst.accuracy": none, "ae.oblivious.worst.accuracy": ae,
        "none.adaptive.worst.accuracy": none, "ae.adaptive.worst.accuracy": ae,
        "checks.ae.pgd_converged": True, "env.torch": "2.14.1",
    }  # fmt: skip


def _entry(name: str, seed: int, stamp: str, metrics: dict, eps: float = 0.03) -> dict:
    return {
        "rev": f"{name}-rev-0000",
        "name": name,
        "error": None,
        "data": {
            "timestamp": stamp,
            "params": {"params.yaml": {"data": {"seed": seed, "attack": {"eps": eps}}}},
            "metrics": {
                "metrics/robustness.json": {"data": metrics},
                "metrics/train_cnn.json": {"data": {"test": {"accuracy": 0.8 + seed / 100}}},
            },
        },
    }


def _show(*experiments: dict, running: dict | None = None) -> list[dict]:
    base = _entry("main", 0, "2026-01-01T00:00:00", _robustness(0.10, 0.60))
    base["experiments"] = [
        {"revs": [e], "name": e["name"], "executor": {"state": "success"}} for e in experiments
    ]
    if running is not None:  # a running experiment shows the baseline's files until it ends
        base["experiments"].append({"revs": [running], "executor": {"state": "running"}})
    return [{"rev": "workspace", "data": base["data"], "experiments": None}, base]


def test_baseline_and_seed_experiments_only_latest_per_seed() -> None:
    show = _show(
        _entry("s1", 1, "2026-01-02T00:00:00", _robustness(0.12, 0.70)),
        _entry("s2", 2, "2026-01-02T00:00:00", _robustness(0.08, 0.50)),
        _entry("s2-again", 2, "2026-01-03T00:00:00", _robustness(0.08, 0.55)),
        _entry("eps", 3, "2026-01-04T00:00:00", _robustness(0.0, 0.0), eps=0.01),  # not a seed run
        running=_entry("s4", 4, "", _robustness(0.10, 0.60)),
    )
    runs = seeds.seed_runs(show)
    assert [(r.seed, r.name) for r in runs] == [(0, "main"), (1, "s1"), (2, "s2-again")]
    assert "env.torch" not in runs[0].metrics["robustness"]  # strings are not figures
    rows = {r["figure"]: r for r in seeds.summary(runs)}
    ae = rows["robustness:ae.robust_accuracy"]
    assert ae["n"] == 3 and ae["mean"] == pytest.approx((0.60 + 0.70 + 0.55) / 3)
    assert ae["sd"] == pytest.approx(statistics.stdev([0.60, 0.70, 0.55]))
    assert rows["train_cnn:test.accuracy"]["max"] == pytest.approx(0.82)
    assert "robustness:jpeg.robust_accuracy" not in rows  # defences absent from every run


def test_a_verdict_is_stated_only_when_every_seed_agrees() -> None:
    agree = _show(_entry("s1", 1, "2026-01-02", _robustness(0.12, 0.70)))
    assert seeds.seed_verdicts(seeds.seed_runs(agree))["ae"] == (
        "helps partly",
        ["helps partly", "helps partly"],
    )
    # seed 1: the gain over `none` is below the 10-point margin
    differ = _show(_entry("s1", 1, "2026-01-02", _robustness(0.12, 0.15)))
    label, labels = seeds.seed_verdicts(seeds.seed_runs(differ))["ae"]
    assert label == "seeds disagree" and labels == ["helps partly", "does not defend"]
    text = seeds.markdown(seeds.seed_runs(differ))
    assert "| ae | seeds disagree | helps partly, does not defend |" in text
    assert "| robustness:ae.robust_accuracy | 37.5 ± 31.8 | 15.0 – 60.0 | 2 |" in text


def test_cli_needs_two_seeds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    one = tmp_path / "show.json"
    one.write_text(json.dumps(_show()))
    assert seeds.main(["--show", str(one)]) == 2
    assert "at least 2 seeds" in capsys.readouterr().err
    two = tmp_path / "two.json"
    two.write_text(json.dumps(_show(_entry("s1", 1, "2026-01-02", _robustness(0.1, 0.6)))))
    assert seeds.main(["--show", str(two), "--out", str(tmp_path / "seeds.md")]) == 0
    assert (tmp_path / "seeds.md").read_text() == capsys.readouterr().out


def test_runs_kept_as_folders_aggregate_by_their_params_seed(tmp_path: Path) -> None:
    from conftest import write_params

    folders = []
    for seed, acc in ((2, 0.9), (0, 0.8)):
        folder = tmp_path / f"run{seed}"
        write_params(folder / "params.yaml", {"seed": seed})
        (folder / "train_cnn.json").write_text(json.dumps({"test": {"accuracy": acc}}))
        folders.append(folder)
    runs = seeds.folder_runs(folders)
    assert [r.seed for r in runs] == [0, 2]
    row = seeds.summary(runs)[0]
    assert row["figure"] == "train_cnn:test.accuracy" and row["mean"] == pytest.approx(0.85)
    assert seeds.main(["--runs", *map(str, folders), "--out", str(tmp_path / "s.md")]) == 0
    assert (
        "| train_cnn:test.accuracy | 85.0 ± 7.1 | 80.0 – 90.0 | 2 |"
        in (tmp_path / "s.md").read_text()
    )
    with pytest.raises(SystemExit, match="same seed"):
        seeds.folder_runs([folders[0], folders[0]])


def test_runs_group_by_every_swept_param_but_the_seed(tmp_path: Path) -> None:
    show = _show(
        _entry("s1", 1, "2026-01-02", _robustness(0.12, 0.70)),
        _entry("e0", 0, "2026-01-03", _robustness(0.0, 0.20), eps=0.01),
        _entry("e1", 1, "2026-01-03", _robustness(0.0, 0.30), eps=0.01),
        _entry("e1-again", 1, "2026-01-04", _robustness(0.0, 0.40), eps=0.01),
    )
    groups = seeds.seed_groups(show)
    assert {g: [(r.seed, r.name) for r in runs] for g, runs in groups.items()} == {
        (("attack.eps", "0.01"),): [(0, "e0"), (1, "e1-again")],
        (("attack.eps", "0.03"),): [(0, "main"), (1, "s1")],
    }
    # the baseline-only view keeps the commit's group, as `make seeds` uses it
    assert [r.name for r in seeds.seed_runs(show)] == ["main", "s1"]
    shown, csv = tmp_path / "show.json", tmp_path / "s.csv"
    shown.write_text(json.dumps(show))
    assert (
        seeds.main(["--show", str(shown), "--csv", str(csv), "--out", str(tmp_path / "s.md")]) == 0
    )
    text = (tmp_path / "s.md").read_text()
    assert "## attack.eps=0.01\n" in text and "## attack.eps=0.03\n" in text
    assert "| robustness:ae.robust_accuracy | 30.0 ± 14.1 | 20.0 – 40.0 | 2 |" in text
    table = pd.read_csv(csv)
    row = table[(table["attack.eps"] == 0.03) & (table["figure"] == "train_cnn:test.accuracy")]
    assert row["mean"].item() == pytest.approx(0.805) and row["n"].item() == 2
    # one group (only the seed swept): the Markdown and CSV of before, no group columns
    assert seeds.main(["--show", str(shown), "--baseline-only", "--csv", str(csv)]) == 0
    assert list(pd.read_csv(csv).columns) == ["figure", "mean", "sd", "min", "max", "n"]
