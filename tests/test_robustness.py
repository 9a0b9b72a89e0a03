"""The robustness table and the three stages beyond the paper, end to end on tiny data."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import section, write_params
from torch import nn

from advdenoise import attacks
from advdenoise.attacks import runs as attack_runs
from advdenoise.attacks import specs as attack_specs
from advdenoise.attacks.sets import AdversarialSets, check_perturbation, save_adversarial
from advdenoise.core.errors import PipelineError
from advdenoise.core.params import read_yaml
from advdenoise.data import synthetic
from advdenoise.data.splits import Split, Splits, evaluation_subset, save_splits
from advdenoise.defences.registry import defended_classifier
from advdenoise.defences.specs import AUTOENCODER_DEFENCES, DEFENCES
from advdenoise.evaluation.detector import evaluate_detector
from advdenoise.evaluation.robustness.evaluation import (
    METHODS,
    THREATS,
    VIEWS,
    DefenceResult,
    evaluate_defence,
    evaluate_defences,
)
from advdenoise.evaluation.robustness.summary import (
    checks,
    masking_test,
    restart_breaks,
    robustness_curves,
    robustness_metrics,
    robustness_table,
    wide_curves,
)
from advdenoise.evaluation.verdicts import defences_in, verdicts
from advdenoise.figures import robustness as figs
from advdenoise.models.autoencoder import Autoencoder
from advdenoise.models.classifier import Classifier
from advdenoise.models.files import MODEL_FILE, load_autoencoder, save_model
from advdenoise.training.adversarial import RowCache

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


def _trained_ae(x: np.ndarray) -> Autoencoder:
    """A small autoencoder that reconstructs these textures reasonably (60 full-batch Adam steps)."""
    torch.manual_seed(0)
    ae = Autoencoder(SIZE, [4, 4, 4], 2)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-2)
    xt = torch.from_numpy(x).float() / 255
    for _ in range(60):
        loss = (ae(xt) - xt).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ae.eval()


ATTACK = section("attack", eps=0.05, eps_grid=(0.0, 0.02, 0.05), pgd_steps=3, batch_size=32)


def _oblivious(cnn: nn.Module, x: np.ndarray, y: np.ndarray) -> AdversarialSets:
    clf = attacks.make_art_classifier(cnn, (1, SIZE, SIZE), 2, "cpu")
    images = {
        m: np.stack([attack_runs.run_attacks(clf, m, x, y, e, ATTACK)[0] for e in ATTACK.eps_grid])
        for m in attack_specs.METHODS
    }
    return AdversarialSets(ATTACK.eps_grid, images)


FAST = dict(apgd_steps=3, square_queries=10, detector_steps=3, detector_eps=0.05, l2_steps=3)
ROBUSTNESS = section("robustness")


def test_table_has_every_cell_and_checks_are_reported() -> None:
    xu, y = _images(24, seed=1)
    cnn = _trained_cnn(*_images(48, seed=0))
    x = xu.astype(np.float32) / 255
    oblivious = _oblivious(cnn, x, y)
    torch.manual_seed(0)
    aes = {n: Autoencoder(SIZE, [4, 4, 4], 2) for n in AUTOENCODER_DEFENCES}
    params = section("robustness", eps=0.05, eps_grid=(0.02, 0.05), **FAST)
    results = evaluate_defences(
        params, aes, cnn, x, y, oblivious, ATTACK, seed=0, device="cpu", nb_classes=2
    )
    table = robustness_table(results)
    assert list(table.defence) == list(DEFENCES)
    assert not table.isna().any().any()
    metrics = robustness_metrics(results, params)
    for row in table.itertuples():  # the table is the metrics at the headline eps
        for threat in THREATS:
            for method in METHODS[threat]:
                key = f"{row.defence}.{threat}.{method}.accuracy"
                assert getattr(row, f"{threat}_{method}") == metrics[key]
        assert row.robust_accuracy == metrics[f"{row.defence}.robust_accuracy"]
    for d in DEFENCES:
        for e in params.eps_grid:
            for threat in THREATS:
                for method in METHODS[threat]:
                    assert f"{d}.{threat}.{method}.accuracy" in metrics
                    assert f"{d}.eps_{e:g}.{threat}.{method}.accuracy" in metrics
            assert f"{d}.eps_{e:g}.worst.accuracy" in metrics
        for key in ("clean_accuracy", "random_noise.accuracy", "adaptive.pgd_2x_steps.accuracy",
                    "adaptive.apgd.accuracy", "adaptive.apgd_more_restarts.breaks",
                    "square.accuracy", "square.masking_p_value", "worst.accuracy",
                    "robust_accuracy"):  # fmt: skip
            assert f"{d}.{key}" in metrics
        for check in ("gradient_not_masked", "apgd_restarts_converged"):
            assert isinstance(metrics[f"checks.{d}.{check}"], bool)
    assert metrics["square_images"] == len(y)  # square_images 0: every evaluated image
    # none: both threat models are the same white-box attack on the bare CNN
    assert metrics["none.adaptive.pgd.accuracy"] == metrics["none.oblivious.pgd.accuracy"]
    assert metrics["none.clean_accuracy"] > 0.9 and metrics["none.worst.accuracy"] <= 0.5
    curves = robustness_curves(results)
    cells = 2 + 3 + len(VIEWS)  # oblivious methods, adaptive methods, worst cases
    assert len(curves) == len(DEFENCES) * cells * (len(params.eps_grid) + 1)
    wide = wide_curves(curves, "worst")
    assert list(wide.columns) == ["eps", *DEFENCES] and list(wide.eps) == [0.0, 0.02, 0.05]
    assert (wide.iloc[0, 1:] >= wide.iloc[-1, 1:]).all()  # clean >= worst case at the largest eps
    found = verdicts(metrics)
    assert [v.defence for v in found] == list(DEFENCES) and min(len(v.text) for v in found) > 20
    bars = figs.bars(table.assign(adaptive_plugin=0.5))  # a plug-in attack's column: its bar
    assert [c for c, _ in bars if c.startswith("adaptive_")] == [
        *(f"adaptive_{m}" for m in METHODS["adaptive"]), "adaptive_plugin"]  # fmt: skip
    assert ("worst_oblivious", "oblivious (worst of FGSM, PGD)") in bars
    assert ("adaptive_apgd", "adaptive APGD-CE") in bars and set(dict(bars)) <= set(table) | {
        "adaptive_plugin"}  # fmt: skip


def test_apgd_and_square_stay_in_the_ball_and_reproduce() -> None:
    cnn = _trained_cnn(*_images(48, seed=0))
    xu, y = _images(16, seed=1)
    x = xu.astype(np.float32) / 255
    clf = attacks.make_art_classifier(cnn, (1, SIZE, SIZE), 2, "cpu")
    for run in (
        lambda s: attacks.apgd(clf, x, y, 0.05, 5, 1, 8, seed=s),
        lambda s: attacks.square(clf, x, y, 0.05, 20, 0.8, 8, seed=s),
    ):
        adv = run(1)
        assert np.abs(adv - x).max() <= 0.05 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert np.array_equal(adv, run(1))
        assert (cnn(torch.from_numpy(adv)).argmax(1).numpy() == y).mean() < (
            cnn(torch.from_numpy(x)).argmax(1).numpy() == y
        ).mean()
    assert np.array_equal(attacks.apgd(clf, x, y, 0.0, 5, 1, 8), x)


def test_the_re_expressed_loops_refuse_an_estimator_that_preprocesses() -> None:
    """They call the model themselves, so ART's preprocessing would be skipped: refused."""
    from art.estimators.classification import PyTorchClassifier

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    clf = PyTorchClassifier(model, nn.CrossEntropyLoss(), (1, 4, 4), 2, clip_values=(0.0, 1.0),
                            preprocessing=(0.5, 0.25))  # fmt: skip
    x, y = np.full((3, 1, 4, 4), 0.5, dtype=np.float32), np.array([0, 1, 0])
    for run in (
        lambda: attacks.apgd(clf, x, y, 0.05, 2, 1, 8),
        lambda: attacks.square(clf, x, y, 0.05, 2, 0.8, 8),
    ):
        with pytest.raises(ValueError, match="pre/postprocessing"):
            run()


def _edge_images(seed: int, channels: int, size: int) -> np.ndarray:
    """21 images (batches of 8, 8 and 5) whose pixels sit at and near 0, 1/2 and 1: both clamps."""
    rng = np.random.default_rng(seed)
    x = rng.choice([0.0, 0.01, 0.5, 0.99, 1.0], size=(21, channels, size, size))
    return (x + rng.uniform(-0.02, 0.02, x.shape)).clip(0, 1).astype(np.float32)


def _arts_square(
    clf, x: np.ndarray, y: np.ndarray, eps: float, queries: int, seed: int
) -> np.ndarray:
    """ART's own SquareAttack.generate (p_init 0.8, one restart, batch 8): the reference run."""
    from art.attacks.evasion import SquareAttack

    art = SquareAttack(clf, norm=np.inf, eps=eps, max_iter=queries, p_init=0.8, nb_restarts=1,
                       batch_size=8, verbose=False)  # fmt: skip
    with attacks.seeded(seed), torch.no_grad():
        return art.generate(x=x, y=np.eye(clf.nb_classes, dtype=np.float32)[y])


@pytest.mark.parametrize(("channels", "eps", "seed"), [(1, 0.05, 3), (3, 0.3, 4), (3, 0.02, 5)])
def test_square_equals_arts_own_run(channels: int, eps: float, seed: int) -> None:
    """The re-expressed loop (`_LinfSquare`) against ART's SquareAttack on the same classifier and
    seed: the same images bit for bit, while the model sees each candidate once (ART: the current
    iterates twice more). Pixels at 0, 1 and within eps of them exercise both clamps; 3 classes
    make the runner-up logit of the loss a choice; 60 queries run through the square schedule."""
    size = 16
    x = _edge_images(seed, channels, size)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 3)).eval()
    rows_seen: list[int] = []
    model[1].register_forward_hook(lambda _m, inputs, _out: rows_seen.append(len(inputs[0])))
    clf = attacks.make_art_classifier(model, (channels, size, size), 3, "cpu")
    y = clf.predict(x).argmax(1)  # every image starts correct
    rows_seen.clear()
    ours = attacks.square(clf, x, y, eps, 60, 0.8, 8, seed=seed)
    ours_rows = sum(rows_seen)
    rows_seen.clear()
    plain = _arts_square(clf, x, y, eps, 60, seed)
    assert np.array_equal(ours, plain)
    assert (ours != x).any((1, 2, 3)).sum() > 0 and np.abs(ours - x).max() <= eps + 1e-6
    assert ours_rows < sum(rows_seen) / 2


def test_square_on_a_cnn_equals_arts_own_run() -> None:
    """The same with a convolutional net, whose scores the loop keeps from other batches than the
    ones ART's run would score them in (eval mode: a row's scores do not depend on its batch)."""
    cnn = _trained_cnn(*_images(48, seed=0))
    xu, y = _images(16, seed=1)
    x = xu.astype(np.float32) / 255
    clf = attacks.make_art_classifier(cnn, (1, SIZE, SIZE), 2, "cpu")
    ours = attacks.square(clf, x, y, 0.05, 20, 0.8, 8, seed=3)
    plain = _arts_square(clf, x, y, 0.05, 20, 3)
    assert np.array_equal(ours, plain) and not np.array_equal(ours, x)


def _arts_apgd(
    clf, x: np.ndarray, y: np.ndarray, eps: float, steps: int, restarts: int, seed: int
) -> np.ndarray:
    """ART's own AutoProjectedGradientDescent.generate (CE loss, batch 8): the reference run."""
    from art.attacks.evasion import AutoProjectedGradientDescent

    art = AutoProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=steps,
                                       targeted=False, nb_random_init=restarts, batch_size=8,
                                       loss_type="cross_entropy", verbose=False)  # fmt: skip
    with attacks.seeded(seed), attacks.input_gradients_only(clf.model):
        return art.generate(x=x, y=y)


def test_apgd_with_one_forward_per_step_equals_arts_own_run() -> None:
    """The re-expressed loop (`_DeviceAPGD`) against ART's APGD on a CNN, same seed: the same
    images bit for bit, with one model pass per step and batch (ART: about two)."""
    cnn = _trained_cnn(*_images(48, seed=0))
    xu, y = _images(13, seed=1)  # batches of 8 and 5
    x = xu.astype(np.float32) / 255
    calls: list[int] = []
    cnn.register_forward_hook(lambda _m, inputs, _out: calls.append(len(inputs[0])))
    clf = attacks.make_art_classifier(cnn, (1, SIZE, SIZE), 2, "cpu")
    steps, batches = 10, 2
    ours = attacks.apgd(clf, x, y, 0.05, steps, 1, 8, seed=3)
    ours_calls, calls[:] = len(calls), []
    plain = _arts_apgd(clf, x, y, 0.05, steps, 1, seed=3)
    assert np.array_equal(ours, plain) and not np.array_equal(ours, x)
    # ART's probability check and first prediction, then per batch the start and each step
    assert ours_calls == 2 + batches * (1 + steps) < len(calls)


@pytest.mark.parametrize(
    ("channels", "eps", "steps", "restarts", "seed"),
    [(1, 0.03, 1, 1, 3), (3, 0.01, 30, 2, 4), (3, 0.2, 12, 3, 5), (1, 0.004, 25, 1, 6)],
)
def test_apgd_equals_arts_own_run(
    channels: int, eps: float, steps: int, restarts: int, seed: int
) -> None:
    """Against ART on a small 3-class net: pixels at and near 0 and 1 (both clamps), step-size
    checkpoints that move images back to their best point (30 steps at a small eps), restarts on
    the images still correct, one step, and a short last batch."""
    size = 8
    x = _edge_images(seed, channels, size)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(channels * size * size, 32), nn.Tanh(), nn.Linear(32, 3)
    ).eval()
    clf = attacks.make_art_classifier(model, (channels, size, size), 3, "cpu")
    y = clf.predict(x).argmax(1)
    ours = attacks.apgd(clf, x, y, eps, steps, restarts, 8, seed=seed)
    plain = _arts_apgd(clf, x, y, eps, steps, restarts, seed)
    assert np.array_equal(ours, plain)
    assert (ours != x).any((1, 2, 3)).all() and np.abs(ours - x).max() <= eps + 1e-6


def test_apgd_stops_where_every_loss_is_zero() -> None:
    """ART ends a batch's loop once every loss is exactly 0 (logits far beyond float32's reach)."""
    x = np.random.default_rng(0).uniform(0.6, 0.9, (5, 1, 4, 4)).astype(np.float32)
    calls: list[int] = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[-100.0] * 16, [100.0] * 16]))
        model[1].bias.zero_()
    model[1].register_forward_hook(lambda _m, inputs, _out: calls.append(len(inputs[0])))
    clf = attacks.make_art_classifier(model, (1, 4, 4), 2, "cpu")
    y = np.ones(5, dtype=np.int64)
    ours = attacks.apgd(clf, x, y, 0.05, 20, 1, 8, seed=1)
    assert calls == [1, 5, 5, 5, 5]  # probability check, prediction, start, x_1, x_2: stop
    assert np.array_equal(ours, _arts_apgd(clf, x, y, 0.05, 20, 1, seed=1))


def test_row_cache_runs_each_new_row_once() -> None:
    calls: list[int] = []
    inner = nn.Conv2d(1, 2, 3)

    class Counted(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(len(x))
            return inner(x)

    cache = RowCache(Counted())
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        first = cache(x)
        again = cache(torch.cat([x[3:], x[:1], torch.rand(1, 1, 8, 8)]))
        torch.testing.assert_close(first, inner(x), rtol=0, atol=0)
    assert calls == [5, 1]  # the second call ran only the one row it had not seen
    torch.testing.assert_close(again[:3], first[[3, 4, 0]], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="without gradients"):
        cache(x)


def test_detector_aware_attack_evades_better_than_the_oblivious_one() -> None:
    xtr, ytr = _images(64, seed=0)
    cnn = _trained_cnn(xtr, ytr)
    ae = _trained_ae(xtr)
    xu, y = _images(24, seed=1)
    x = xu.astype(np.float32) / 255
    oblivious = _oblivious(cnn, x, y)
    params = section(
        "robustness",
        eps=0.05,
        eps_grid=(0.05,),
        detector_eps=0.05,
        detector_steps=10,
        detector_lambda=10.0,
    )
    scores = evaluate_detector(ae, cnn, x, y, oblivious, ATTACK, params, seed=0, device="cpu")
    # knowing the detector, the attack fools the CNN and gets past the detector on every image,
    # where the oblivious PGD (3 steps) fools the CNN on 9 of 24 (on this machine)
    adaptive = scores["detector.adaptive.attack_success"], scores["detector.adaptive.evasion_rate"]
    assert adaptive == (1, 1) and scores["detector.oblivious.evasion_rate"] <= 0.5
    assert scores["detector.adaptive.tpr_at_5fpr"] < scores["detector.oblivious.tpr_at_5fpr"]


def test_evaluation_subset_is_stratified_seeded_and_sorted() -> None:
    y = np.array([0] * 300 + [1] * 100)
    idx = evaluation_subset(y, 100, 3, 7)
    assert len(idx) == 100 and list(idx) == sorted(set(idx))
    assert np.bincount(y[idx]).tolist() == [75, 25]  # the split's class shares
    assert np.array_equal(idx, evaluation_subset(y, 100, 3, 7))
    assert not np.array_equal(idx, evaluation_subset(y, 100, 4, 7))
    assert np.array_equal(evaluation_subset(y, 0, 3, 7), np.arange(400))
    assert np.array_equal(evaluation_subset(y, 1000, 3, 7), np.arange(400))


def _result(**accuracies: dict[float, float]) -> DefenceResult:
    """A DefenceResult of 100 images whose per-cell accuracies are the given fractions; the extra
    attacks at the headline (PGD-2x: 30%, APGD's restarts, Square on every image) break nothing more."""
    n = 100

    def mask(acc: float) -> np.ndarray:
        return np.arange(n) < round(acc * n)

    r = DefenceResult("x", 0.03, mask(0.9), pgd_2x_steps=mask(0.3), random_noise=0.85)
    r.apgd_more_restarts, r.square_subset, r.square = mask(1.0), mask(1.0), mask(0.9)
    # 100 pixels: the L-inf balls of 0.01 and 0.03 lie inside the L2 balls of 0.1 and 0.3
    r.pixels, r.l2_subset = 100, mask(1.0)
    r.l2 = {0.0: mask(0.9), 0.1: mask(0.1), 0.2: mask(0.1), 0.3: mask(0.1)}
    for key, curve in accuracies.items():
        threat, method = key.split("_")
        r.correct[(threat, method)] = {e: mask(a) for e, a in curve.items()}
    return r


def test_the_worst_case_counts_an_image_only_if_it_survives_every_attack() -> None:
    """Per image, not per attack: adaptive PGD and oblivious FGSM each break a different tenth of
    the images, so each alone leaves 90% but together 80%; PGD-2x and APGD's extra restarts enter
    every view but the oblivious one; robust accuracy adds Square's breaks on its images."""
    every = {0.03: 1.0}
    r = _result(**{f"{t}_{m}": every for t in THREATS for m in METHODS[t]})
    r.clean[:] = r.square[:] = True
    r.pgd_2x_steps = np.arange(100) != 99  # one more image falls to twice the PGD steps
    r.apgd_more_restarts[[0, 98]] = False  # 0: PGD broke it already
    r.correct[("adaptive", "pgd")][0.03][:10] = False
    r.correct[("oblivious", "fgsm")][0.03][10:20] = False
    r.square_subset = np.arange(100) % 2 == 0  # Square attacks the even images
    r.square[[5, 30, 97]] = False  # 5 and 97 are off its subset
    assert r.accuracy("adaptive", "pgd", 0.03) == r.accuracy("oblivious", "fgsm", 0.03) == 0.9
    assert r.worst("oblivious", 0.03) == 0.9
    assert r.worst("adaptive", 0.03) == 0.88  # PGD's 10, PGD-2x's image 99, APGD's image 98
    assert r.worst("worst", 0.03) == 0.78
    assert restart_breaks(r) == 1
    # on the 50 even images: PGD's 0-8, FGSM's 10-18 (5 each), 98; Square adds 30
    assert r.gradient_worst_on_square_subset() == 39 / 50 and r.square_accuracy() == 49 / 50
    assert r.robust_accuracy() == 38 / 50
    assert masking_test(r).square_only == 1 and masking_test(r).gradient_only == 11


GOOD = {
    "oblivious_fgsm": {0.01: 0.8, 0.03: 0.6},
    "oblivious_pgd": {0.01: 0.7, 0.03: 0.4},
    "adaptive_fgsm": {0.01: 0.6, 0.03: 0.4},
    "adaptive_pgd": {0.01: 0.5, 0.03: 0.3},
    "adaptive_apgd": {0.01: 0.45, 0.03: 0.3},
}


def _square_breaks_ten_more(r: DefenceResult) -> None:
    r.square[:10] = False  # of the 30 images every gradient attack left
    r.square[30:90] = False  # and every image they broke


BREAKS = {  # check -> a change to the GOOD evaluation that breaks it and nothing else
    "oblivious.pgd_le_fgsm": {"oblivious_pgd": {0.01: 0.7, 0.03: 0.7}},
    "oblivious.fgsm.non_increasing_in_eps": {"oblivious_fgsm": {0.01: 0.75, 0.03: 0.8}},
    "oblivious.pgd.non_increasing_in_eps": {"oblivious_pgd": {0.01: 0.3, 0.03: 0.4}},
    "adaptive.pgd_le_fgsm": {"adaptive_fgsm": {0.01: 0.6, 0.03: 0.25}},
    "adaptive.fgsm.non_increasing_in_eps": {"adaptive_fgsm": {0.01: 0.95, 0.03: 0.4}},
    "adaptive.pgd.non_increasing_in_eps": {"adaptive_pgd": {0.01: 0.25, 0.03: 0.3}},
    "adaptive.apgd.non_increasing_in_eps": {"adaptive_apgd": {0.01: 0.2, 0.03: 0.3}},
    "adaptive_le_oblivious": {"oblivious_pgd": {0.01: 0.7, 0.03: 0.2}},
    "pgd_converged": lambda r: setattr(r, "pgd_2x_steps", np.arange(100) < 10),
    "apgd_restarts_converged": lambda r: r.apgd_more_restarts.__setitem__([0, 1], False),
    "random_noise_floor": lambda r: setattr(r, "random_noise", 0.2),
    "gradient_not_masked": _square_breaks_ten_more,
    # L2 within 0.3 leaves 2 images more than the L-inf attacks at 0.03 (inside it) do
    "l2_le_linf_inside": lambda r: r.l2.__setitem__(0.3, np.arange(100) < 32),
}


def test_every_check_passes_a_sound_evaluation_and_each_tolerates_one_image() -> None:
    good = _result(**GOOD)
    assert set(checks(good, ROBUSTNESS)) == set(BREAKS) and all(checks(good, ROBUSTNESS).values())
    assert good.worst("worst", 0.03) == 0.3  # nested masks: the worst case is the smallest
    within_one_image = _result(**{**GOOD, "adaptive_pgd": {0.01: 0.5, 0.03: 0.41}})
    assert checks(within_one_image, ROBUSTNESS)["adaptive.pgd_le_fgsm"]  # 0.41 vs FGSM 0.40
    one_more = _result(**GOOD)
    one_more.l2[0.3] = np.arange(100) < 31
    assert checks(one_more, ROBUSTNESS)["l2_le_linf_inside"]
    good.apgd_more_restarts[0] = False  # one image: within robustness.restarts_tolerance
    assert ROBUSTNESS.restarts_tolerance == 1 and restart_breaks(good) == 1
    assert checks(good, ROBUSTNESS)["apgd_restarts_converged"]


@pytest.mark.parametrize("check", list(BREAKS))
def test_each_check_fires_on_the_evaluation_built_to_break_it(check: str) -> None:
    change = BREAKS[check]
    if callable(change):
        broken = _result(**GOOD)
        change(broken)
    else:
        broken = _result(**{**GOOD, **change})
    assert {k for k, v in checks(broken, ROBUSTNESS).items() if not v} == {check}


def test_the_masking_check_fires_only_beyond_sampling_noise() -> None:
    """The exact one-sided McNemar test on Square's and the gradient attacks' breaks: 6 images
    only Square breaks against none the other way is p = 1/64, flagged; 3 (p = 1/8) and 6 against
    3 (p = 0.25) are within sampling noise. The accuracies alone cannot tell these apart."""
    for square_only, gradient_only, flagged in ((6, 0, True), (3, 0, False), (6, 3, False)):
        r = _result(**GOOD)
        r.square[:square_only] = False  # of images 0-29, which every gradient attack left
        r.square[30 + gradient_only : 90] = False  # of 30-89, the gradient attacks' breaks
        test = masking_test(r)
        assert (test.square_only, test.gradient_only) == (square_only, gradient_only)
        assert checks(r, ROBUSTNESS)["gradient_not_masked"] is not flagged
    assert masking_test(r).p_value == pytest.approx(0.253906, abs=1e-6)  # P(Bin(9, 1/2) >= 6)


def test_verdicts_follow_one_rule_and_the_report_uses_it() -> None:
    from advdenoise.report import rules

    metrics = {"eps": 0.03, "chance": 0.5, "none.clean_accuracy": 0.9}
    levels = {"none": (0.9, 0.0, 0.0), "good": (0.85, 0.8, 0.8), "partial": (0.85, 0.4, 0.3),
              "oblivious_only": (0.8, 0.7, 0.02), "useless": (0.8, 0.05, 0.05),
              "constant": (0.55, 0.52, 0.52)}  # fmt: skip
    for d, (clean, obl, worst) in levels.items():
        metrics |= {f"{d}.clean_accuracy": clean, f"{d}.oblivious.worst.accuracy": obl,
                    f"{d}.adaptive.worst.accuracy": worst, f"{d}.robust_accuracy": worst}  # fmt: skip
    metrics["checks.partial.pgd_converged"] = False
    found = {v.defence: v for v in verdicts(metrics)}
    assert {d: v.label for d, v in found.items()} == {
        "none": "undefended", "good": "defends", "partial": "helps partly",
        "oblivious_only": "does not defend", "useless": "does not defend",
        "constant": "helps partly",  # within MARGIN of clean, but so is answering one class
    }  # fmt: skip
    assert "within 10 points of the majority-class rate" in found["constant"].text
    assert "only against the oblivious" in found["oblivious_only"].text
    assert "below the 50.0%" in found["partial"].text and "pgd_converged" in found["partial"].text
    assert rules.defence_verdicts(metrics) == [v.text for v in found.values()]


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
        "train_cnn": {"paper": {"channels": [4, 8, 8, 8], "dropout": 0.2}},
        "train_ae": {"channels": [4, 4, 4], "latent_channels": 2},
        "attack": {"eps": 0.05, "eps_grid": [0.0, 0.02, 0.05], "pgd_steps": 2, "batch_size": 32},
        "train_ae_adv": {"epochs": 1, "eps": [0.05], "batch_size": 16},
        "train_ae_guided": {"epochs": 1, "eps": [0.02, 0.05], "methods": ["pgd"]},
        "robustness": {"eps": 0.05, "eps_grid": [0.02, 0.05], **FAST},
    }
    write_params(tmp_path / "params.yaml", params)
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
        assert {"test.clean.mse", "test.adversarial.mse", "val.adversarial.mse",
                "test.cnn_accuracy_denoised", "test.cnn_accuracy_adversarial_denoised"} <= set(scores)  # fmt: skip
        assert scores["train.images"] == 64  # 32 clean + one adversarial copy each
        assert len(pd.read_csv(root / "plots" / stage / "history.csv")) == 1
        assert (root / "plots" / stage / "training_curves.png").stat().st_size > 0

    assert _run_robustness(root, "metrics/robustness.json", "plots/robustness") == 0
    scores = json.loads((root / "metrics/robustness.json").read_text())
    assert all(isinstance(v, (bool, int, float)) for k, v in scores.items() if k[:4] != "env.")
    plots = root / "plots/robustness"
    table = pd.read_csv(plots / "robustness.csv")
    assert list(table.defence) == list(section("robustness").defences)
    assert {"clean_accuracy", "oblivious_fgsm", "oblivious_pgd", "adaptive_fgsm", "adaptive_pgd",
            "adaptive_apgd", "worst_worst", "square", "robust_accuracy", "random_noise"} <= set(table.columns)  # fmt: skip
    verdict = pd.read_csv(plots / "verdict.csv")
    assert list(verdict.defence) == list(table.defence)
    assert list(verdict.text) == [v.text for v in verdicts(scores)]
    for name in ("curves.csv", "curves_worst.csv", "robustness.png", "curves.png"):
        assert (plots / name).stat().st_size > 0
    # L2 APGD at certify.radii on its subset: radius 0 is clean there, the curve falls
    radii = section("certify").radii
    l2 = pd.read_csv(plots / "curves_l2.csv")
    assert list(l2.radius) == list(radii) and list(l2.columns[1:]) == list(table.defence)
    assert scores["l2_images"] == min(section("robustness").l2_images, scores["test_images"])
    for d in table.defence:
        curve = [scores[f"{d}.l2.radius_{r:g}.accuracy"] for r in radii]
        assert curve == list(l2[d]) and curve == sorted(curve, reverse=True)
        assert isinstance(scores[f"checks.{d}.l2_le_linf_inside"], bool)
    # same params, same bytes, also with the (defence, eps) cells in two worker processes
    params = read_yaml((root / "params.yaml").read_text())
    params["robustness"]["workers"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert _run_robustness(root, "metrics/again.json", "plots/again") == 0
    assert (root / "metrics/again.json").read_bytes() == (
        root / "metrics/robustness.json"
    ).read_bytes()
    assert (root / "plots/again/robustness.csv").read_bytes() == (
        plots / "robustness.csv"
    ).read_bytes()


def test_robustness_names_missing_attack_eps(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _tiny_project(tmp_path)
    params = read_yaml((root / "params.yaml").read_text())
    params["robustness"].update(eps=0.03, eps_grid=[0.03])  # not in attack.eps_grid
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("train_ae_adv", "train_ae_guided"):  # the AE files must exist; any AE will do
        save_model(Autoencoder(SIZE, [4, 4, 4], 2), root / "data" / stage / MODEL_FILE)
    assert _run_robustness(root, "metrics/robustness.json", "plots/robustness") == 2
    err = capsys.readouterr().err
    assert "robustness.eps_grid" in err and "0.03" in err
    assert not (root / "metrics/robustness.json").exists()


@pytest.mark.slow
def test_independent_pgd_finds_no_notably_lower_accuracy_than_the_worst_case() -> None:
    """torchattacks PGD (50 steps x 3 restarts) vs the project's worst case, through an AE."""
    pytest.importorskip("torchattacks")
    spec = importlib.util.spec_from_file_location(
        "_indep", ROOT / "bench" / "independent_attack.py"
    )
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    xtr, ytr = _images(64, seed=0)
    cnn = _trained_cnn(xtr, ytr)
    ae = _trained_ae(xtr)
    xu, y = _images(48, seed=1)
    x = xu.astype(np.float32) / 255
    oblivious = _oblivious(cnn, x, y)
    params = section("robustness", eps=0.02, eps_grid=(0.02,), apgd_steps=20, square_queries=50)
    result = evaluate_defence(
        "ae", ae.eval(), cnn, x, y, oblivious, ATTACK, params, seed=0, device="cpu", nb_classes=2
    )
    model = defended_classifier(ae, cnn)
    alive = bench.torchattacks_worst(model, x, y, 0.02, 50, 3, 16, "cpu", seed=0)
    assert alive.mean() >= result.worst("worst", 0.02) - 2 / len(y)  # two images of slack


def test_nothing_left_to_attack_is_no_error() -> None:
    """APGD's extra restarts run on the survivors only, Square on the clean-correct images: none
    left (or none correct to begin with) is fine."""
    cnn = _trained_cnn(*_images(48, seed=0))
    xu, y = _images(16, seed=1)
    x = xu.astype(np.float32) / 255
    grid = section("attack", eps=0.3, eps_grid=(0.0, 0.3), pgd_steps=5, batch_size=32)
    clf = attacks.make_art_classifier(cnn, (1, SIZE, SIZE), 2, "cpu")
    images = {
        m: np.stack([attack_runs.run_attacks(clf, m, x, y, e, grid)[0] for e in grid.eps_grid])
        for m in attack_specs.METHODS
    }
    oblivious = AdversarialSets(grid.eps_grid, images)
    params = section("robustness", eps=0.3, eps_grid=(0.3,), **{**FAST, "detector_eps": 0.3})
    r = evaluate_defence(
        "none", torch.nn.Identity(), cnn, x, y, oblivious, grid, params, seed=0, device="cpu",
        nb_classes=2,
    )  # fmt: skip
    assert r.worst("worst", 0.3) == 0.0 and restart_breaks(r) == 0
    wrong = evaluate_defence(
        "none", torch.nn.Identity(), cnn, x, 1 - y, oblivious, grid, params, seed=0,
        device="cpu", nb_classes=2,
    )  # fmt: skip
    assert wrong.clean_accuracy < 0.2 and wrong.worst("worst", 0.3) <= wrong.clean_accuracy
    wrong.clean[:] = False
    assert wrong.robust_accuracy() == 0.0 and masking_test(wrong).p_value == 1.0


LINEAR_EPS = 0.1
LINEAR_L2 = 0.8  # = LINEAR_EPS * sqrt(64): the L-inf ball of LINEAR_EPS lies inside it


def _linear_case() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """A linear model on 8 x 8 images that answers "mean brightness above 1/2", and 40 textured
    images at distance d = 0.0025, 0.0075, ..., 0.1975 from that boundary (the mean is 1/2 +- d).
    Shifting every pixel by d is the smallest L-inf perturbation that flips an image, so at
    eps = 0.1 the best possible attack leaves exactly the 20 images with d > 0.1: 50%."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.zeros(64), torch.full((64,), 100.0 / 64)]))
        model[1].bias.copy_(torch.tensor([0.0, -50.0]))
    y = np.arange(40) % 2
    d = 0.0025 + 0.005 * np.arange(40)
    texture = np.random.default_rng(0).uniform(-0.05, 0.05, (40, 1, 8, 8))
    texture -= texture.mean(axis=(1, 2, 3), keepdims=True)
    x = 0.5 + np.where(y == 1, d, -d)[:, None, None, None] + texture
    return model, x.astype(np.float32), y.astype(np.int64)


def _evaluate_linear(defence: nn.Module, pgd_steps: int, transfer: bool = True) -> DefenceResult:
    """Every attack on `defence` + the linear model; `transfer=False`: the oblivious "attacks"
    return the clean images, so that only the attacks on the defended model count."""
    model, x, y = _linear_case()
    grid = section("attack", eps=LINEAR_EPS, eps_grid=(0.0, LINEAR_EPS), pgd_steps=pgd_steps)
    clf = attacks.make_art_classifier(model, (1, 8, 8), 2, "cpu")
    images = {
        m: np.stack([attack_runs.run_attacks(clf, m, x, y, e, grid)[0] for e in grid.eps_grid])
        for m in attack_specs.METHODS
    }
    if not transfer:
        images = {m: np.stack([x] * len(grid.eps_grid)) for m in images}
    params = section("robustness", eps=LINEAR_EPS, eps_grid=(LINEAR_EPS,), apgd_steps=10,
                     square_queries=300, detector_eps=LINEAR_EPS, l2_images=0)  # fmt: skip
    return evaluate_defence(
        "linear", defence, model, x, y, AdversarialSets(grid.eps_grid, images), grid, params,
        seed=0, device="cpu", nb_classes=2, l2_radii=(0.0, 0.4, LINEAR_L2),
    )  # fmt: skip


def test_on_a_linear_model_the_attacks_reach_the_closed_form_and_one_step_pgd_is_flagged() -> None:
    """FGSM is the optimal attack on a linear model, so it leaves exactly the closed form's 50%;
    PGD (8 steps of eps/4) and APGD reach it too, Square alone cannot do better, and the checks
    pass. PGD stopped after one step stays far above it: the convergence check (and PGD <= FGSM)
    flags that evaluation."""
    r = _evaluate_linear(nn.Identity(), pgd_steps=8)
    assert r.clean_accuracy == 1.0
    for method in ("fgsm", "pgd", "apgd"):
        assert r.accuracy("adaptive", method, LINEAR_EPS) == 0.5, method
    # L2: the smallest flip of image i is 8 d_i (test_l2_apgd_reaches_the_closed_form...)
    assert r.l2_subset is not None and r.l2_subset.all()
    assert [r.l2_accuracy(x) for x in (0.0, 0.4, LINEAR_L2)] == [1.0, 0.75, 0.5]
    assert r.square_accuracy() >= 0.5 and r.robust_accuracy() == 0.5
    assert all(checks(r, ROBUSTNESS).values())
    one_step = _evaluate_linear(nn.Identity(), pgd_steps=1)
    assert one_step.accuracy("adaptive", "pgd", LINEAR_EPS) >= 0.6
    failed = {k for k, v in checks(one_step, ROBUSTNESS).items() if not v}
    assert {"pgd_converged", "adaptive.pgd_le_fgsm"} <= failed


class _RoundWithoutBpda(nn.Module):
    """4-bit feature squeezing attacked as it is: rounding's gradient is zero everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 15) / 15


def test_a_quantiser_attacked_without_bpda_trips_the_masking_check() -> None:
    """Without BPDA the gradient attacks see a zero gradient and break almost nothing (the
    oblivious sets, crafted on the bare model, would transfer: they are left out); Square,
    which needs scores only, breaks what the closed form allows. The same quantiser with BPDA (the
    project's feature squeezing) gives the gradient attacks their direction back: not flagged."""
    from advdenoise.defences.squeezing import feature_squeezing

    masked = _evaluate_linear(_RoundWithoutBpda(), pgd_steps=8, transfer=False)
    test = masking_test(masked)
    assert masked.worst("worst", LINEAR_EPS) >= 0.8 and masked.square_accuracy() <= 0.7
    assert test.square_only >= 8 and test.gradient_only == 0
    assert not checks(masked, ROBUSTNESS)["gradient_not_masked"]
    with_bpda = _evaluate_linear(feature_squeezing(4), pgd_steps=8, transfer=False)
    assert with_bpda.worst("worst", LINEAR_EPS) <= 0.6
    assert checks(with_bpda, ROBUSTNESS)["gradient_not_masked"]


def _with_external(root: Path, folder: Path, external_images: int = 6) -> None:
    params = read_yaml((root / "params.yaml").read_text())
    params["data"].update(external=str(folder), external_classes={"normal": 0, "covid": 1})
    params["robustness"]["external_images"] = external_images
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_an_external_set_adds_its_figures_and_changes_no_other(tmp_path: Path) -> None:
    """data.external: every defence's clean accuracy on all of it and robust accuracy on its
    subset, keys external.*, a bar per test set; the internal figures stay as they were."""
    root = _tiny_project(tmp_path)
    for stage in ("train_ae_adv", "train_ae_guided"):
        save_model(Autoencoder(SIZE, [4, 4, 4], 2), root / "data" / stage / MODEL_FILE)
    assert _run_robustness(root, "metrics/internal.json", "plots/internal") == 0
    site = tmp_path / "site_b"
    images = synthetic.generate(
        {"normal": 6, "covid": 7}, ("normal", "covid"), SIZE, 9, synthetic.ANOTHER_SITE
    )
    synthetic.write_folder(images, site)
    _with_external(root, site)
    assert _run_robustness(root, "metrics/both.json", "plots/both") == 0
    internal = json.loads((root / "metrics/internal.json").read_text())
    both = json.loads((root / "metrics/both.json").read_text())
    external = {k: v for k, v in both.items() if k.startswith("external.")}
    assert {k: v for k, v in both.items() if k not in external} == internal
    defences = section("robustness").defences
    assert external["external.images"] == 13 and external["external.subset_images"] == 6
    for d in defences:
        clean, robust = (
            external[f"external.{d}.clean_accuracy"],
            external[f"external.{d}.robust_accuracy"],
        )
        assert 0 <= robust <= 1 and clean in {k / 13 for k in range(14)}
        assert robust <= external[f"external.{d}.worst.accuracy"]
    bars = pd.read_csv(root / "plots/both/test_sets.csv")
    assert len(bars) == 4 * len(defences) and set(bars.set) == {"test", "external"}
    assert set(pd.read_csv(root / "plots/internal/test_sets.csv").set) == {"test"}
    assert (root / "plots/both/test_sets.png").is_file()
    assert not (root / "plots/internal/test_sets.png").exists()  # nothing of it without a set


def test_an_external_set_is_refused_naming_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A copy of an image of the dataset, a missing class folder, a bad file: each named, exit 2,
    no metrics written."""
    from PIL import Image

    root = _tiny_project(tmp_path)
    site = tmp_path / "site_b"
    synthetic.write_folder(
        synthetic.generate({"normal": 3, "covid": 3}, ("normal", "covid"), SIZE, 9), site
    )
    copy = site / "covid" / "copied.png"
    Image.fromarray(_images(8, 1)[0][5, 0]).save(copy)  # val image 5 of the tiny dataset
    _with_external(root, site)
    assert _run_robustness(root, "metrics/robustness.json", "plots/robustness") == 2
    err = capsys.readouterr().err
    assert "data.external shares 1 image(s) with data.source" in err
    assert "covid/copied.png = img5" in err
    copy.unlink()
    (site / "covid" / "broken.png").write_bytes(b"not a png")
    assert _run_robustness(root, "metrics/robustness.json", "plots/robustness") == 2
    assert "covid/broken.png" in capsys.readouterr().err
    shutil.rmtree(site / "covid")
    assert _run_robustness(root, "metrics/robustness.json", "plots/robustness") == 2
    err = capsys.readouterr().err
    assert "data.external_classes" in err and "covid" in err
    assert not (root / "metrics/robustness.json").exists()


def test_the_external_sets_keys_name_no_defence() -> None:
    metrics = {"none.clean_accuracy": 0.9, "external.ae.clean_accuracy": 0.7, "external.images": 9}
    assert defences_in(metrics) == ["none"]


def test_l2_apgd_reaches_the_closed_form_on_a_linear_model_and_stays_in_its_ball() -> None:
    """The linear model's logit margin is 100 d and its weight norm 12.5, so the smallest L2
    perturbation that flips an image is 8 d: within radius 0.8 exactly the 20 images with
    d < 0.1 can be flipped, and the best attack leaves 50%."""
    model, x, y = _linear_case()
    clf = attacks.make_art_classifier(model, (1, 8, 8), 2, "cpu")
    adv = attacks.apgd_l2(clf, x, y, 0.8, steps=10, restarts=1, batch_size=40, seed=0)
    check_perturbation(x, adv, 0.8, "apgd_l2", norm=2)
    with torch.no_grad():
        correct = model(torch.from_numpy(adv)).argmax(1).numpy() == y
    assert correct.mean() == 0.5
    with pytest.raises(PipelineError, match="L2 perturbation .* exceeds eps 0.4"):
        check_perturbation(x, adv, 0.4, "apgd_l2", norm=2)
