"""The Gaussian denoiser of denoised smoothing (train_ae_gauss; Salman et al. 2020).

Randomized smoothing classifies x + N(0, sigma^2) many times; a CNN trained on clean images fails on
such inputs, so a denoiser in front of the frozen CNN restores it ("denoised smoothing"). The
denoiser has the paper's autoencoder architecture and learns to map x + sigma * noise back to x, with
sigma drawn per image from certify.sigmas (one blind denoiser for every sigma) and fresh noise per
batch. Noise is not clipped to [0, 1]: the certificate is for the unclipped Gaussian.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advdenoise.core.seeding import eps_key, named_rng, named_seed
from advdenoise.data.splits import Splits, to_float
from advdenoise.evaluation import metrics
from advdenoise.models.autoencoder import Autoencoder
from advdenoise.models.inference import batched_apply, predict_labels
from advdenoise.training.loops import DenoiserTraining, fit_denoiser, selection_metrics


def gaussian_corruption(
    sigmas: Sequence[float],
) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """x + sigma_i * N(0, 1), sigma_i drawn per image from `sigmas` with the training generator
    (on the CPU, so the noise does not depend on the device x is on)."""
    levels = torch.tensor([float(s) for s in sigmas])

    def corrupt(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        pick = torch.randint(len(levels), (len(x),), generator=gen)
        noise = torch.randn(x.shape, generator=gen)
        return x + (levels[pick].view(-1, 1, 1, 1) * noise).to(x.device)

    return corrupt


def stability_loss(
    cnn: nn.Module, weight: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Pixel MSE + weight * CE(cnn(denoised), cnn's label of the clean image) (Salman et al.)."""

    def loss(denoised: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        value = F.mse_loss(denoised, clean)
        if weight > 0:
            with torch.no_grad():
                target = cnn(clean).argmax(1)
            value = value + weight * F.cross_entropy(cnn(denoised), target)
        return value

    return loss


def noisy_copies(x: np.ndarray, sigma: float, seed: int, stream: str) -> np.ndarray:
    """float32 x + sigma * N(0, 1) from the named `stream` at this sigma (fixed evaluation noise)."""
    rng = named_rng(seed, stream, eps_key(sigma))
    return (x + np.float32(sigma) * rng.standard_normal(x.shape, dtype=np.float32)).astype(
        np.float32
    )


def train_gaussian_denoiser(
    cnn: nn.Module,
    splits: Splits,
    sigmas: Sequence[float],
    *,
    channels: Sequence[int],
    latent_channels: int,
    epochs: int,
    lr: float,
    batch_size: int,
    stability_weight: float,
    seed: int,
    device: torch.device | str,
    eval_batch_size: int = 256,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> DenoiserTraining:
    """Train the blind Gaussian denoiser; metrics per sigma on the test split (fixed noise).

    Keys: test.sigma_<s>.{psnr_noisy, psnr_denoised, cnn_accuracy_noisy, cnn_accuracy_denoised}
    and test.cnn_accuracy_clean: what smoothing at that sigma would start from, with and without
    the denoiser.
    """
    for p in cnn.parameters():
        p.requires_grad_(False)
    cnn.eval()
    val_clean = to_float(splits.val.x).numpy()
    val_inputs = np.concatenate(
        [noisy_copies(val_clean, s, seed, "train_ae_gauss.val_noise") for s in sigmas]
    )
    val_index = np.tile(np.arange(len(val_clean)), len(sigmas))
    torch.manual_seed(named_seed(seed, "train_ae_gauss.init"))  # the initial weights
    model = Autoencoder(splits.image_size, channels, latent_channels)
    train = torch.from_numpy(splits.train.x)
    fit = fit_denoiser(
        model, train, train, torch.from_numpy(val_inputs), torch.from_numpy(val_clean),
        val_target_index=torch.from_numpy(val_index), epochs=epochs, lr=lr,
        batch_size=batch_size, seed=named_seed(seed, "train_ae_gauss.batches"), device=device,
        loss_fn=stability_loss(cnn, stability_weight), corrupt=gaussian_corruption(sigmas),
        eval_batch_size=eval_batch_size, desc="train_ae_gauss", on_epoch=on_epoch,
    )  # fmt: skip
    clean, y = to_float(splits.test.x).numpy(), splits.test.y
    out: dict[str, float] = {
        "test.cnn_accuracy_clean": float(
            np.mean(predict_labels(cnn, clean, eval_batch_size, device) == y)
        )
    }
    denoised_cnn = nn.Sequential(model, cnn).eval()
    for sigma in sigmas:
        noisy = noisy_copies(clean, sigma, seed, "train_ae_gauss.test_noise")
        recon = batched_apply(model, torch.from_numpy(noisy), eval_batch_size, device).numpy()
        key = f"test.sigma_{sigma:g}"
        out[f"{key}.psnr_noisy"] = metrics.psnr(clean, np.clip(noisy, 0, 1))
        out[f"{key}.psnr_denoised"] = metrics.psnr(clean, recon)
        out[f"{key}.cnn_accuracy_noisy"] = float(
            np.mean(predict_labels(cnn, noisy, eval_batch_size, device) == y)
        )
        out[f"{key}.cnn_accuracy_denoised"] = float(
            np.mean(predict_labels(denoised_cnn, noisy, eval_batch_size, device) == y)
        )
    out.update(selection_metrics(fit, epochs))
    return DenoiserTraining(model, fit, out)
