"""The robustness table and the three stages beyond the paper, end to end on tiny data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from advdenoise import defences as dfn
from advdenoise.adversarial import AdversarialSets, save_adversarial
from advdenoise.data import Split, Splits, save_splits
from advdenoise.models import MODEL_FILE, Autoencoder, Classifier, load_autoencoder, save_model
from advdenoise.params import AttackParams, RobustnessParams

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
torch.set_num_threads(1)


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 textures whose mean brightness gives the class (0.40 vs 0.48)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(0.2, 0.6, (n, 1, SIZE, SIZE)) + 0.08 * y[:, None, None, None]
    return np.round(x * 255).astype(np.uint8), y.astype(np.int64)


def _trained_cnn(x: np.ndarray, y: np.ndarray) -> Classifier:
    torch.manual_seed(0)
    cnn = Classifier(SIZE, [4, 8, 8, 8], dropout=0.0)
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x).float() / 255, torch.from_numpy(y)
    for _ in range(40):
        loss = nn.functional.cross_entropy(cnn(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return cnn.eval()


ATTACK = AttackParams(eps=0.05, eps_grid=(0.0, 0.02, 0.05), pgd_steps=3, batch_size=32)


def _oblivious(cnn: nn.Module, x: np.ndarray, y: np.ndarray) -> AdversarialSets:
    clf = dfn.art_classifier(cnn, SIZE, 2, "cpu")
    images = {
        m: np.stack([dfn.run_attack(clf, m, x, y, e, ATTACK) for e in ATTACK.eps_grid])
        for m in dfn.METHODS
    }
    return AdversarialSets(ATTACK.eps_grid, images)


def test_table_has_every_cell_and_checks_are_reported() -> None:
    xu, y = _images(24, seed=1)
    cnn = _trained_cnn(*_images(48, seed=0))
    x = xu.astype(np.float32) / 255
    oblivious = _oblivious(cnn, x, y)
    torch.manual_seed(0)
    aes = {n: Autoencoder(SIZE, [4, 4, 4], 2) for n in dfn.AUTOENCODER_DEFENCES}
    params = RobustnessParams(eps=0.05, eps_grid=(0.02, 0.05))
    eps_values = params.eps_grid
    results = dfn.evaluate_defences(
        params, aes, cnn, x, y, oblivious, ATTACK, seed=0, device="cpu", nb_classes=2
    )
    table = dfn.robustness_table(results, params.eps)
    assert list(table.defence) == list(dfn.DEFENCES)
    for threat in dfn.THREATS:
        for method in dfn.METHODS:
            assert table[f"{threat}_{method}"].between(0, 1).all()
    assert not table.isna().any().any()
    metrics = dfn.robustness_metrics(results, params.eps)
    for d in dfn.DEFENCES:
        for threat in dfn.THREATS:
            for method in dfn.METHODS:
                assert f"{d}.{threat}.{method}.accuracy" in metrics
        for key in ("clean_accuracy", "random_noise.accuracy", "adaptive.pgd_2x_steps.accuracy"):
            assert f"{d}.{key}" in metrics
        assert isinstance(metrics[f"checks.{d}.pgd_converged"], bool)
    # none: both threat models are the same white-box attack on the bare CNN
    assert metrics["none.adaptive.pgd.accuracy"] == metrics["none.oblivious.pgd.accuracy"]
    assert metrics["none.clean_accuracy"] > 0.9 and metrics["none.adaptive.pgd.accuracy"] <= 0.5
    curves = dfn.robustness_curves(results)
    assert len(curves) == len(dfn.DEFENCES) * 4 * (len(eps_values) + 1)
    wide = dfn.wide_curves(curves, "adaptive", "pgd")
    assert list(wide.columns) == ["eps", *dfn.DEFENCES] and list(wide.eps) == [0.0, 0.02, 0.05]
    verdicts = dfn.verdicts(results, params.eps)
    assert list(verdicts.defence) == list(dfn.DEFENCES) and verdicts.verdict.str.len().min() > 20


def test_evaluation_subset_is_stratified_seeded_and_sorted() -> None:
    y = np.array([0] * 300 + [1] * 100)
    idx = dfn.evaluation_subset(y, 100, seed=3)
    assert len(idx) == 100 and list(idx) == sorted(set(idx))
    assert np.bincount(y[idx]).tolist() == [75, 25]  # the split's class shares
    assert np.array_equal(idx, dfn.evaluation_subset(y, 100, seed=3))
    assert not np.array_equal(idx, dfn.evaluation_subset(y, 100, seed=4))
    assert np.array_equal(dfn.evaluation_subset(y, 0, seed=3), np.arange(400))
    assert np.array_equal(dfn.evaluation_subset(y, 1000, seed=3), np.arange(400))


def test_checks_flag_a_broken_evaluation() -> None:
    good = dfn.DefenceResult("x", 0.9, 100, pgd_2x_steps=0.30, random_noise=0.85)
    good.curves = {
        ("oblivious", "fgsm"): {0.01: 0.8, 0.03: 0.6},
        ("oblivious", "pgd"): {0.01: 0.7, 0.03: 0.4},
        ("adaptive", "fgsm"): {0.01: 0.6, 0.03: 0.4},
        ("adaptive", "pgd"): {0.01: 0.5, 0.03: 0.3},
    }
    assert all(dfn.checks(good, 0.03).values())
    within_one_image = dfn.DefenceResult("x", 0.9, 100, pgd_2x_steps=0.30, random_noise=0.85)
    within_one_image.curves = {k: dict(v) for k, v in good.curves.items()}
    within_one_image.curves[("adaptive", "pgd")] = {0.01: 0.5, 0.03: 0.41}  # 0.41 vs FGSM 0.40
    assert dfn.checks(within_one_image, 0.03)["adaptive.pgd_le_fgsm"]
    bad = dfn.DefenceResult("x", 0.9, 100, pgd_2x_steps=0.10, random_noise=0.2)
    bad.curves = {k: dict(v) for k, v in good.curves.items()}
    bad.curves[("adaptive", "pgd")] = {0.01: 0.2, 0.03: 0.5}  # rises with eps, above FGSM
    failed = {k for k, v in dfn.checks(bad, 0.03).items() if not v}
    assert failed == {
        "adaptive.pgd_le_fgsm",
        "adaptive.pgd.non_increasing_in_eps",
        "pgd_converged",
        "random_noise_floor",
        "adaptive_le_oblivious",
    }


def _stage(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_stage_{name}", ROOT / "stages" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_project(tmp_path: Path) -> Path:
    """splits, a trained CNN, the paper AE and the attack stage's sets, as the stages expect them."""
    (xtr, ytr), (xva, yva), (xte, yte) = _images(32, 0), _images(8, 1), _images(16, 2)
    split = lambda x, y: Split(x, y, np.array([f"img{i}" for i in range(len(y))]))  # noqa: E731
    save_splits(
        tmp_path / "data/prepare",
        Splits(split(xtr, ytr), split(xva, yva), split(xte, yte), ("non-COVID", "COVID")),
    )
    cnn = _trained_cnn(xtr, ytr)
    save_model(cnn, tmp_path / "data/train_cnn" / MODEL_FILE)
    torch.manual_seed(0)
    save_model(Autoencoder(SIZE, [4, 4, 4], 2), tmp_path / "data/train_ae" / MODEL_FILE)
    x = xte.astype(np.float32) / 255
    sets = _oblivious(cnn, x, yte)
    save_adversarial(tmp_path / "data/attack", sets.eps, sets.images, x)
    params = {
        "data": {"image_size": SIZE},
        "threads": 1,
        "train_cnn": {"channels": [4, 8, 8, 8]},
        "train_ae": {"channels": [4, 4, 4], "latent_channels": 2},
        "attack": {"eps": 0.05, "eps_grid": [0.0, 0.02, 0.05], "pgd_steps": 2, "batch_size": 32},
        "train_ae_adv": {"epochs": 1, "eps": [0.05], "batch_size": 16},
        "train_ae_guided": {"epochs": 1, "eps": [0.02, 0.05], "methods": ["pgd"]},
        "robustness": {"eps": 0.05, "eps_grid": [0.02, 0.05]},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def _run_robustness(root: Path, metrics: str, plots: str) -> int:
    return _stage("robustness").main(
        ["--params", str(root / "params.yaml"), "--data", str(root / "data/prepare"),
         "--classifier", str(root / "data/train_cnn"), "--autoencoder", str(root / "data/train_ae"),
         "--ae-adv", str(root / "data/train_ae_adv"), "--ae-guided", str(root / "data/train_ae_guided"),
         "--adversarial", str(root / "data/attack"), "--metrics", str(root / metrics),
         "--plots", str(root / plots)]
    )  # fmt: skip


def test_stages_end_to_end(tmp_path: Path) -> None:
    root = _tiny_project(tmp_path)
    for stage in ("train_ae_adv", "train_ae_guided"):
        rc = _stage(stage).main(
            ["--params", str(root / "params.yaml"), "--data", str(root / "data/prepare"),
             "--classifier", str(root / "data/train_cnn"), "--out", str(root / "data" / stage),
             "--metrics", str(root / f"metrics/{stage}.json"), "--plots", str(root / "plots" / stage)]
        )  # fmt: skip
        assert rc == 0, stage
        load_autoencoder(root / "data" / stage / MODEL_FILE)
        scores = json.loads((root / f"metrics/{stage}.json").read_text())
        for key in ("test.clean.mse", "test.adversarial.mse", "val.adversarial.mse",
                    "test.cnn_accuracy_denoised", "test.cnn_accuracy_adversarial_denoised"):  # fmt: skip
            assert 0 <= scores[key] <= 1, (stage, key)
        assert scores["train.images"] == 64  # 32 clean + one adversarial copy each
        assert len(pd.read_csv(root / "plots" / stage / "history.csv")) == 1
        assert (root / "plots" / stage / "training_curves.png").stat().st_size > 0

    assert _run_robustness(root, "metrics/robustness.json", "plots/robustness") == 0
    scores = json.loads((root / "metrics/robustness.json").read_text())
    assert scores["ae_adv.adaptive.pgd.accuracy"] <= scores["ae_adv.clean_accuracy"]
    assert all(isinstance(v, (bool, int, float)) for v in scores.values())
    plots = root / "plots/robustness"
    table = pd.read_csv(plots / "robustness.csv")
    assert list(table.defence) == list(RobustnessParams().defences)
    assert {"clean_accuracy", "oblivious_fgsm", "oblivious_pgd", "adaptive_fgsm", "adaptive_pgd",
            "random_noise"} <= set(table.columns)  # fmt: skip
    for name in ("curves.csv", "curves_adaptive_pgd.csv", "verdict.csv", "robustness.png",
                 "curves.png"):  # fmt: skip
        assert (plots / name).stat().st_size > 0
    # same params, same bytes
    assert _run_robustness(root, "metrics/again.json", "plots/again") == 0
    assert (root / "metrics/again.json").read_bytes() == (
        root / "metrics/robustness.json"
    ).read_bytes()
    assert (root / "plots/again/robustness.csv").read_bytes() == (
        plots / "robustness.csv"
    ).read_bytes()


def test_robustness_names_missing_attack_eps(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _tiny_project(tmp_path)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["robustness"].update(eps=0.03, eps_grid=[0.03])  # not in attack.eps_grid
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("train_ae_adv", "train_ae_guided"):  # the AE files must exist; any AE will do
        save_model(Autoencoder(SIZE, [4, 4, 4], 2), root / "data" / stage / MODEL_FILE)
    assert _run_robustness(root, "metrics/robustness.json", "plots/robustness") == 2
    err = capsys.readouterr().err
    assert "robustness.eps_grid" in err and "0.03" in err
    assert not (root / "metrics/robustness.json").exists()
