"""Training loops, seeded noise, and both stages end to end on a tiny split directory."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from advdenoise.core.params import read_yaml
from advdenoise.data.splits import Split, Splits, save_splits
from advdenoise.models.autoencoder import Autoencoder
from advdenoise.models.classifier import Classifier
from advdenoise.models.files import load_autoencoder, load_classifier
from advdenoise.training import noise
from advdenoise.training.combined import combined_images
from advdenoise.training.loops import adam, augment_batch, fit_classifier, fit_denoiser, live_curves

SIZE = 32


def _split(n: int, rng: np.random.Generator) -> Split:
    """Class 1 = a bright blob on a noisy background: learnable in a few steps."""
    y = np.arange(n) % 2
    x = rng.normal(90, 25, (n, 1, SIZE, SIZE))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in np.flatnonzero(y):
        cy, cx = rng.integers(8, SIZE - 8, 2)
        x[i, 0] += 110 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
    files = np.array([f"synthetic/{i:03d}" for i in range(n)])
    return Split(np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64), files)


@pytest.fixture(scope="module")
def splits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("prepare")
    save_splits(
        d, Splits(_split(48, rng), _split(16, rng), _split(20, rng), ("non-COVID", "COVID"))
    )
    return d


@pytest.fixture(scope="module")
def params_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = read_yaml((Path(__file__).parents[1] / "params.yaml").read_text())
    raw.update(device="cpu", threads=1)
    raw["data"]["image_size"] = SIZE
    raw["train_cnn"].update(epochs=2, lr=3e-3)
    raw["train_cnn"]["paper"]["channels"] = [4, 8, 8, 8]
    raw["train_ae"].update(epochs=1, channels=[4, 8], latent_channels=2)
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _tensors(d: Path) -> tuple[torch.Tensor, ...]:
    from advdenoise.data.splits import load_splits

    s = load_splits(d)
    return tuple(torch.from_numpy(a) for a in (s.train.x, s.train.y, s.val.x, s.val.y))


def test_one_epoch_decreases_loss(splits_dir: Path) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y, xv, yv = _tensors(splits_dir)
    model = Classifier(SIZE, [4, 8, 8])
    before = torch.nn.functional.cross_entropy(model.eval()(x.float() / 255), y).item()
    fit = fit_classifier(model, x, y, xv, yv, epochs=3, lr=3e-3, batch_size=8, seed=0,
                         device="cpu", progress=False)  # fmt: skip
    after = torch.nn.functional.cross_entropy(model(x.float() / 255), y).item()
    assert after < before
    assert 1 <= fit.best_epoch <= 3 and len(fit.history) == 3
    assert {"train.loss", "train.accuracy", "val.loss", "val.accuracy"} <= set(fit.history[0])
    assert not model.training


def test_best_epoch_weights_are_kept(splits_dir: Path) -> None:
    x, y, xv, yv = _tensors(splits_dir)
    torch.manual_seed(1)
    model = Classifier(SIZE, [4, 8])
    fit = fit_classifier(model, x, y, xv, yv, epochs=4, lr=1e-2, batch_size=8, seed=1,
                         device="cpu", progress=False)  # fmt: skip
    best = fit.history[fit.best_epoch - 1]
    assert best["val.accuracy"] == max(r["val.accuracy"] for r in fit.history)
    logits = model(xv.float() / 255)
    assert (logits.argmax(1) == yv).float().mean().item() == pytest.approx(best["val.accuracy"])


def test_curves_are_written_while_training_runs(splits_dir: Path, tmp_path: Path) -> None:
    """Each epoch's row is on disk when the epoch ends, so a long run can be followed live."""
    x, y, xv, yv = _tensors(splits_dir)
    live_dir = tmp_path / "live"
    seen: list[list[str]] = []
    with live_curves(live_dir) as log:

        def on_epoch(record: dict[str, float]) -> None:
            log(record)
            seen.append((live_dir / "plots/metrics/val/loss.tsv").read_text().splitlines())
            summary = json.loads((live_dir / "metrics.json").read_text())
            assert summary["step"] == record["epoch"]
            assert summary["val"]["loss"] == pytest.approx(record["val.loss"])

        fit = fit_classifier(Classifier(SIZE, [4]), x, y, xv, yv, epochs=2, lr=1e-3,
                             batch_size=16, seed=0, device="cpu", progress=False,
                             on_epoch=on_epoch)  # fmt: skip
    assert [len(rows) for rows in seen] == [2, 3]  # header + one row per finished epoch
    assert seen[1][0].split() == ["step", "loss"]
    assert [float(r.split()[1]) for r in seen[1][1:]] == [h["val.loss"] for h in fit.history]


def test_fit_is_reproducible(splits_dir: Path) -> None:
    x, y, xv, yv = _tensors(splits_dir)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = Classifier(SIZE, [4, 8])
        fit = fit_classifier(model, x, y, xv, yv, epochs=1, lr=1e-3, batch_size=8, seed=3,
                             device="cpu", progress=False, augment=True)  # fmt: skip
        runs.append((fit.history, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))


def test_training_reads_the_device_once_an_epoch_not_once_a_batch(
    splits_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU every host read of a loss waits for the queued work: the loop must not read per
    batch. Counts the project's `float(tensor)` and `.item()` calls (torch's optimiser reads its
    CPU step counter) over one epoch of 16 and of 2 batches."""
    x, y, xv, yv = _tensors(splits_dir)
    reads = []
    for method in ("__float__", "item"):
        original = getattr(torch.Tensor, method)

        def counted(self: torch.Tensor, _original=original) -> object:
            if "advdenoise" in sys._getframe(1).f_code.co_filename:
                reads.append(1)
            return _original(self)

        monkeypatch.setattr(torch.Tensor, method, counted)
    counts = []
    for batch in (4, 32):
        reads.clear()
        fit_classifier(Classifier(SIZE, [4, 8]), x[:64], y[:64], xv, yv, epochs=1, lr=1e-3,
                       batch_size=batch, seed=0, device="cpu", progress=False)  # fmt: skip
        data = combined_images(x[:32].numpy(), {"gaussian": 0.1}, 0, "train")
        fit_denoiser(Autoencoder(SIZE, [4, 8], 2), data.inputs, data.targets, xv, xv, epochs=1,
                     lr=1e-3, batch_size=batch, seed=0, device="cpu", progress=False,
                     target_index=data.target_index)  # fmt: skip
        counts.append(len(reads))
    assert counts[0] == counts[1] > 0


def test_denoiser_training_decreases_loss(splits_dir: Path) -> None:
    torch.manual_seed(0)
    x, _, xv, _ = _tensors(splits_dir)
    data = combined_images(x.numpy(), {"gaussian": 0.1, "salt_pepper": 0.05}, 0, "train")
    val = combined_images(xv.numpy(), {"gaussian": 0.1, "salt_pepper": 0.05}, 0, "val")
    model = Autoencoder(SIZE, [4, 8], 2)
    fit = fit_denoiser(model, data.inputs, data.targets, val.inputs, val.targets,
                       target_index=data.target_index, val_target_index=val.target_index,
                       epochs=2, lr=3e-3, batch_size=16, seed=0, device="cpu",
                       progress=False)  # fmt: skip
    assert fit.history[-1]["train.loss"] < fit.history[0]["train.loss"]
    assert "val.loss" in fit.history[0]


def test_combined_images_layout(splits_dir: Path) -> None:
    x = _tensors(splits_dir)[0].numpy()
    c = combined_images(x, {"speckle": 0.2, "gaussian": 0.1}, seed=0, stream="train")
    n = len(x)
    assert c.kinds == ("clean", "gaussian", "speckle")
    assert c.inputs.shape == (3 * n, 1, SIZE, SIZE) and c.inputs.dtype == torch.uint8
    assert torch.equal(c.block("clean"), torch.from_numpy(x))
    assert torch.equal(c.targets[c.target_index[n + 5]], c.targets[5])
    assert not torch.equal(c.block("gaussian"), c.block("clean"))
    again = combined_images(x, {"gaussian": 0.1}, seed=0, stream="train")
    assert torch.equal(again.block("gaussian"), c.block("gaussian"))  # independent of other types
    other = combined_images(x, {"gaussian": 0.1}, seed=0, stream="val")
    assert not torch.equal(other.block("gaussian"), c.block("gaussian"))


def test_noise_is_pure_and_seeded() -> None:
    x = torch.full((2, 1, 16, 16), 0.5)
    for name in noise.NOISES:
        a = noise.add_noise(x, name, 0.2, torch.Generator().manual_seed(0))
        b = noise.add_noise(x, name, 0.2, torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and not torch.equal(a, x)
        assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(x, torch.full((2, 1, 16, 16), 0.5))  # input untouched
    sp = noise.salt_pepper(x, 0.5, torch.Generator().manual_seed(0))
    frac = ((sp == 0) | (sp == 1)).float().mean().item()
    assert 0.35 < frac < 0.65


def test_augment_keeps_shape_and_range() -> None:
    x = torch.rand(6, 1, SIZE, SIZE)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_augment_crops_each_image_at_its_own_shift() -> None:
    x = torch.rand(12, 1, SIZE, SIZE)
    out = augment_batch(x, torch.Generator().manual_seed(1), max_shift=2)
    found = set()
    for i in range(len(x)):
        windows = {
            (flip, dy, dx)
            for flip in (False, True)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(
                out[i],
                F.pad((x[i : i + 1].flip(-1) if flip else x[i : i + 1]), (2,) * 4, mode="reflect")[
                    0, :, dy : dy + SIZE, dx : dx + SIZE
                ],
            )
        }
        assert windows, f"image {i} is no flipped/shifted crop of its input"
        found |= windows
    assert len(found) > 3  # shifts and flips differ between images


def _stage(name: str) -> ModuleType:
    """Import stages/<name>.py (a script, not a package module)."""
    path = Path(__file__).parents[1] / "stages" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_stage_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_stages(splits_dir: Path, params_file: Path, root: Path) -> None:
    train_cnn, train_ae = _stage("train_cnn"), _stage("train_ae")

    rc = train_cnn.main(["--params", str(params_file), "--data", str(splits_dir),
                         "--out", str(root / "cnn"), "--metrics", str(root / "cnn.json"),
                         "--plots", str(root / "plots_cnn")])  # fmt: skip
    assert rc == 0
    rc = train_ae.main(["--params", str(params_file), "--data", str(splits_dir),
                        "--classifier", str(root / "cnn"), "--out", str(root / "ae"),
                        "--metrics", str(root / "ae.json"), "--plots", str(root / "plots_ae")])  # fmt: skip
    assert rc == 0


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_stages_end_to_end_and_reproducible(
    splits_dir: Path, params_file: Path, tmp_path: Path
) -> None:
    _run_stages(splits_dir, params_file, tmp_path / "a")
    a = tmp_path / "a"
    cnn = json.loads((a / "cnn.json").read_text())
    for key in ("test.accuracy", "test.precision", "test.recall", "test.f1", "test.roc_auc",
                "test.top1_error", "test.ece", "test.mean_entropy", "train.accuracy",
                "val.accuracy", "best_epoch", "epochs"):  # fmt: skip
        assert isinstance(cnn[key], (int, float)), key
    ae = json.loads((a / "ae.json").read_text())
    for key in ("test.clean.mse", "test.clean.psnr", "test.noisy.mse", "test.noisy.psnr",
                "test.cnn_accuracy_clean", "test.cnn_accuracy_denoised", "best_epoch"):  # fmt: skip
        assert isinstance(ae[key], (int, float)), key
    assert ae["test.cnn_accuracy_clean"] == pytest.approx(cnn["test.accuracy"])
    assert load_classifier(a / "cnn").hparams["channels"] == [4, 8, 8, 8]
    assert load_autoencoder(a / "ae").hparams["latent_channels"] == 2
    plots = _files(a / "plots_cnn")
    assert {"confusion.csv", "roc.csv", "reliability.csv", "confusion.png", "roc.png",
            "reliability.png", "training_curves.png",
            "live/plots/metrics/val/accuracy.tsv"} <= set(plots)  # fmt: skip
    assert not (a / "plots_cnn" / "live" / "dvc.yaml").exists()
    header, *rows = plots["confusion.csv"].decode().splitlines()
    assert header == "actual,predicted" and len(rows) == 20
    assert {r.split(",")[0] for r in rows} == {"non-COVID", "COVID"}
    assert "examples.png" in _files(a / "plots_ae")

    _run_stages(splits_dir, params_file, tmp_path / "b")  # byte-identical outputs
    for sub in ("cnn", "ae", "plots_cnn", "plots_ae"):
        assert _files(a / sub) == _files(tmp_path / "b" / sub), sub
    for name in ("cnn.json", "ae.json"):
        assert (a / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_stage_reports_missing_data(params_file: Path, tmp_path: Path, capsys) -> None:
    rc = _stage("train_cnn").main(["--params", str(params_file), "--data", str(tmp_path / "none"),
                         "--out", str(tmp_path / "o"), "--metrics", str(tmp_path / "m.json"),
                         "--plots", str(tmp_path / "p")])  # fmt: skip
    assert rc == 2
    assert "splits.npz" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_adam_updates_all_weights_as_one_at_a_time_would() -> None:
    """`adam` (foreach) and torch's per-tensor Adam give the same weights bit for bit."""
    torch.manual_seed(0)
    start = Autoencoder(16, [4, 8], 2)
    x = torch.rand(8, 1, 16, 16)
    weights = []
    for make in (
        lambda m: adam(m, 1e-2),
        lambda m: torch.optim.Adam(m.parameters(), 1e-2, foreach=False),
    ):
        model = Autoencoder(16, [4, 8], 2)
        model.load_state_dict(start.state_dict())
        optimiser = make(model)
        for _ in range(20):
            optimiser.zero_grad()
            F.mse_loss(model(x), x).backward()
            optimiser.step()
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))
    assert not torch.equal(weights[0][0], start.encoder[0].weight)
