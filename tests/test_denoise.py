"""The denoise stage and its plot data (figures.denoise), on tiny untrained models and data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import section, write_params

from advdenoise import attacks as atk
from advdenoise.attacks import runs as attack_runs
from advdenoise.attacks import specs as attack_specs
from advdenoise.attacks.sets import save_adversarial
from advdenoise.data.splits import Split, Splits, save_splits
from advdenoise.figures import denoise as figs
from advdenoise.models.autoencoder import Autoencoder
from advdenoise.models.classifier import Classifier
from advdenoise.models.files import save_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))
import denoise as denoise_stage  # noqa: E402

SIZE = 16
EPS = (0.0, 0.016, 0.05)
torch.set_num_threads(1)


def _split(n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % 2
    x = rng.integers(0, 256, (n, 1, SIZE, SIZE), dtype=np.uint8)
    return Split(x, y, np.array([f"img{i}" for i in range(n)]))


def _project(tmp_path: Path, headline: float = 0.016) -> dict[str, Path]:
    splits = Splits(_split(6, 0), _split(0, 1), _split(10, 2), ("non-COVID", "COVID"))
    save_splits(tmp_path / "prepare", splits)
    torch.manual_seed(0)
    cnn = Classifier(SIZE, [4, 8]).eval()
    save_model(cnn, tmp_path / "train_cnn" / "model.pt")
    save_model(Autoencoder(SIZE, [4, 8], 2).eval(), tmp_path / "train_ae" / "model.pt")
    x = splits.test.x.astype(np.float32) / 255
    clf = atk.make_art_classifier(cnn, (1, SIZE, SIZE), 2, "cpu")
    images = attack_runs.attack_grid(
        clf, attack_specs.METHODS, EPS, x, splits.test.y, section("attack", pgd_steps=2), 0
    )
    save_adversarial(tmp_path / "attack", EPS, images, x)
    cfg = {
        "seed": 0, "device": "cpu", "threads": 1, "attack": {"eps": headline},
        "denoise": {"batch_size": 4, "examples_per_class": 1},
    }  # fmt: skip
    write_params(tmp_path / "params.yaml", cfg)
    return {
        "params": tmp_path / "params.yaml", "data": tmp_path / "prepare",
        "classifier": tmp_path / "train_cnn", "autoencoder": tmp_path / "train_ae",
        "adversarial": tmp_path / "attack", "metrics": tmp_path / "metrics" / "denoise.json",
        "plots": tmp_path / "plots" / "denoise",
    }  # fmt: skip


def _argv(paths: dict[str, Path]) -> list[str]:
    return [a for k, v in paths.items() for a in (f"--{k}", str(v))]


def test_stage_end_to_end(tmp_path: Path) -> None:
    paths = _project(tmp_path)
    assert denoise_stage.main(_argv(paths)) == 0
    result = json.loads(paths["metrics"].read_text())
    assert result.pop("env.device") == "cpu"  # runtime.environment; tested in test_runtime
    result = {k: v for k, v in result.items() if not k.startswith("env.")}
    expected = {"eps", "clean_accuracy", "denoised_clean_accuracy", "recon.clean.mse",
                "recon.clean.psnr"}  # fmt: skip
    for m in attack_specs.METHODS:
        expected |= {f"{m}.{k}" for k in ("adversarial_accuracy", "denoised_accuracy",
                                          "recovered_rate", "recon.mse", "recon.psnr")}  # fmt: skip
    assert set(result) == expected
    assert all(isinstance(v, (int, float)) and np.isfinite(v) for v in result.values())
    plots = paths["plots"]
    for m in attack_specs.METHODS:
        acc = pd.read_csv(plots / f"accuracy_{m}.csv")
        assert list(acc.columns) == ["eps", "clean", "adversarial", "denoised", "denoised_clean"]
        assert acc.eps.tolist() == list(EPS)
        zero = acc.iloc[0]  # eps = 0: the "adversarial" set is the clean set
        assert zero.adversarial == pytest.approx(zero.clean)
        assert zero.denoised == pytest.approx(zero.denoised_clean)
        headline = acc[acc.eps == 0.016].iloc[0]
        assert headline.adversarial == pytest.approx(result[f"{m}.adversarial_accuracy"], abs=1e-6)
        assert headline.denoised == pytest.approx(result[f"{m}.denoised_accuracy"], abs=1e-6)
        recon = pd.read_csv(plots / f"recon_{m}.csv")
        assert list(recon.columns) == ["eps", "clean_mse", "adversarial_mse"]
        assert recon.adversarial_mse.iloc[0] == pytest.approx(recon.clean_mse.iloc[0])
    intensity = pd.read_csv(plots / "intensity.csv")
    assert list(intensity.columns) == [
        "bin", "clean", "adversarial_fgsm", "denoised_fgsm", "adversarial_pgd", "denoised_pgd",
    ]  # fmt: skip
    assert (intensity.drop(columns="bin").sum() == 10 * SIZE * SIZE).all()  # every pixel counted
    for name in ("fig3_accuracy_vs_eps", "fig4_heatmaps", "fig5_intensity", "fig7_recon_loss"):
        assert (plots / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    first = paths["metrics"].read_bytes()
    assert denoise_stage.main(_argv(paths)) == 0
    assert paths["metrics"].read_bytes() == first


def test_missing_autoencoder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _project(tmp_path)
    (paths["autoencoder"] / "model.pt").unlink()
    assert denoise_stage.main(_argv(paths)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train_ae/model.pt" in err
    assert not paths["metrics"].exists() and not paths["plots"].exists()


def test_headline_eps_not_attacked_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _project(tmp_path, headline=0.03)
    assert denoise_stage.main(_argv(paths)) == 2
    assert "eps=0.03" in capsys.readouterr().err


def test_example_indices_first_of_each_class() -> None:
    y = np.array([1, 1, 0, 1, 0, 0])
    assert figs.example_indices(y, 2, 2) == [2, 4, 0, 1]
    assert figs.example_indices(y, 5, 2) == [2, 4, 5, 0, 1, 3]


def test_intensity_table_counts_every_pixel_in_its_bin() -> None:
    clean = np.array([0.0, 0.01, 0.5, 1.0], dtype=np.float32)
    table = figs.intensity_table(clean, {"pgd": clean + 0.0}, {"pgd": np.full(4, 0.999)}, bins=4)
    assert table.bin.tolist() == [0.125, 0.375, 0.625, 0.875]
    assert table.clean.tolist() == [2, 0, 1, 1]  # 1.0 falls in the last (closed) bin
    assert table.denoised_pgd.tolist() == [0, 0, 0, 4]
