"""Defences as torch modules: ART preprocessors in the right layout, BPDA gradients, adaptive attacks."""

from __future__ import annotations

import dataclasses
import importlib
import io

import numpy as np
import pytest
import torch
from art.defences.preprocessor import JpegCompression, SpatialSmoothing
from conftest import PROJECT_PARAMS, section
from PIL import Image
from scipy.ndimage import median_filter
from torch import nn

from advdenoise import attacks
from advdenoise.attacks import runs as attack_runs
from advdenoise.core.errors import PipelineError
from advdenoise.defences.median import MedianSmoothing, art_spatial_smoothing
from advdenoise.defences.registry import build_defence, defended_classifier
from advdenoise.defences.specs import AUTOENCODER_DEFENCES, DEFENCES, SPECS
from advdenoise.defences.squeezing import art_feature_squeezing, feature_squeezing
from advdenoise.models.autoencoder import Autoencoder
from advdenoise.models.classifier import Classifier
from advdenoise.models.inference import predict_labels
from advdenoise.training.adversarial import craft_mixed, feature_guided_loss

torch.set_num_threads(1)


def _clf(model: nn.Module) -> object:
    return attacks.make_art_classifier(model, (1, 32, 32), 2, "cpu")


def _attack(clf: object, method: str, x: np.ndarray, y: np.ndarray, eps: float, params, **kw):
    return attack_runs.run_attacks(clf, method, x, y, eps, params, **kw)[0]


def _asymmetric(n: int = 4, size: int = 32) -> np.ndarray:
    """Images with a smooth horizontal ramp, a bright vertical bar and a dark square: no symmetry."""
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0.1, 0.9, size, dtype=np.float32), (size, 1))
    x = np.repeat(ramp[None, None], n, axis=0).copy()
    x[:, :, 4:28, 6:9] = 0.95
    x[:, :, 20:26, 18:26] = 0.05
    x += rng.uniform(-0.02, 0.02, x.shape).astype(np.float32)
    return np.clip(np.round(x * 255) / 255, 0, 1).astype(np.float32)


def _tiny_problem(
    n: int = 48, size: int = 32, seed: int = 0
) -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """A tiny CNN trained for a few steps on a dark-vs-bright texture task (about 100% accurate)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(0.2, 0.6, (n, 1, size, size)).astype(np.float32)
    x += (y[:, None, None, None] * 0.2).astype(np.float32)
    cnn = Classifier(size, [4, 8, 8, 8], dropout=0.0)
    opt = torch.optim.Adam(cnn.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(40):
        loss = nn.functional.cross_entropy(cnn(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return cnn.eval(), x, y.astype(np.int64)


ATTACK = section("attack", eps=0.05, eps_grid=(0.0, 0.05), pgd_steps=5, batch_size=16)


@pytest.mark.parametrize("window", [2, 3, 5])
def test_median_smoothing_equals_scipy_and_art(window: int) -> None:
    x = np.random.default_rng(1).random((2, 1, 13, 17)).astype(np.float32)
    mine = MedianSmoothing(window)(torch.from_numpy(x)).numpy()
    art = SpatialSmoothing(window_size=window, channels_first=True, clip_values=(0, 1))(x)[0]
    np.testing.assert_array_equal(
        mine, median_filter(x, size=(1, 1, window, window), mode="reflect")
    )
    np.testing.assert_array_equal(mine, art)


def test_spatial_smoothing_is_channels_first() -> None:
    x = _asymmetric()
    out = build_defence("spatial_smoothing", section("robustness"))(torch.from_numpy(x)).numpy()
    expected = median_filter(x, size=(1, 1, 3, 3), mode="reflect")
    np.testing.assert_array_equal(out, expected)
    # ART's default (channels last) would filter along H only and keep the 3 px bar's noise pattern
    wrong = SpatialSmoothing(window_size=3, clip_values=(0, 1))(x)[0]
    assert np.abs(wrong - expected).max() > 0.01
    # the filter commutes with transposing H and W only when it treats them alike
    out_t = build_defence("spatial_smoothing", section("robustness"))(
        torch.from_numpy(x.transpose(0, 1, 3, 2).copy())
    )
    np.testing.assert_array_equal(out_t.numpy().transpose(0, 1, 3, 2), out)


def test_jpeg_is_channels_first_and_equals_pil() -> None:
    x = _asymmetric()
    quality = 50
    out = build_defence("jpeg", section("robustness", jpeg_quality=quality))(torch.from_numpy(x))
    out = out.numpy()
    assert out.shape == x.shape
    for img, got in zip(x, out, strict=True):
        buf = io.BytesIO()
        Image.fromarray(np.rint(img[0] * 255).astype(np.uint8), mode="L").save(
            buf, format="jpeg", quality=quality
        )
        ref = np.asarray(Image.open(buf), dtype=np.float32) / 255.0
        np.testing.assert_allclose(got[0], ref, atol=1e-6)
    assert np.abs(out - x).mean() < 0.04  # orientation kept: close to the input ...
    assert np.abs(out - x.transpose(0, 1, 3, 2)).mean() > 0.1  # ... and not to its transpose
    # ART's default (channels last) would compress each image column as a 1-row picture
    wrong = JpegCompression(clip_values=(0, 1), quality=quality)(x)[0]
    assert np.abs(wrong - out).max() > 0.05


def test_feature_squeezing_rounds_to_bit_depth() -> None:
    x = _asymmetric()
    out = build_defence("feature_squeezing", section("robustness", squeeze_bits=3))(
        torch.from_numpy(x)
    ).numpy()
    np.testing.assert_allclose(out, np.rint(x * 7) / 7, atol=1e-6)


@pytest.mark.parametrize("bits", [1, 3, 5, 8])
def test_feature_squeezing_equals_arts_bit_for_bit_with_an_identity_gradient(bits: int) -> None:
    levels = 2**bits - 1
    k = np.arange(levels + 1, dtype=np.float64)
    ties = ((k[:-1] + 0.5) / levels).astype(np.float32)  # half-way: rounding half to even
    near = np.concatenate([np.nextafter(ties, 0), np.nextafter(ties, 1)])
    rng = np.random.default_rng(bits)
    values = np.concatenate([ties, near, (k / 255).astype(np.float32), rng.random(4000)])
    x = np.clip(values, 0, 1).astype(np.float32)
    x = np.resize(x, (len(x) // 64 + 1) * 64).reshape(-1, 1, 8, 8)
    xt = torch.from_numpy(x).requires_grad_(True)
    out = feature_squeezing(bits)(xt)
    reference = art_feature_squeezing(bits)(torch.from_numpy(x))  # ART's NumPy, float32 out
    assert torch.equal(out, reference) and out.dtype == torch.float32
    (grad,) = torch.autograd.grad((out * torch.arange(out.numel()).view_as(out)).sum(), xt)
    assert torch.equal(grad, torch.arange(out.numel(), dtype=torch.float32).view_as(out))


def test_bpda_gradient_through_jpeg_equals_identity_gradient() -> None:
    cnn, x, y = _tiny_problem(n=8)
    jpeg = build_defence("jpeg", section("robustness"))
    xt = torch.from_numpy(x).requires_grad_(True)
    loss = nn.functional.cross_entropy(cnn(jpeg(xt)), torch.from_numpy(y))
    (grad,) = torch.autograd.grad(loss, xt)
    # BPDA: the gradient w.r.t. x is the CNN's gradient at the JPEG output, passed through unchanged
    z = jpeg(torch.from_numpy(x)).detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(nn.functional.cross_entropy(cnn(z), torch.from_numpy(y)), z)
    assert grad.abs().sum() > 0
    torch.testing.assert_close(grad, expected)


def test_spatial_smoothing_equals_art_and_routes_gradient_to_the_median_pixel() -> None:
    x = torch.from_numpy(_asymmetric(n=2)).requires_grad_(True)
    smoothing = build_defence("spatial_smoothing", section("robustness", smoothing_window=3))
    reference = art_spatial_smoothing(3)  # ART's NumPy filter forward, torch median backward
    torch.testing.assert_close(smoothing(x), reference(x), rtol=0, atol=0)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((smoothing(x) * weights).sum(), x)
    (grad_ref,) = torch.autograd.grad((reference(x) * weights).sum(), x)
    torch.testing.assert_close(grad, grad_ref)
    # every output pixel is one selected input pixel: the weights are routed, not lost or scaled
    torch.testing.assert_close(grad.sum(), weights.sum())
    assert (grad != 0).float().mean() > 0.2


def test_build_defence_maps_unit_interval_and_names_problems() -> None:
    x = torch.from_numpy(_asymmetric(n=2))
    aes = {n: Autoencoder(32, [4, 4, 4], 2) for n in AUTOENCODER_DEFENCES}
    for name in DEFENCES:
        out = build_defence(name, section("robustness"), aes)(x)
        out = out.detach()
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1, name
    torch.testing.assert_close(build_defence("none", section("robustness"))(x), x)
    with pytest.raises(PipelineError, match="ae_adv"):
        build_defence("ae_adv", section("robustness"), {})
    with pytest.raises(PipelineError, match="unknown defence"):
        build_defence("magic", section("robustness"))


def test_every_defence_spec_names_real_params_and_builders() -> None:
    """A spec's section is a params section, its keys are fields of it, its builder imports."""
    for spec in SPECS:
        section_params = getattr(PROJECT_PARAMS, spec.section)
        fields = {f.name for f in dataclasses.fields(section_params)}
        assert set(spec.params.values()) <= fields, spec
        if spec.builder is not None:
            module, _, function = spec.builder.partition(":")
            assert callable(getattr(importlib.import_module(module), function)), spec
    assert set(PROJECT_PARAMS.robustness.defences) <= set(DEFENCES)


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_adaptive_attack_through_identity_equals_plain_attack(method: str) -> None:
    cnn, x, y = _tiny_problem(n=16)
    plain = _clf(cnn)
    wrapped = _clf(defended_classifier(nn.Identity(), cnn))
    a = _attack(plain, method, x, y, 0.05, ATTACK, seed=3)
    b = _attack(wrapped, method, x, y, 0.05, ATTACK, seed=3)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - x).max() > 0.04  # the attack did move the inputs


def test_adaptive_attack_at_least_as_strong_as_oblivious() -> None:
    cnn, x, y = _tiny_problem(n=32)
    torch.manual_seed(0)
    denoiser = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False))
    defended = defended_classifier(denoiser, cnn)
    eps = 0.12  # the classes differ by 0.2 in mean brightness
    oblivious = _attack(_clf(cnn), "pgd", x, y, eps, ATTACK)
    adaptive = _attack(_clf(defended), "pgd", x, y, eps, ATTACK)
    acc_clean = np.mean(predict_labels(defended, x, 16, "cpu") == y)
    acc_obl = np.mean(predict_labels(defended, oblivious, 16, "cpu") == y)
    acc_ada = np.mean(predict_labels(defended, adaptive, 16, "cpu") == y)
    assert acc_clean > 0.9
    assert acc_ada <= acc_obl
    assert (
        acc_ada < acc_obl
    )  # here the blur undoes the oblivious perturbation, not the adaptive one


def test_craft_mixed_covers_every_combination_within_bounds() -> None:
    cnn, x, y = _tiny_problem(n=24)
    clf = _clf(cnn)
    mixed = craft_mixed(
        clf, x, y, ("fgsm", "pgd"), (0.01, 0.05), ATTACK, copies=2, seed=0, stream="test"
    )
    assert mixed.images.shape == (48, 1, 32, 32)
    assert sorted(set(mixed.combo.tolist())) == [0, 1, 2, 3]
    for k, (_, eps) in enumerate(mixed.combos):
        rows = mixed.combo == k
        linf = np.abs(mixed.images[rows] - x[mixed.source[rows]]).max()
        assert linf <= eps + 1e-6
    again = craft_mixed(
        clf, x, y, ("fgsm", "pgd"), (0.01, 0.05), ATTACK, copies=2, seed=0, stream="test"
    )
    np.testing.assert_array_equal(mixed.images, again.images)


def test_feature_guided_loss_is_zero_for_perfect_denoising_and_trains_the_denoiser() -> None:
    cnn, x, _ = _tiny_problem(n=8)
    for p in cnn.parameters():
        p.requires_grad_(False)
    loss_fn = feature_guided_loss(cnn, pixel_weight=0.5)
    xt = torch.from_numpy(x)
    assert float(loss_fn(xt, xt)) == 0.0
    ae = Autoencoder(32, [4, 4, 4], 2)
    loss = loss_fn(ae(xt + 0.05), xt)
    loss.backward()
    assert loss > 0 and any(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.parameters())
    # the targets' features come from the cache on later calls, in any batch order
    noisy = xt + 0.05
    for order in (torch.arange(8), torch.arange(8).flip(0), torch.tensor([3, 1, 6])):
        batch, clean = ae(noisy[order]), xt[order]
        direct = nn.functional.l1_loss(cnn.features(batch), cnn.features(clean))
        direct = direct + 0.5 * nn.functional.mse_loss(batch, clean)
        torch.testing.assert_close(loss_fn(batch, clean), direct, rtol=0, atol=0)


def test_median9_gradient_equals_sort_gradient_without_ties() -> None:
    x = torch.rand(2, 1, 9, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x.requires_grad_(True)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (fast,) = torch.autograd.grad((MedianSmoothing(3)(x) * weights).sum(), x)
    xp = MedianSmoothing._pad_symmetric(MedianSmoothing._pad_symmetric(x, 1, 1, 2), 1, 1, 3)
    patches = nn.functional.unfold(xp, kernel_size=3)  # (N, 9, H*W)
    slow = patches.sort(dim=1).values[:, 4, :].reshape(x.shape)
    (expected,) = torch.autograd.grad((slow * weights).sum(), x)
    torch.testing.assert_close(fast, expected)
