"""FGSM / PGD through ART (advdenoise.attacks) and the attack stage, on tiny models and data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_pytorch import (
    ProjectedGradientDescentPyTorch,
)
from art.defences.preprocessor import FeatureSqueezing
from art.estimators.classification import PyTorchClassifier
from art.utils import projection
from conftest import section, write_params
from torch import nn

from advdenoise import attacks as atk
from advdenoise.attacks import runs as attack_runs
from advdenoise.attacks import specs as attack_specs
from advdenoise.attacks.sets import check_perturbation, load_adversarial, save_adversarial
from advdenoise.core.errors import ParamsError, PipelineError
from advdenoise.core.params import parse_params, read_yaml
from advdenoise.data.splits import Split, Splits, save_splits
from advdenoise.evaluation import attack as am
from advdenoise.models.classifier import Classifier
from advdenoise.models.files import save_model
from advdenoise.models.inference import predict_logits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))
import attack as attack_stage  # noqa: E402

SIZE = 16
torch.set_num_threads(1)


def _images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of blobs: dark (label 0) and bright (label 1), with pixel noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % 2
    base = np.where(y == 1, 0.6, 0.4)[:, None, None, None]
    x = np.clip(base + rng.normal(0, 0.15, (n, 1, SIZE, SIZE)), 0, 1).astype(np.float32)
    x[:3, :, :2, :2] = 0.0  # some pixels at the range limits, so clipping matters
    x[3:6, :, :2, :2] = 1.0
    return x, y


def _linear_model() -> nn.Module:
    """Logit difference = sum(x - 0.5) / d * 40: the optimal L-inf attack is exactly FGSM."""
    d = SIZE * SIZE
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([-torch.ones(d), torch.ones(d)]) * 20.0 / d)
        lin.bias.copy_(torch.tensor([10.0, -10.0]))
    return nn.Sequential(nn.Flatten(), lin).eval()


def _conv_model() -> nn.Module:
    torch.manual_seed(0)
    return Classifier(SIZE, [4, 8]).eval()


def _clf(model: nn.Module) -> PyTorchClassifier:
    return atk.make_art_classifier(model, (1, SIZE, SIZE), 2, "cpu")


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    logits = predict_logits(model, torch.from_numpy(x), 64, "cpu")
    return float((logits.argmax(1).numpy() == y).mean())


# --------------------------------------------------------------------------- ART wrapper


def test_classifier_wrapper_settings() -> None:
    model = _conv_model().train()
    params = list(model.parameters())
    clf = _clf(model)
    assert not model.training  # eval mode: batch-norm statistics frozen during attacks
    # channels-last in place: the same Parameter objects (optimisers keep working), still trainable
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    assert all(p.requires_grad for p in params)
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]  # 4 -> 8 channels
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    assert clf.clip_values is not None and tuple(clf.clip_values) == (0.0, 1.0)
    assert clf.device == torch.device("cpu") and clf.nb_classes == 2
    assert clf.all_framework_preprocessing  # the condition for ART's PyTorch-native PGD


def test_pgd_uses_pytorch_native_path_and_step_fraction() -> None:
    attack = atk.make_pgd(_clf(_conv_model()), 0.04, 7, 0.25, True, 8)
    assert type(attack._attack) is ProjectedGradientDescentPyTorch
    assert attack._attack.eps_step == pytest.approx(0.01)  # never ART's default 0.1
    assert attack._attack.max_iter == 7 and attack._attack.num_random_init == 1
    assert attack._attack.targeted is False


def test_numpy_fallback_is_refused() -> None:
    clf = PyTorchClassifier(
        _conv_model(), nn.CrossEntropyLoss(), (1, SIZE, SIZE), 2, clip_values=(0.0, 1.0),
        preprocessing_defences=[FeatureSqueezing(clip_values=(0.0, 1.0))], device_type="cpu",
    )  # fmt: skip
    with pytest.raises(PipelineError, match="PyTorch-native"):
        atk.make_pgd(clf, 0.03, 3, 0.25, True, 8)


def test_pgd_matches_art_generate() -> None:
    """The batch-by-batch driver gives exactly what ART's public `generate` gives."""
    model = _conv_model()
    x, y = _images(20)
    clf = _clf(model)
    ours = atk.pgd(clf, x, y, 0.05, 4, 0.3, True, 8, seed=11)
    np.random.seed(11)  # noqa: NPY002 - ART's random start uses the global state
    theirs = atk.make_pgd(clf, 0.05, 4, 0.3, True, 8).generate(x, y)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("eps", [1 / 255, 0.002, 0.008, 0.016, 0.03, 0.1, 0.3])
def test_linf_projection_equals_arts(eps: float) -> None:
    """The float32 projection gives ART's float64 ones' values (PGD: torch, APGD: NumPy), at and
    around +-eps."""
    bound = np.float32(eps)
    edges = [np.nextafter(bound, np.float32(0)), bound, np.nextafter(bound, np.float32(1))]
    special = np.array([0.0, -0.0, *edges, *(-e for e in edges)], dtype=np.float32)
    noise = np.random.default_rng(0).uniform(-3 * eps, 3 * eps, 4000).astype(np.float32)
    values = torch.from_numpy(np.concatenate([special, noise])).reshape(-1, 1, 2, 2)
    ours = atk.linf_projection(values, eps, np.inf)
    theirs = ProjectedGradientDescentPyTorch._projection(values, eps, np.inf)  # noqa: SLF001
    assert ours.dtype == theirs.dtype == torch.float32
    assert torch.equal(ours, theirs)  # equal values; a zero may differ in sign only
    ours_np, theirs_np = (
        atk.linf_projection(values.numpy(), eps, "inf"),
        projection(values.numpy(), eps, "inf"),
    )
    assert ours_np.dtype == theirs_np.dtype == np.float32
    np.testing.assert_array_equal(ours_np, theirs_np)
    with pytest.raises(ValueError, match="L-inf"):
        atk.linf_projection(values, eps, 2)


def test_pgd_checkpoints_are_the_shorter_attacks() -> None:
    """The iterate after k of 2k steps is the k-step PGD from the same start, bit for bit."""
    x, y = _images(20)
    clf = _clf(_conv_model())
    short, long = atk.pgd_checkpoints(clf, x, y, 0.05, (3, 6), 0.25, True, 8, seed=5)
    np.testing.assert_array_equal(short, atk.pgd(clf, x, y, 0.05, 3, 0.25, True, 8, seed=5))
    np.testing.assert_array_equal(long, atk.pgd(clf, x, y, 0.05, 6, 0.25, True, 8, seed=5))
    assert not np.array_equal(short, long)
    with pytest.raises(ValueError, match="checkpoints"):
        atk.pgd_checkpoints(clf, x, y, 0.05, (0, 3), 0.25, True, 8)


# --------------------------------------------------------------------------- bounds and eps = 0


@pytest.mark.parametrize("method", attack_specs.METHODS)
@pytest.mark.parametrize("eps", [0.001, 0.03, 0.2])
def test_eps_bound_and_range(method: str, eps: float) -> None:
    x, y = _images(12)
    adv = attack_runs.attack(
        _clf(_conv_model()), method, x, y, eps, section("attack", pgd_steps=3), seed=0
    )
    assert adv.dtype == np.float32 and adv.shape == x.shape
    assert np.abs(adv - x).max() <= eps + 1e-6
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert np.abs(adv - x).max() > eps / 2  # and it did perturb
    check_perturbation(x, adv, eps, method)


@pytest.mark.parametrize("method", attack_specs.METHODS)
def test_eps_zero_returns_unchanged_copy(method: str) -> None:
    x, y = _images(6)
    adv = attack_runs.attack(_clf(_conv_model()), method, x, y, 0.0, section("attack"), seed=0)
    np.testing.assert_array_equal(adv, x)
    assert adv is not x and not np.shares_memory(adv, x)


def test_art_behaviour_at_eps_zero() -> None:
    """Why eps = 0 is short-circuited: ART's PGD rejects it, ART's FGSM wastes a gradient pass."""
    clf = _clf(_conv_model())
    with pytest.raises(ValueError, match="eps_step"):
        ProjectedGradientDescent(clf, eps=0.0, eps_step=0.0)
    x, y = _images(4)
    np.testing.assert_array_equal(FastGradientMethod(clf, eps=0.0).generate(x, y), x)


def test_attack_leaves_model_trainable_flags_and_global_rng() -> None:
    model = _conv_model()
    x, y = _images(6)
    np.random.seed(5)  # noqa: NPY002
    expected = np.random.random()  # noqa: NPY002
    np.random.seed(5)  # noqa: NPY002
    attack_runs.attack(_clf(model), "pgd", x, y, 0.03, section("attack", pgd_steps=2), seed=1)
    assert np.random.random() == expected  # noqa: NPY002 - the seeded call restored the state
    assert all(p.requires_grad for p in model.parameters())


def test_seeded_restores_torch_on_the_cpu_and_on_every_cuda_device_in_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with atk.seeded(1):
        torch.rand(7)
    assert torch.equal(torch.rand(3), expected)

    forked = []
    real = torch.random.fork_rng

    def spy(devices: list[int], device_type: str) -> object:
        forked.append((list(devices), device_type))
        return real(devices=[], device_type=device_type)  # this machine has no CUDA to fork

    monkeypatch.setattr(torch.random, "fork_rng", spy)
    with atk.seeded(1):
        pass
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with atk.seeded(1):
        pass
    assert forked == [([], "cuda"), ([0, 1], "cuda")]  # CUDA's generators once CUDA is in use


def test_unknown_method_and_bad_inputs() -> None:
    clf = _clf(_conv_model())
    x, y = _images(4)
    with pytest.raises(PipelineError, match="unknown attack method 'cw'"):
        attack_runs.attack(clf, "cw", x, y, 0.03, section("attack"))
    with pytest.raises(ValueError, match="float32"):
        atk.fgsm(clf, x.astype(np.float64), y, 0.03, 8)
    with pytest.raises(ValueError, match="class indices"):
        atk.pgd(clf, x, y[:2], 0.03, 2, 0.25, True, 8)


# --------------------------------------------------------------------------- determinism


def test_pgd_is_deterministic_for_a_seed() -> None:
    x, y = _images(10)
    params = section("attack", pgd_steps=2)
    runs = [
        attack_runs.attack(_clf(_conv_model()), "pgd", x, y, 0.05, params, seed=3) for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
    other = attack_runs.attack(_clf(_conv_model()), "pgd", x, y, 0.05, params, seed=4)
    assert not np.array_equal(runs[0], other)  # the random start depends on the seed


def test_cell_seed_depends_on_method_and_eps_only() -> None:
    seeds = {
        attack_runs.cell_seed(0, m, e) for m in attack_specs.METHODS for e in (0.01, 0.02, 0.03)
    }
    assert len(seeds) == 6
    assert attack_runs.cell_seed(0, "pgd", 0.03) == attack_runs.cell_seed(0, "pgd", 0.03)
    assert attack_runs.cell_seed(1, "pgd", 0.03) != attack_runs.cell_seed(0, "pgd", 0.03)


# --------------------------------------------------------------------------- strength


def test_one_step_pgd_without_random_start_is_fgsm() -> None:
    x, y = _images(10)
    clf = _clf(_conv_model())
    np.testing.assert_array_equal(
        atk.pgd(clf, x, y, 0.03, 1, 1.0, False, 4), atk.fgsm(clf, x, y, 0.03, 4)
    )


def test_pgd_never_worse_than_fgsm_on_linear_model() -> None:
    """For a linear binary model FGSM is the optimal L-inf attack, so PGD with enough travel
    (steps * fraction >= 2, from any random start) must reach it: equal accuracy, not higher."""
    model = _linear_model()
    x, y = _images(64)
    clf = _clf(model)
    assert _accuracy(model, x, y) > 0.9
    for eps in (0.02, 0.05, 0.1):
        fgsm_acc = _accuracy(model, atk.fgsm(clf, x, y, eps, 16), y)
        pgd_acc = _accuracy(model, atk.pgd(clf, x, y, eps, 10, 0.25, True, 16, seed=0), y)
        assert pgd_acc <= fgsm_acc


def test_accuracy_table_one_row_per_cell_and_monotone_on_linear_model() -> None:
    model = _linear_model()
    x, y = _images(64)
    clf = _clf(model)
    eps_values = (0.0, 0.01, 0.02, 0.05, 0.1)
    images = attack_runs.attack_grid(
        clf, attack_specs.METHODS, eps_values, x, y, section("attack", pgd_steps=8), 0
    )
    assert {m: a.shape for m, a in images.items()} == {
        m: (5, *x.shape) for m in attack_specs.METHODS
    }
    pred = predict_logits(model, torch.from_numpy(x), 64, "cpu").argmax(1).numpy()
    cells = [
        am.evaluate_cell(m, e, x, images[m][i], y, pred, _predict(model, images[m][i]))
        for m in attack_specs.METHODS
        for i, e in enumerate(eps_values)
    ]
    table = pd.DataFrame([vars(c) for c in cells])
    assert len(table) == len(attack_specs.METHODS) * len(eps_values)
    assert not table.duplicated(["method", "eps"]).any()
    clean = float((pred == y).mean())
    for _, rows in table.groupby("method"):
        assert rows.sort_values("eps").accuracy.is_monotonic_decreasing
    assert table.accuracy.min() < clean - 0.3  # the attack really bites at large eps
    checks = am.sanity_checks(cells, len(y), tolerance=0)
    assert checks == {
        "fgsm.monotone": True, "fgsm.uses_budget": True,
        "pgd.monotone": True, "pgd.uses_budget": True, "pgd_le_fgsm": True,
    }  # fmt: skip


def _predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return predict_logits(model, torch.from_numpy(x), 64, "cpu").argmax(1).numpy()


def test_sanity_checks_flag_violations() -> None:
    def cell(m: str, e: float, acc: float, linf: float | None = None) -> am.CellResult:
        return am.CellResult(m, e, acc, 0.0, 0.0, e if linf is None else linf)

    cells = [cell("fgsm", 0.0, 0.9), cell("fgsm", 0.1, 0.5), cell("fgsm", 0.2, 0.7)]
    cells += [cell("pgd", 0.0, 0.8), cell("pgd", 0.1, 0.7), cell("pgd", 0.2, 0.1, linf=0.09)]
    checks = am.sanity_checks(cells, n=10, tolerance=1)
    assert checks == {
        "fgsm.monotone": False, "fgsm.uses_budget": True,
        "pgd.monotone": True, "pgd.uses_budget": False, "pgd_le_fgsm": False,
    }  # fmt: skip
    # a rise of one image in ten is within the tolerance
    assert am.sanity_checks([cell("fgsm", 0.0, 0.5), cell("fgsm", 0.1, 0.6)], 10)["fgsm.monotone"]


def test_an_attack_that_returns_its_input_is_flagged() -> None:
    """The broken attack of a reviewer's nightmare: every cell at clean accuracy, no perturbation.
    Monotone and PGD <= FGSM hold for it; only the budget check can see it."""
    model = _linear_model()
    x, y = _images(32)
    pred = _predict(model, x)
    cells = [
        am.evaluate_cell(m, e, x, x.copy(), y, pred, pred)
        for m in ("fgsm", "pgd")
        for e in (0.0, 0.01, 0.03)
    ]
    checks = am.sanity_checks(cells, len(y))
    assert checks["fgsm.monotone"] and checks["pgd.monotone"] and checks["pgd_le_fgsm"]
    assert not checks["fgsm.uses_budget"] and not checks["pgd.uses_budget"]


def test_evaluate_cell_success_rate_counts_originally_correct_only() -> None:
    y = np.array([0, 1, 0, 1])
    clean_pred = np.array([0, 1, 1, 1])  # image 2 was wrong already
    adv_pred = np.array([1, 1, 0, 0])  # 2 of 3 correct flipped; image 2 "fixed" by the attack
    x = np.zeros((4, 1, 2, 2), np.float32)
    adv = x + np.float32(0.1)
    c = am.evaluate_cell("fgsm", 0.1, x, adv, y, clean_pred, adv_pred)
    assert c.accuracy == pytest.approx(0.5)
    assert c.success_rate == pytest.approx(2 / 3)
    assert c.l2_mean == pytest.approx(0.2, rel=1e-5) and c.linf_max == pytest.approx(0.1)


# --------------------------------------------------------------------------- storage


def test_reload_gives_same_predictions(tmp_path: Path) -> None:
    model = _conv_model()
    x, y = _images(16)
    eps_values = (0.0, 0.03)
    images = attack_runs.attack_grid(
        _clf(model), attack_specs.METHODS, eps_values, x, y, section("attack"), 0
    )
    save_adversarial(tmp_path, eps_values, images, x)
    sets = load_adversarial(tmp_path, x)
    for m in attack_specs.METHODS:
        for i, e in enumerate(eps_values):
            np.testing.assert_array_equal(sets.get(m, e), images[m][i])
            np.testing.assert_array_equal(
                _predict(model, sets.get(m, e)), _predict(model, images[m][i])
            )


def test_check_perturbation_rejects_bad_sets(tmp_path: Path) -> None:
    x, _ = _images(4)
    too_far = np.clip(x + 0.05, 0, 1).astype(np.float32)
    with pytest.raises(PipelineError, match="exceeds eps"):
        check_perturbation(x, too_far, 0.03, "test")
    out_of_range = x.copy()
    out_of_range[0, 0, 0, 0] = 1.01
    with pytest.raises(PipelineError, match=r"outside \[0, 1\]"):
        check_perturbation(x, out_of_range, 0.03, "test")
    with pytest.raises(PipelineError, match="exceeds eps"):
        save_adversarial(tmp_path, (0.03,), {"fgsm": too_far[None]}, x)
    assert not list(tmp_path.iterdir())  # nothing written


# --------------------------------------------------------------------------- stage


def _tiny_project(tmp_path: Path, **attack: object) -> dict[str, Path]:
    rng = np.random.default_rng(0)

    def split(n: int) -> Split:
        x, y = _images(n, seed=int(rng.integers(100)))
        return Split((x * 255).round().astype(np.uint8), y, np.array([f"img{i}" for i in range(n)]))

    save_splits(tmp_path / "prepare", Splits(split(8), split(0), split(12), ("non-COVID", "COVID")))
    save_model(_conv_model(), tmp_path / "train_cnn" / "model.pt")
    cfg = {
        "seed": 0, "device": "cpu", "threads": 1,
        "attack": {"eps": 0.03, "eps_grid": [0.0, 0.01, 0.03, 0.05], "pgd_steps": 2, "batch_size": 5,
                   **attack},
        "robustness": {"eps": 0.03, "eps_grid": [0.03]},
    }  # fmt: skip
    write_params(tmp_path / "params.yaml", cfg)
    return {
        "params": tmp_path / "params.yaml", "data": tmp_path / "prepare",
        "classifier": tmp_path / "train_cnn", "out": tmp_path / "attack",
        "metrics": tmp_path / "metrics" / "attack.json", "plots": tmp_path / "plots" / "attack",
    }  # fmt: skip


def _argv(paths: dict[str, Path]) -> list[str]:
    return [a for k, v in paths.items() for a in (f"--{k}", str(v))]


def test_stage_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _tiny_project(tmp_path)
    assert attack_stage.main(_argv(paths)) == 0
    result = json.loads(paths["metrics"].read_text())
    cells = [f"{m}.eps_{e:g}.{k}" for m in ("fgsm", "pgd") for e in (0.01, 0.03, 0.05)
             for k in ("accuracy", "success_rate")]  # fmt: skip
    assert sorted(k for k in result if ".eps_" in k) == sorted(cells)
    assert result["check.fgsm.uses_budget"] is True and result["check.pgd.uses_budget"] is True
    table = pd.read_csv(paths["plots"] / "accuracy.csv")
    assert list(table.columns) == [
        "method",
        "eps",
        "accuracy",
        "success_rate",
        "l2_mean",
        "linf_max",
    ]
    assert len(table) == 2 * 4  # methods x grid
    assert table.linf_max.max() <= 0.05 + 1e-6 and (table.linf_max <= table.eps + 1e-6).all()
    wide = pd.read_csv(paths["plots"] / "accuracy_vs_eps.csv")
    assert list(wide.columns) == ["eps", "fgsm", "pgd"] and len(wide) == 4
    x = np.load(paths["data"] / "splits.npz")["x_test"].astype(np.float32) / 255
    sets = load_adversarial(paths["out"], x)
    assert sets.eps == (0.0, 0.01, 0.03, 0.05) and sets.methods == ("fgsm", "pgd")
    first = paths["out"].joinpath("adversarial.npz").read_bytes()
    assert attack_stage.main(_argv(paths)) == 0  # a second run reproduces byte for byte
    assert paths["out"].joinpath("adversarial.npz").read_bytes() == first
    assert "image-steps/s" in capsys.readouterr().out


def test_stage_missing_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _tiny_project(tmp_path)
    (paths["classifier"] / "model.pt").unlink()
    assert attack_stage.main(_argv(paths)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.pt" in err
    assert not paths["metrics"].exists() and not paths["out"].exists()


def test_the_attack_registry_matches_params_and_refuses_what_it_cannot_do() -> None:
    """attack.methods' names are the oblivious specs; doubling needs steps; apgd its params."""
    raw = read_yaml((ROOT / "params.yaml").read_text())
    raw["attack"]["methods"] = ["fgsm", "apgd"]  # registered, but not crafted by the attack stage
    with pytest.raises(ParamsError, match=r"attack.methods must be one of \['fgsm', 'pgd'\]"):
        parse_params(raw)
    assert attack_specs.METHODS == ("fgsm", "pgd")
    assert len(set(attack_specs.WHITE_BOX)) == len(attack_specs.ATTACKS)
    assert [attack_specs.label(m) for m in ("apgd", "plugin")] == ["APGD-CE", "plugin"]
    with pytest.raises(PipelineError, match="unknown attack method 'cw'"):
        attack_specs.attack_spec("cw")
    streams = [s.stream for s in attack_specs.ATTACKS if s.stream is not None]
    assert len(set(streams)) == len(streams)  # no two attacks share a random stream
    clf = _clf(_conv_model())
    x, y = _images(4)
    with pytest.raises(PipelineError, match="fgsm has no steps to double"):
        attack_runs.run_attacks(clf, "fgsm", x, y, 0.03, section("attack"), double=True)
    with pytest.raises(PipelineError, match="robustness params"):
        attack_runs.run_attacks(clf, "apgd", x, y, 0.03, section("attack"))
    short, long = attack_runs.run_attacks(
        clf, "pgd", x, y, 0.03, section("attack", pgd_steps=2), double=True, seed=3
    )
    assert not np.array_equal(short, long)
    (again,) = attack_runs.run_attacks(
        clf, "pgd", x, y, 0.03, section("attack", pgd_steps=2), seed=3
    )
    np.testing.assert_array_equal(again, short)  # the first checkpoint is the plain attack
