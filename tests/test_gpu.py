"""The CUDA path, skipped without a GPU: what a GPU run guarantees.

CI and most machines have no GPU, so these run where one is (`pytest tests/test_gpu.py`). They
pin two things. Every op of training, attacks and certification has a deterministic CUDA kernel:
strict mode raises where one has none, while the stages run with warn_only, which would fall back
silently. So a GPU run repeats bit for bit on the same GPU, driver and library versions. And the
GPU computes what the CPU computes, up to float rounding: batch order, augmentation and training
noise come from CPU generators on either device. The comparison runs in full float32 (TF32 off);
the stages keep PyTorch's defaults, where cuDNN convolutions may use TF32 (about 1e-3 relative).
"""

from __future__ import annotations

import os

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts: runtime.setup

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from conftest import TINY_SIZE, section
from torch import nn

from advdenoise import attacks
from advdenoise.attacks.runs import attack
from advdenoise.attacks.sets import check_perturbation
from advdenoise.data.splits import Splits, to_float
from advdenoise.models.autoencoder import Autoencoder
from advdenoise.models.classifier import Classifier, fold_batch_norm
from advdenoise.models.inference import predict_logits
from advdenoise.training.gaussian import gaussian_corruption
from advdenoise.training.loops import fit_classifier, fit_denoiser

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def strict_determinism() -> Iterator[None]:
    """Deterministic algorithms that raise, not warn, where an op has no deterministic CUDA kernel;
    full float32 arithmetic (no TF32) so that the GPU can be held to the CPU's results."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


Trained = tuple[nn.Module, list[dict[str, float]]]  # the model and its per-epoch history


def _cnn(splits: Splits, device: torch.device, epochs: int = 2) -> Trained:
    torch.manual_seed(0)
    model = Classifier(TINY_SIZE, [4, 8])
    train, val = splits.train, splits.val
    fit = fit_classifier(
        model, torch.from_numpy(train.x), torch.from_numpy(train.y), torch.from_numpy(val.x),
        torch.from_numpy(val.y), epochs=epochs, lr=1e-3, batch_size=16, seed=0, device=device,
        augment=True, progress=False,
    )  # fmt: skip
    return model, fit.history


def _denoiser(splits: Splits, device: torch.device) -> Trained:
    torch.manual_seed(0)
    model = Autoencoder(TINY_SIZE, [4, 8], 2)
    x, xv = torch.from_numpy(splits.train.x), torch.from_numpy(splits.val.x)
    fit = fit_denoiser(
        model, x, x, xv, xv, epochs=2, lr=1e-3, batch_size=16, seed=0, device=device,
        corrupt=gaussian_corruption([0.12, 0.25]), progress=False,
    )  # fmt: skip
    return model, fit.history


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("train", [_cnn, _denoiser], ids=["cnn", "denoiser"])
def test_training_on_cuda_repeats_bit_for_bit_and_agrees_with_the_cpu(
    tiny_splits: Splits, train: Callable[[Splits, torch.device], Trained]
) -> None:
    (first, history), (second, _) = train(tiny_splits, CUDA), train(tiny_splits, CUDA)
    assert _same_weights(first, second)
    # losses, not weights: Adam's first steps are +-lr by the gradient's sign, which rounding can
    # flip for the odd weight whose gradient is near zero. Another batch order moves the training
    # loss by 7e-4 (denoiser) to 5e-2 (CNN) relative.
    _, on_cpu = train(tiny_splits, torch.device("cpu"))
    for epoch, cpu_epoch in zip(history, on_cpu, strict=True):
        assert epoch["train.loss"] == pytest.approx(cpu_epoch["train.loss"], rel=2e-4)
        assert epoch["val.loss"] == pytest.approx(cpu_epoch["val.loss"], rel=2e-4)


def test_attacks_and_certificates_on_cuda_repeat_bit_for_bit(tiny_splits: Splits) -> None:
    cnn = fold_batch_norm(_cnn(tiny_splits, CUDA, epochs=1)[0])
    x, y = to_float(torch.from_numpy(tiny_splits.test.x)).numpy(), tiny_splits.test.y
    clf = attacks.make_art_classifier(cnn, x.shape[1:], 2, CUDA)
    params = section("attack", pgd_steps=5)
    runs = {
        "pgd": lambda: attack(clf, "pgd", x, y, 0.03, params, seed=1),
        "apgd": lambda: attacks.apgd(clf, x, y, 0.03, 5, 1, 16, seed=1),
        "square": lambda: attacks.square(clf, x, y, 0.03, 20, 0.1, 16, seed=1),
    }
    for name, run in runs.items():
        adv = run()
        np.testing.assert_array_equal(adv, run(), err_msg=name)
        check_perturbation(x, adv, 0.03, name)
    smoothed = attacks.make_smoothed_classifier(
        cnn, x.shape[1:], 2, CUDA, sigma=0.25, n0=16, alpha=0.001
    )
    certified = [attacks.certify(smoothed, x[:4], 64, 32, seed=2) for _ in range(2)]
    for a, b in zip(*certified, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_folded_cnn_on_cuda_predicts_what_it_predicts_on_the_cpu(tiny_splits: Splits) -> None:
    cnn = _cnn(tiny_splits, torch.device("cpu"), epochs=1)[0]
    x = torch.from_numpy(tiny_splits.test.x)
    on_cpu = predict_logits(fold_batch_norm(cnn), x, 8, "cpu")
    on_cuda = predict_logits(fold_batch_norm(cnn).to(CUDA), x, 8, CUDA)
    assert on_cuda.device.type == "cpu"  # handed back to the host
    torch.testing.assert_close(on_cuda, on_cpu, rtol=1e-4, atol=1e-5)
