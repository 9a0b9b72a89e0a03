"""Denoisers trained on adversarial images: the paper's proposed fix (train_ae_adv) and HGD (train_ae_guided).

Both stages share one recipe: craft adversarial versions of every split once against the frozen
CNN (a random (method, eps) per image, `craft_mixed`), train the paper's autoencoder architecture to
map them (and the clean images) back to the clean originals, and report reconstruction error and
the CNN's accuracy around the denoiser. Only the loss differs (pixel MSE or `feature_guided_loss`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advdenoise import attacks
from advdenoise.attacks import runs as attack_runs
from advdenoise.core.errors import PipelineError
from advdenoise.core.params import AttackParams, OptimParams, Params, TrainAeGuidedParams
from advdenoise.core.seeding import eps_key, named_rng, named_seed
from advdenoise.data.splits import Split, Splits, to_float
from advdenoise.evaluation import metrics
from advdenoise.models.autoencoder import Autoencoder
from advdenoise.models.classifier import ClassifierNet
from advdenoise.models.inference import batched_apply, channels_last, predict_labels
from advdenoise.training.loops import DenoiserTraining, fit_denoiser, selection_metrics


@dataclass(frozen=True)
class MixedAdversarial:
    """Adversarial versions of a split: images[i] perturbs clean image source[i] with combos[combo[i]]."""

    images: np.ndarray  # float32 (copies * N, 1, H, W)
    source: np.ndarray  # int64 (copies * N,)
    combo: np.ndarray  # int64 (copies * N,)
    combos: tuple[tuple[str, float], ...]


def craft_mixed(
    classifier: object,
    x: np.ndarray,
    y: np.ndarray,
    methods: Sequence[str],
    eps_values: Sequence[float],
    attack: AttackParams,
    *,
    copies: int,
    seed: int,
    stream: str,
) -> MixedAdversarial:
    """`copies` adversarial versions of every image, each with a (method, eps) drawn at random.

    Why not every (method, eps) for every image: on a CPU that costs len(methods) * len(eps) attacks
    per image; a balanced random assignment covers all combinations at the cost of one (or
    `copies`), and the denoiser still sees every attack strength during training. The assignment
    and each attack's random start draw from the named `stream` (e.g. "train_ae_adv.train").
    """
    combos = tuple((m, float(e)) for m in methods for e in eps_values)
    if not combos or copies < 1:
        raise PipelineError("craft_mixed needs at least one method, one eps and copies >= 1")
    rng = named_rng(seed, stream, "assignment")
    n = len(x)
    images = np.empty((copies * n, *x.shape[1:]), dtype=np.float32)
    combo = np.empty(copies * n, dtype=np.int64)
    for c in range(copies):
        assign = rng.permutation(np.arange(n) % len(combos))
        for k, (method, eps) in enumerate(combos):
            idx = np.flatnonzero(assign == k)
            if len(idx) == 0:
                continue
            (images[c * n + idx],) = attack_runs.run_attacks(
                classifier,
                method,
                x[idx],
                y[idx],
                eps,
                attack,
                seed=named_seed(seed, stream, "attack", c, method, eps_key(eps)),
            )
        combo[c * n : (c + 1) * n] = assign
    return MixedAdversarial(images, np.tile(np.arange(n), copies), combo, combos)


def feature_guided_loss(
    cnn: ClassifierNet, pixel_weight: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """HGD-style loss: mean |f(AE(x')) - f(x)| on the CNN's penultimate features + pixel MSE.

    Penultimate features (not the 2 logits) because they carry far more of the CNN's
    representation, as in HGD's LGD variant; the pixel term keeps reconstructions image-like. The
    CNN must be frozen and in eval mode; the gradient flows through it into the denoiser. The
    targets' features are computed once per clean image (`RowCache`), not once per epoch.
    """

    targets = RowCache(cnn.features)

    def loss(denoised: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = targets(clean)
        value = F.l1_loss(cnn.features(denoised), target)
        if pixel_weight > 0:
            value = value + pixel_weight * F.mse_loss(denoised, clean)
        return value

    return loss


def _split_sets(
    classifier: object,
    split: Split,
    methods: Sequence[str],
    eps_values: Sequence[float],
    attack: AttackParams,
    copies: int,
    seed: int,
    stream: str,
) -> tuple[np.ndarray, MixedAdversarial | None]:
    clean = to_float(split.x).numpy()
    if len(clean) == 0:
        return clean, None
    mixed = craft_mixed(
        classifier, clean, split.y, methods, eps_values, attack,
        copies=copies, seed=seed, stream=stream,
    )  # fmt: skip
    return clean, mixed


def _stack(clean: np.ndarray, mixed: MixedAdversarial | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (clean then adversarial) and the index of each input's clean target."""
    if mixed is None:
        return torch.from_numpy(clean), torch.zeros(0, dtype=torch.int64)
    inputs = torch.from_numpy(np.concatenate([clean, mixed.images]))
    index = torch.from_numpy(np.concatenate([np.arange(len(clean)), mixed.source]))
    return inputs, index


def train_adversarial_denoiser(
    cnn: nn.Module,
    splits: Splits,
    *,
    channels: Sequence[int],
    latent_channels: int,
    methods: Sequence[str],
    eps_values: Sequence[float],
    copies: int,
    optim: OptimParams,
    attack: AttackParams,
    seed: int,
    device: torch.device | str,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    eval_batch_size: int = 256,
    desc: str = "train_ae_adv",
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> DenoiserTraining:
    """Train the paper's autoencoder on clean + adversarial images of the training split.

    `cnn` is frozen and moved to channels-last layout in place (see `channels_last`).

    The adversarial images are crafted once against the frozen CNN (white-box, `attack` settings)
    and paired with their clean originals as targets; `loss_fn` (default pixel MSE) compares the
    reconstruction with the clean target. Validation (model selection) uses the val split crafted
    the same way; the test split, crafted likewise, only feeds the returned metrics.
    """
    channels_last(cnn).eval()
    for p in cnn.parameters():
        p.requires_grad_(False)
    shape = (1, splits.image_size, splits.image_size)
    classifier = attacks.make_art_classifier(cnn, shape, len(splits.classes), device)
    sets = {
        name: _split_sets(
            classifier,
            getattr(splits, name),
            methods,
            eps_values,
            attack,
            copies if name == "train" else 1,
            seed,
            f"{desc}.{name}",
        )
        for name in ("train", "val", "test")
    }
    torch.manual_seed(named_seed(seed, f"{desc}.init"))  # the initial weights
    model = Autoencoder(splits.image_size, channels, latent_channels)
    train_inputs, train_index = _stack(*sets["train"])
    val_inputs, val_index = _stack(*sets["val"])
    fit = fit_denoiser(
        model, train_inputs, torch.from_numpy(sets["train"][0]), val_inputs,
        torch.from_numpy(sets["val"][0]), target_index=train_index, val_target_index=val_index,
        epochs=optim.epochs, lr=optim.lr, batch_size=optim.batch_size,
        seed=named_seed(seed, f"{desc}.batches"), device=device,
        loss_fn=loss_fn, eval_batch_size=eval_batch_size, desc=desc, on_epoch=on_epoch,
    )  # fmt: skip
    result: dict[str, float] = {}
    for name in ("val", "test"):
        clean, mixed = sets[name]
        if mixed is not None:
            y = getattr(splits, name).y
            result.update(
                adversarial_denoiser_metrics(
                    name,
                    model,
                    cnn,
                    clean,
                    y,
                    mixed,
                    eval_batch_size,
                    device,
                    with_accuracy=name == "test",
                )
            )
    result.update(selection_metrics(fit, optim.epochs))
    result["train.images"] = float(len(train_inputs))
    return DenoiserTraining(model, fit, result)


def train_stage(
    stage: Literal["train_ae_adv", "train_ae_guided"],
    params: Params,
    cnn: ClassifierNet,
    splits: Splits,
    device: torch.device | str,
    eval_batch_size: int,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> DenoiserTraining:
    """The denoiser of `stage` from its params section; train_ae_guided adds the feature loss."""
    cfg = getattr(params, stage)
    loss_fn = None
    if isinstance(cfg, TrainAeGuidedParams):
        loss_fn = feature_guided_loss(cnn, cfg.pixel_weight)
    return train_adversarial_denoiser(
        cnn, splits, channels=params.train_ae.channels,
        latent_channels=params.train_ae.latent_channels, methods=cfg.methods, eps_values=cfg.eps,
        copies=cfg.copies, optim=cfg, attack=params.attack, seed=params.seed, device=device,
        loss_fn=loss_fn, eval_batch_size=eval_batch_size, desc=stage, on_epoch=on_epoch,
    )  # fmt: skip


def adversarial_denoiser_metrics(
    split: str,
    model: nn.Module,
    cnn: nn.Module,
    clean: np.ndarray,
    y: np.ndarray,
    mixed: MixedAdversarial,
    batch_size: int,
    device: torch.device | str,
    *,
    with_accuracy: bool,
) -> dict[str, float]:
    """Reconstruction error against the clean originals, and the CNN's accuracy around the denoiser.

    Keys: <split>.clean.{mse,psnr} (AE(x) vs x), <split>.adversarial.{mse,psnr,input_mse}
    (AE(x_adv) vs x; input_mse = x_adv vs x); with_accuracy adds <split>.cnn_accuracy_{clean,
    denoised, adversarial, adversarial_denoised} and per method
    <split>.adversarial.<method>.cnn_accuracy_{undefended,denoised} (oblivious: crafted against
    the bare CNN).
    """
    model.eval()
    recon_clean = batched_apply(model, torch.from_numpy(clean), batch_size, device).numpy()
    adv = mixed.images
    recon_adv = batched_apply(model, torch.from_numpy(adv), batch_size, device).numpy()
    target = clean[mixed.source]
    out = {
        f"{split}.clean.mse": metrics.mse(clean, recon_clean),
        f"{split}.clean.psnr": metrics.psnr(clean, recon_clean),
        f"{split}.adversarial.mse": metrics.mse(target, recon_adv),
        f"{split}.adversarial.psnr": metrics.psnr(target, recon_adv),
        f"{split}.adversarial.input_mse": metrics.mse(target, adv),
    }
    if not with_accuracy:
        return out
    ys = y[mixed.source]
    correct = {
        "clean": predict_labels(cnn, clean, batch_size, device) == y,
        "denoised": predict_labels(cnn, recon_clean, batch_size, device) == y,
        "adversarial": predict_labels(cnn, adv, batch_size, device) == ys,
        "adversarial_denoised": predict_labels(cnn, recon_adv, batch_size, device) == ys,
    }
    out.update({f"{split}.cnn_accuracy_{k}": float(v.mean()) for k, v in correct.items()})
    methods = np.array([mixed.combos[k][0] for k in mixed.combo])
    for method in dict.fromkeys(m for m, _ in mixed.combos):
        rows = methods == method
        if rows.any():
            out[f"{split}.adversarial.{method}.cnn_accuracy_undefended"] = float(
                correct["adversarial"][rows].mean()
            )
            out[f"{split}.adversarial.{method}.cnn_accuracy_denoised"] = float(
                correct["adversarial_denoised"][rows].mean()
            )
    return out


class RowCache(nn.Module):
    """`model` (a module or any batch function, e.g. `cnn.features`) for forward passes without
    gradients, remembering the output of every input row.

    The feature-guided denoiser's loss meets the same clean targets every epoch; their features
    are computed once. Rows not seen yet run through `model` together, in input order.

    Rows are keyed by Python's hash of their bytes (SipHash-1-3, 64 bits, keyed per process; 4x
    the speed of a 128-bit BLAKE2b digest). Two of n distinct rows share a key with probability
    about n^2 / 2^65: 1e-13 for the 2000 training images of the real data.
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.cache: dict[int, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            raise RuntimeError("RowCache is for forward passes without gradients")
        rows = x.detach().cpu().contiguous().numpy()
        keys = [hash(row.tobytes()) for row in rows]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            fresh = self.model(x[todo])
            for i, out in zip(todo, fresh, strict=True):
                self.cache[keys[i]] = out
        return torch.stack([self.cache[k] for k in keys])
