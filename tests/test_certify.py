"""Randomized smoothing: CERTIFY against ART and a closed form, sanity of the curves, the stages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from conftest import section
from scipy.stats import norm
from test_robustness import _stage, _tiny_project
from torch import nn

from advdenoise import attacks
from advdenoise.core.params import read_yaml
from advdenoise.evaluation import certify as cert

SIZE = 8
torch.set_num_threads(1)


class Linear(nn.Module):
    """Class 1 iff mean(x) > 0.5: the distance of x to the boundary is |mean(x) - 0.5| * sqrt(d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x.flatten(1).mean(1) - 0.5) * 50.0
        return torch.stack([-score, score], 1)


def _points(distances: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform images at the given signed L2 distance from Linear's boundary."""
    d = SIZE * SIZE
    level = 0.5 + distances / math.sqrt(d)
    x = np.repeat(level[:, None], d, 1).reshape(-1, 1, SIZE, SIZE).astype(np.float32)
    return x, (distances > 0).astype(np.int64), np.abs(distances)


def test_certify_matches_art_and_the_closed_form_of_a_linear_classifier() -> None:
    sigma = 0.25
    x, y, dist = _points(np.array([0.1, -0.12, 0.15, -0.05]))
    smoothed = attacks.make_smoothed_classifier(
        Linear(), x.shape[1:], 2, "cpu", sigma=sigma, n0=64, alpha=0.001
    )
    pred, radius, votes = attacks.certify(smoothed, x, 4000, 1000, seed=5)
    with attacks.seeded(5):  # the same loop as ART's own certify, which hands back no votes
        art_pred, art_radius = smoothed.certify(x, 4000, 1000)
    np.testing.assert_array_equal(pred, art_pred)
    np.testing.assert_allclose(radius, art_radius)
    assert (votes.sum(1) == 4000).all()
    # linear f: the smoothed classifier is f, p_A = Phi(dist / sigma), so radius -> dist
    assert (pred == y).all()
    assert (radius <= dist + 0.01).all() and (radius >= dist - 0.05).all()
    assert np.allclose(votes[np.arange(4), y] / 4000, norm.cdf(dist / sigma), atol=0.03)


def test_certification_sanity_and_attacks_stay_outside_the_certificates() -> None:
    params = section("certify", sigmas=(0.25,), n0=32, n=400, attack_images=4, attack_samples=8)
    x, y, dist = _points(np.array([0.3, -0.2, 0.25, -0.3, 0.01, -0.02]))
    c = cert.certify_model("cnn", Linear(), x, y, 0.25, params, nb_classes=2, seed=0, device="cpu")
    assert all(cert.checks(c, params.radii).values())
    assert c.certified_accuracy(0.0) <= c.majority_accuracy
    attacked = cert.attack_certificates(c, Linear(), x, params, nb_classes=2, seed=0, device="cpu")
    assert attacked["attack.images"] >= 3 and attacked["attack.violations"] == 0
    scores = cert.certify_metrics([c], {("cnn", 0.25): attacked}, {}, params, SIZE * SIZE)
    assert scores["checks.all_passed"] is True
    assert scores["linf_equivalent.radius_0.5"] == 0.5 / SIZE
    accs = [scores[f"cnn.sigma_0.25.radius_{r:g}.certified_accuracy"] for r in params.radii]
    assert accs == sorted(accs, reverse=True) and accs[0] > accs[-1]
    curves = cert.certify_curves([c], 1.0)
    assert curves.certified_accuracy.is_monotonic_decreasing
    assert list(cert.wide_curves(curves).columns) == ["radius", "cnn_sigma_0.25"]


def test_eot_pgd_fills_each_images_own_l2_ball() -> None:
    """Against Linear the best L2 attack walks straight towards the boundary: every attacked image
    moves by its own radius (in batches of two images here); radius 0 leaves it alone."""
    x, y, dist = _points(np.array([0.3, -0.2, 0.25, -0.3, 0.4]))
    radius = np.array([0.1, 0.05, 0.0, 0.2, 0.5])  # the last one crosses the boundary
    adv = attacks.eot_pgd_l2(
        Linear(), x, y, radius, 0.25, samples=8, steps=20, nb_classes=2, device="cpu",
        batch_size=16, seed=0,
    )  # fmt: skip
    l2 = np.sqrt(((adv - x).astype(np.float64) ** 2).reshape(len(x), -1).sum(1))
    np.testing.assert_allclose(l2, radius, atol=1e-3)
    signed = (adv.reshape(len(x), -1).mean(1) - 0.5) * SIZE * np.where(y == 1, 1, -1)
    np.testing.assert_allclose(signed, dist - radius, atol=1e-3)  # the last one is misclassified


def test_a_broken_certificate_is_flagged() -> None:
    y = np.array([0, 1, 1])
    lying = cert.Certification("cnn", 0.25, y, np.array([0, 1, 1]), np.array([0.5, 0.2, 0.1]),
                               votes=np.array([[9, 1], [9, 1], [9, 1]]))  # fmt: skip
    assert cert.checks(lying, (0.0, 0.5))["radius0_le_smoothed_clean"] is False


def test_the_certified_lower_bound_meets_the_attack_upper_bound_and_a_violation_fires() -> None:
    """On Linear the certified radius approaches each image's distance to the boundary, and L2
    PGD + EOT at radius r flips exactly the images closer than r (none of them within 0.05 of a
    radius, so the majority vote of n = 400 copies is sure): certified <= attacked at every radius.
    A certificate claimed above what the attack broke (here: every radius tripled) fails."""
    params = section("certify", sigmas=(0.25,), n0=32, n=400, attack_samples=8, l2_images=0)
    x, y, dist = _points(np.array([0.3, -0.2, 0.4, -0.35, 0.05, -0.15, 0.7, -0.6]))
    c = cert.certify_model("cnn", Linear(), x, y, 0.25, params, nb_classes=2, seed=0, device="cpu")
    l2 = cert.attack_radii(c, Linear(), x, params, nb_classes=2, seed=0, device="cpu")
    assert list(l2.correct) == list(params.radii) == [0.0, 0.1, 0.25, 0.5, 1.0]
    assert l2.accuracy() == {r: float(np.mean(dist > r)) for r in params.radii}
    assert l2.certified() == {r: c.certified_accuracy(r) for r in params.radii}
    assert all(cert.bounds_meet(l2.certified(), l2.accuracy(), len(x)).values())
    scores = cert.certify_metrics([c], {}, {("cnn", 0.25): l2}, params, SIZE * SIZE)
    assert scores["cnn.sigma_0.25.l2.radius_0.25.accuracy"] == 5 / 8
    assert scores["checks.cnn.sigma_0.25.l2_certified_le_attacked"] is True
    inflated = cert.Certification("cnn", 0.25, c.y, c.prediction, 3 * c.radius, c.votes)
    claimed = {r: inflated.certified_accuracy(r) for r in params.radii}
    assert cert.bounds_meet(claimed, l2.accuracy(), len(x)) == {
        0.0: True, 0.1: True, 0.25: False, 0.5: False, 1.0: False
    }  # fmt: skip
    lying = cert.AttackedRadii(inflated, l2.correct)
    scores = cert.certify_metrics([inflated], {}, {("cnn", 0.25): lying}, params, SIZE * SIZE)
    assert scores["checks.cnn.sigma_0.25.l2_certified_le_attacked"] is False
    assert scores["checks.all_passed"] is False
    table = cert.bounds_table({("cnn", 0.25): l2}, "cnn")
    assert list(table.columns) == ["radius", "certified_sigma_0.25", "attacked_sigma_0.25"]
    assert list(table["attacked_sigma_0.25"]) == list(l2.accuracy().values())


def test_the_attack_at_every_radius_takes_its_stratified_subset() -> None:
    params = section("certify", sigmas=(0.25,), n0=16, n=64, attack_samples=2, l2_steps=1,
                     l2_images=4)  # fmt: skip
    x, y, _ = _points(np.array([0.3, -0.2, 0.4, -0.35, 0.05, -0.15, 0.7, -0.6]))
    c = cert.certify_model("cnn", Linear(), x, y, 0.25, params, nb_classes=2, seed=0, device="cpu")
    l2 = cert.attack_radii(c, Linear(), x, params, nb_classes=2, seed=0, device="cpu")
    assert len(l2.cert.y) == 4 and np.bincount(l2.cert.y).tolist() == [2, 2]
    assert all(len(ok) == 4 for ok in l2.correct.values())


def test_train_ae_gauss_and_certify_stages(tmp_path: Path) -> None:
    root = _tiny_project(tmp_path)
    params = read_yaml((root / "params.yaml").read_text())
    params["train_ae_gauss"].update(epochs=1)
    params["certify"].update(sigmas=[0.12, 0.25], n0=8, n=40, max_images=8, attack_images=2,
                             attack_samples=4, l2_images=0)  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    common = ["--params", str(root / "params.yaml"), "--data", str(root / "data/prepare"),
              "--classifier", str(root / "data/train_cnn")]  # fmt: skip
    assert _stage("train_ae_gauss").main(
        [*common, "--out", str(root / "data/train_ae_gauss"),
         "--metrics", str(root / "metrics/train_ae_gauss.json"), "--plots", str(root / "plots/train_ae_gauss")]
    ) == 0  # fmt: skip
    gauss = json.loads((root / "metrics/train_ae_gauss.json").read_text())
    for s in ("0.12", "0.25"):
        assert {f"test.sigma_{s}.psnr_denoised", f"test.sigma_{s}.cnn_accuracy_denoised"} <= set(
            gauss
        )
    args = [*common, "--autoencoder", str(root / "data/train_ae"),
            "--ae-gauss", str(root / "data/train_ae_gauss"),
            "--metrics", str(root / "metrics/certify.json"), "--plots", str(root / "plots/certify")]  # fmt: skip
    assert _stage("certify").main(args) == 0
    scores = json.loads((root / "metrics/certify.json").read_text())
    for model in ("cnn", "ae", "ae_gauss"):
        for sigma in ("0.12", "0.25"):
            key = f"{model}.sigma_{sigma}"
            certified = scores[f"{key}.radius_0.certified_accuracy"]
            assert certified <= scores[f"{key}.smoothed_clean_accuracy"]
            assert scores[f"checks.{key}.non_increasing_in_radius"] is True
            attacked = [
                scores[f"{key}.l2.radius_{r:g}.accuracy"] for r in params["certify"]["radii"]
            ]
            assert attacked[0] == scores[f"{key}.smoothed_clean_accuracy"]
            assert attacked == sorted(attacked, reverse=True)  # the cascade over radii
            assert attacked[0] == scores[f"{key}.smoothed_clean_accuracy"]  # l2_images 0: all
            assert isinstance(scores[f"checks.{key}.l2_certified_le_attacked"], bool)
        bounds = pd.read_csv(root / f"plots/certify/bounds_{model}.csv")
        assert list(bounds.columns) == ["radius", "certified_sigma_0.12", "attacked_sigma_0.12",
                                        "certified_sigma_0.25", "attacked_sigma_0.25"]  # fmt: skip
    assert scores["images"] == 8 and scores["chance"] == 0.5  # a class-stratified 4 + 4
    curves = pd.read_csv(root / "plots/certify/curves.csv")
    assert curves.columns[0] == "radius" and len(curves.columns) == 1 + 3 * 2
    assert (root / "plots/certify/certified_accuracy.png").stat().st_size > 0
    # same params, same bytes
    args[-3] = str(root / "metrics/again.json")
    args[-1] = str(root / "plots/again")
    assert _stage("certify").main(args) == 0
    assert (root / "metrics/again.json").read_bytes() == (
        root / "metrics/certify.json"
    ).read_bytes()


def test_gaussian_corruption_draws_each_sigma_from_the_generator() -> None:
    from advdenoise.training.gaussian import gaussian_corruption, noisy_copies, stability_loss

    corrupt = gaussian_corruption((0.1, 0.5))
    x = torch.full((400, 1, 32, 32), 0.5)
    a = corrupt(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, corrupt(x, torch.Generator().manual_seed(0)))
    stds = (a - x).flatten(1).std(1)
    assert ((stds < 0.2) | (stds > 0.3)).all()  # each image got one of the two levels
    assert 0.4 < float((stds > 0.3).float().mean()) < 0.6
    assert float(a.min()) < 0  # not clipped: the certificate is for the unclipped Gaussian
    fixed = noisy_copies(np.zeros((2, 1, 4, 4), np.float32), 0.25, seed=0, stream="test")
    assert np.array_equal(fixed, noisy_copies(np.zeros((2, 1, 4, 4), np.float32), 0.25, 0, "test"))
    clean = torch.rand(8, 1, SIZE, SIZE)
    assert float(stability_loss(Linear(), 0.0)(clean, clean)) == 0.0
    assert float(stability_loss(Linear(), 1.0)(1 - clean, clean)) > float(
        stability_loss(Linear(), 0.0)(1 - clean, clean)
    )
