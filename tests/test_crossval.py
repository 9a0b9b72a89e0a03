"""Grouped vs random cross-validation (bench/leakage_cv.py) on a tiny generated folder of scans."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from advdenoise.data.folders import load_image_folder
from advdenoise.data.groups import scan_groups
from advdenoise.data.synthetic import generate
from advdenoise.sweeps import crossval

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"non-COVID": 0, "COVID": 1}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic scans written as a Kaggle-layout folder with a groups.csv naming each scan."""
    root = tmp_path_factory.mktemp("scans")
    images = generate({"non-COVID": 36, "COVID": 36}, tuple(CLASSES), 32, seed=3,
                             slices=(3, 5))  # fmt: skip
    rows = ["file,group"]
    for i, (x, y, scan) in enumerate(zip(images.x, images.y, images.scans, strict=True)):
        name = f"{images.classes[y]}/scan{scan:03d}_{i:03d}.png"
        (root / name).parent.mkdir(exist_ok=True)
        Image.fromarray(x[0]).save(root / name)
        rows.append(f"{name},scan{scan}")
    (root / "groups.csv").write_text("\n".join(rows) + "\n")
    return root


def _bench():
    spec = importlib.util.spec_from_file_location("leakage_cv", ROOT / "bench" / "leakage_cv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_folds_test_every_image_once_and_grouped_folds_share_no_scan(folder):
    images = load_image_folder(folder, CLASSES, 32)
    scans = scan_groups(images, "auto", 1.0, folder)
    assert len(np.unique(scans)) >= 16  # the CSV's scans, not one group per image
    for split in crossval.SPLITS:
        groups = crossval.fold_groups(images, scans, split)
        parts = crossval.folds(images.y, groups, 4, seed=0)
        tested = np.sort(np.concatenate([te for _, te in parts]))
        assert np.array_equal(tested, np.arange(len(images.y)))
        for train, test in parts:
            assert not set(groups[train]) & set(groups[test])
            assert set(images.y[test]) == {0, 1}  # stratified
            fit, val = crossval.carve_validation(train, images.y, groups, 0.2, seed=1)
            assert np.array_equal(np.sort(np.concatenate([fit, val])), np.sort(train))
            assert not set(groups[fit]) & set(groups[val])
    grouped = crossval.folds(images.y, scans, 4, seed=0)
    assert all(not set(scans[tr]) & set(scans[te]) for tr, te in grouped)
    slice_level = crossval.folds(images.y, images.groups, 4, seed=0)
    assert any(set(scans[tr]) & set(scans[te]) for tr, te in slice_level)  # the leak it measures
    with pytest.raises(ValueError, match="split must be one of"):
        crossval.fold_groups(images, scans, "by_patient")


def test_the_scan_bootstrap_has_the_binomial_width_and_resamples_scans_not_slices():
    half = {i: (1, int(i < 50)) for i in range(100)}  # 100 one-slice scans, half right
    acc, low, high = crossval.bootstrap_accuracy(half, seed=0)
    assert acc == 0.5 and 0.39 < low < 0.42 and 0.58 < high < 0.61  # 0.5 +- 1.96 * 0.05
    # the same 100 slices in 2 scans of 50: the evidence is two scans, and the interval says so
    assert crossval.bootstrap_accuracy({0: (50, 50), 1: (50, 0)}, seed=0)[1:] == (0.0, 1.0)
    assert crossval.bootstrap_accuracy({0: (5, 5), 1: (3, 3)}, seed=0) == (1.0, 1.0, 1.0)
    assert crossval.bootstrap_accuracy(half, seed=0) == (acc, low, high)  # seeded
    with pytest.raises(ValueError, match="no scans"):
        crossval.bootstrap_accuracy({}, seed=0)


def test_the_bench_runs_resumes_and_summarises(folder, tmp_path, monkeypatch):
    bench = _bench()
    out = tmp_path / "cv"
    argv = ["--source", str(folder), "--image-size", "32", "--epochs", "1", "--folds", "2",
            "--seeds", "0", "--out", str(out)]  # fmt: skip
    bench.main(argv)
    folds = pd.read_csv(out / "cv_folds.csv")
    assert len(folds) == 4 and set(folds.split) == set(crossval.SPLITS)
    assert folds.groupby("split").n.sum().tolist() == [72, 72]  # each image tested once a seed
    assert (folds[folds.split == "grouped"].groups_shared == 0).all()
    scans = pd.read_csv(out / "cv_scans.csv")
    assert scans.groupby(["split", "fold"]).correct.sum().tolist() == folds.sort_values(
        ["split", "fold"]).correct.tolist()  # fmt: skip
    summary = (out / "cv_summary.json").read_text()
    assert '"grouped"' in summary and '"seed_0.ci_low"' in summary
    assert "| grouped | 1 |" in (out / "cv_summary.md").read_text()
    # resume: a fold already in the results is not run again; a missing one is
    calls = []
    real = crossval.run_fold

    def counted(*args, **kwargs):
        calls.append(args[3:6])
        return real(*args, **kwargs)

    monkeypatch.setattr(crossval, "run_fold", counted)
    folds.drop(index=folds.index[-1]).to_csv(out / "cv_folds.csv", index=False)
    bench.main(argv)
    assert calls == [tuple(folds.iloc[-1][["split", "seed", "fold"]])]
    again = pd.read_csv(out / "cv_folds.csv")
    assert len(again) == 4 and again.iloc[-1].accuracy == folds.iloc[-1].accuracy  # same bits
    assert pd.read_csv(out / "cv_scans.csv").equals(scans)  # the stale fold's counts replaced


def test_the_bench_runs_another_architecture(folder, tmp_path):
    """--arch and --augment override params.yaml's train_cnn; the summary says which ran."""
    out = tmp_path / "cv"
    _bench().main(["--source", str(folder), "--image-size", "32", "--epochs", "1", "--folds", "2",
                   "--seeds", "0", "--splits", "grouped", "--arch", "resnet18", "--augment", "on",
                   "--out", str(out)])  # fmt: skip
    summary = json.loads((out / "cv_summary.json").read_text())
    assert (summary["arch"], summary["augment"]) == ("resnet18", True)
    assert "--arch resnet18 --augment on" in summary["command"]
    assert "of the resnet18 classifier" in (out / "cv_summary.md").read_text()
    assert len(pd.read_csv(out / "cv_folds.csv")) == 2
