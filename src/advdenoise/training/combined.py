"""The paper's denoising autoencoder (train_ae): its "combined images" and its test metrics.

Training itself is `training.fit_denoiser`; this module builds what it trains on (clean images plus a
noisy copy per noise type) and measures the result (reconstruction quality per input kind and the
CNN's accuracy on the reconstructions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from advdenoise.data.splits import to_float
from advdenoise.evaluation import metrics
from advdenoise.models.inference import batched_apply


@dataclass(frozen=True)
class CombinedImages:
    """The paper's "combined images": clean images plus one noisy copy per noise type.

    `inputs` stacks blocks of N rows in the order of `kinds` ("clean", then the noise names);
    `targets` holds the N clean images once and `target_index` maps every input row to its target.
    Noisy copies are rounded to uint8 like the source images (a 1/255 step, far below the noise).
    """

    inputs: torch.Tensor  # uint8 (len(kinds) * N, 1, H, W)
    targets: torch.Tensor  # uint8 (N, 1, H, W)
    target_index: torch.Tensor  # int64 (len(kinds) * N,)
    kinds: tuple[str, ...]

    def block(self, kind: str) -> torch.Tensor:
        n = len(self.targets)
        b = self.kinds.index(kind)
        return self.inputs[b * n : (b + 1) * n]


def combined_images(
    x: np.ndarray, noise: dict[str, float], seed: int, stream: str, chunk: int = 256
) -> CombinedImages:
    """Build CombinedImages from uint8 images with seeded noise (one generator per noise type)."""
    from advdenoise.training.noise import add_noise, noise_generator

    clean = torch.from_numpy(np.ascontiguousarray(x))
    names = sorted(noise)
    gens = {name: noise_generator(seed, stream, name) for name in names}
    blocks = [clean]
    for name in names:
        parts = [
            add_noise(to_float(clean[s : s + chunk]), name, noise[name], gens[name])
            .mul_(255.0)
            .round_()
            .to(torch.uint8)
            for s in range(0, len(clean), chunk)
        ]
        blocks.append(torch.cat(parts) if parts else clean[:0].clone())
    n = len(clean)
    return CombinedImages(
        inputs=torch.cat(blocks),
        targets=clean,
        target_index=torch.arange(n).repeat(len(blocks)),
        kinds=("clean", *names),
    )


def _example_rows(y: np.ndarray, k: int) -> np.ndarray:
    """k test rows alternating over classes (first images of each class), for figures."""
    per_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    rows = [idx[i] for i in range(k) for idx in per_class if i < len(idx)]
    return np.asarray(rows[:k], dtype=np.int64)


def denoiser_metrics(
    model: nn.Module,
    classifier: nn.Module,
    test: CombinedImages,
    y: torch.Tensor,
    batch_size: int,
    device: torch.device | str,
    examples: int = 2,
) -> tuple[dict[str, float], tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]]:
    """Reconstruction quality on clean and noisy test images, and what the denoiser costs the CNN.

    Keys: test.clean.{mse,psnr,ssim} (AE(clean) vs clean); test.noisy.<type>.{mse,psnr,ssim}
    (AE(noisy) vs clean) and .{input_mse,input_psnr} (noisy vs clean, before denoising);
    test.noisy.* = mean over types; test.cnn_accuracy_{clean,denoised,noisy,noisy_denoised}.
    Also returns (noisy, reconstructed, clean) example images for `denoising_examples`.
    """
    model.eval()
    classifier.eval()
    y_np = metrics.as_numpy(y, np.int64)
    clean = to_float(test.targets).numpy()
    rows = _example_rows(y_np, examples)

    def cnn_accuracy(images: torch.Tensor) -> float:
        logits = batched_apply(classifier, images, batch_size, device)
        return metrics.accuracy(y_np, logits.argmax(1))

    def quality(estimate: np.ndarray) -> dict[str, float]:
        return {
            "mse": metrics.mse(clean, estimate),
            "psnr": metrics.psnr(clean, estimate),
            "ssim": metrics.ssim(clean, estimate, device=device),
        }

    recon = batched_apply(model, test.targets, batch_size, device)
    result = {f"test.clean.{k}": v for k, v in quality(recon.numpy()).items()}
    result["test.cnn_accuracy_clean"] = cnn_accuracy(test.targets)
    result["test.cnn_accuracy_denoised"] = cnn_accuracy(recon)
    per_type: dict[str, dict[str, float]] = {}
    ex_noisy, ex_recon = {}, {}
    for name in test.kinds[1:]:
        noisy_u8 = test.block(name)
        noisy = to_float(noisy_u8).numpy()
        recon = batched_apply(model, noisy_u8, batch_size, device)
        q = quality(recon.numpy())
        q["input_mse"] = metrics.mse(clean, noisy)
        q["input_psnr"] = metrics.psnr(clean, noisy)
        q["cnn_accuracy"] = cnn_accuracy(noisy_u8)
        q["cnn_accuracy_denoised"] = cnn_accuracy(recon)
        per_type[name] = q
        ex_noisy[name], ex_recon[name] = noisy[rows], recon.numpy()[rows]
    for name, q in per_type.items():
        result.update({f"test.noisy.{name}.{k}": v for k, v in q.items()})
    if per_type:
        for k in next(iter(per_type.values())):
            mean = float(np.mean([q[k] for q in per_type.values()]))
            key = (
                f"test.cnn_accuracy_noisy{k[len('cnn_accuracy') :]}"
                if k.startswith("cnn")
                else None
            )
            result[key or f"test.noisy.{k}"] = mean
    return result, (ex_noisy, ex_recon, clean[rows])
