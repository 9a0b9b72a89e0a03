"""Defences beyond the paper, and their honest evaluation under oblivious and adaptive attacks.

Every defence is a torch module mapping [0, 1] images N x 1 x H x W to [0, 1] images, so that
`nn.Sequential(defence, cnn)` is one differentiable classifier an attacker can target end to end:

- `none`: the identity (the undefended CNN);
- `ae`, `ae_adv`, `ae_guided`: autoencoders (differentiable as they are);
- `feature_squeezing`, `jpeg`: ART's preprocessors in the forward pass and BPDA (Athalye et al.
  2018: the identity as the backward pass) because rounding and JPEG have no useful gradient;
- `spatial_smoothing`: ART's SpatialSmoothing (median filter) re-expressed in torch
  (`MedianSmoothing`, bit-for-bit equal to ART's output; the tests check it), so the attack gets
  its exact gradient, which flows to the pixel each window selects. Calling ART's NumPy filter in
  the forward pass and the torch one for the gradient costs 2-3x more for the same numbers.

ART's preprocessors default to channels-last images; ours are channels first, so every one is built
with `channels_first=True` where it has that option (JPEG and smoothing; squeezing is per pixel).

The evaluation follows the checklist of Carlini et al. 2019 ("On evaluating adversarial
robustness"): clean accuracy beside every robust accuracy; iterative attacks at least as strong as
single-step ones; accuracy non-increasing in eps; PGD converged (doubling its steps moves accuracy
by at most one point); a random sign-noise perturbation of the same L-inf size as a floor; and the
adaptive attack at least as strong as the oblivious one. All attacks run through `attacks`.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from advdenoise import attacks, metrics
from advdenoise.adversarial import AdversarialSets, check_perturbation
from advdenoise.data import Split, Splits, to_float
from advdenoise.errors import PipelineError
from advdenoise.models import Autoencoder, batched_apply
from advdenoise.params import AttackParams, DefenceName, OptimParams, RobustnessParams
from advdenoise.training import FitResult, fit_denoiser

DEFENCES: tuple[str, ...] = typing.get_args(DefenceName)
AUTOENCODER_DEFENCES = ("ae", "ae_adv", "ae_guided")
THREATS = ("oblivious", "adaptive")
METHODS = ("fgsm", "pgd")
CONVERGENCE_TOLERANCE = 0.01  # doubling PGD steps may move accuracy by at most one point
_SEED_OFFSET = 6  # seed-stream offset of this module, distinct from the other modules' offsets


# --------------------------------------------------------------------------- preprocessing


class _Bpda(torch.autograd.Function):
    """Forward: a non-differentiable transform; backward: identity or a differentiable surrogate."""

    @staticmethod
    def forward(ctx, x, transform, surrogate):  # type: ignore[override]
        ctx.surrogate = surrogate
        if surrogate is not None:
            ctx.save_for_backward(x)
        return transform(x.detach())

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        if ctx.surrogate is None:
            return grad, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(ctx.surrogate(xx), xx, grad)
        return g, None, None


class ArtPreprocessing(nn.Module):
    """An ART (NumPy) preprocessor as a torch module with a BPDA backward pass.

    `transform` maps a float32 array N x 1 x H x W in [0, 1] to one of the same shape and range.
    Without a `surrogate` the backward pass is the identity; with one it is the surrogate's
    vector-Jacobian product at the input (BPDA with a differentiable approximation).
    """

    def __init__(
        self,
        name: str,
        transform: Callable[[np.ndarray], np.ndarray],
        surrogate: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self._transform = transform
        self.surrogate = surrogate

    def _apply_numpy(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.float().cpu().numpy()
        out = np.asarray(self._transform(arr), dtype=np.float32)
        if out.shape != arr.shape:
            raise PipelineError(f"{self.name}: output shape {out.shape} != input {arr.shape}")
        return torch.from_numpy(np.clip(out, 0.0, 1.0)).to(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Bpda.apply(x, self._apply_numpy, self.surrogate)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, backward={'surrogate' if self.surrogate else 'identity'}"


class MedianSmoothing(nn.Module):
    """Median filter equal to scipy's `median_filter(size=(1, 1, w, w), mode="reflect")`.

    Differentiable (the gradient reaches the selected pixel of each window). Padding is symmetric
    ("reflect" in scipy: d c b a | a b c d | d c b a); for even windows the footprint spans
    [i - w//2, i + w - 1 - w//2] and the upper median is taken, as in scipy's rank filter.
    """

    def __init__(self, window: int) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)

    @staticmethod
    def _pad_symmetric(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
        parts = []
        if before:
            parts.append(x.narrow(dim, 0, before).flip(dim))
        parts.append(x)
        if after:
            parts.append(x.narrow(dim, x.shape[dim] - after, after).flip(dim))
        return torch.cat(parts, dim=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.window
        if w == 1:
            return x
        n, c, h, wd = x.shape
        before, after = w // 2, w - 1 - w // 2
        if max(before, after) > min(h, wd):
            raise ValueError(f"window {w} is too large for {h} x {wd} images")
        xp = self._pad_symmetric(self._pad_symmetric(x, before, after, 2), before, after, 3)
        if w == 3:
            return _Median9.apply(xp)
        patches = F.unfold(xp.reshape(n * c, 1, *xp.shape[2:]), kernel_size=w)
        ranked, _ = patches.sort(dim=1)
        return ranked[:, (w * w) // 2, :].reshape(n, c, h, wd)


# Devillard's 19-exchange median-of-9 network: elementwise min/max instead of a sort per pixel.
_MEDIAN9_NETWORK = (
    (1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
    (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2),
)  # fmt: skip


class _Median9(torch.autograd.Function):
    """Median of the 3 x 3 neighbourhoods of a padded image; the gradient goes to the selected pixel.

    Why a Function: autograd through the 38 min/max ops costs 10x the forward pass; routing the
    gradient with one mask per neighbour costs about as much as the forward (ties: first neighbour).
    """

    @staticmethod
    def forward(ctx, xp):  # type: ignore[override]
        h, w = xp.shape[2] - 2, xp.shape[3] - 2
        views = [xp[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)]
        p = list(views)
        for a, b in _MEDIAN9_NETWORK:
            p[a], p[b] = torch.minimum(p[a], p[b]), torch.maximum(p[a], p[b])
        median = p[4]
        taken = torch.zeros_like(median, dtype=torch.bool)
        masks = []
        for v in views:
            mask = (v == median) & ~taken
            taken |= mask
            masks.append(mask)
        ctx.save_for_backward(torch.stack(masks))
        ctx.padded_shape = xp.shape
        return median

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (masks,) = ctx.saved_tensors
        h, w = grad.shape[2], grad.shape[3]
        out = grad.new_zeros(ctx.padded_shape)
        for k, mask in enumerate(masks):
            i, j = divmod(k, 3)
            out[:, :, i : i + h, j : j + w] += grad * mask
        return out


def feature_squeezing(bits: int) -> ArtPreprocessing:
    """ART FeatureSqueezing (bit-depth reduction) on [0, 1] images; BPDA identity backward."""
    from art.defences.preprocessor import FeatureSqueezing

    squeeze = FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=int(bits))
    return ArtPreprocessing("feature_squeezing", lambda a: squeeze(a)[0])


def spatial_smoothing(window: int) -> MedianSmoothing:
    """ART SpatialSmoothing(window, channels_first=True) over H x W, in torch with its gradient."""
    return MedianSmoothing(window)


def art_spatial_smoothing(window: int) -> ArtPreprocessing:
    """ART's own SpatialSmoothing (NumPy forward) with the torch median's gradient (reference)."""
    from art.defences.preprocessor import SpatialSmoothing

    smooth = SpatialSmoothing(window_size=int(window), channels_first=True, clip_values=(0.0, 1.0))
    return ArtPreprocessing(
        "spatial_smoothing", lambda a: smooth(a)[0], surrogate=MedianSmoothing(window)
    )


def jpeg_compression(quality: int) -> ArtPreprocessing:
    """ART JpegCompression (greyscale, per image); BPDA identity backward.

    ART converts [0, 1] floats to uint8 by truncation (x * 255 -> astype), which turns k/255 into
    k - 1 whenever float rounding lands just below k; we round to [0, 255] ourselves and use ART's
    [0, 255] mode so that clean 8-bit images enter the codec unchanged.
    """
    from art.defences.preprocessor import JpegCompression

    jpeg = JpegCompression(clip_values=(0, 255), quality=int(quality), channels_first=True)
    return ArtPreprocessing(
        "jpeg", lambda a: jpeg(np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.float32))[0] / 255.0
    )


def build_defence(
    name: str,
    params: RobustnessParams,
    autoencoders: Mapping[str, nn.Module] | None = None,
) -> nn.Module:
    """The defence `name` as a torch module mapping [0, 1] images to [0, 1] images (eval mode)."""
    if name == "none":
        return nn.Identity()
    if name in AUTOENCODER_DEFENCES:
        if not autoencoders or name not in autoencoders:
            raise PipelineError(f"defence {name!r} needs its trained autoencoder")
        return autoencoders[name].eval()
    if name == "feature_squeezing":
        return feature_squeezing(params.squeeze_bits)
    if name == "spatial_smoothing":
        return spatial_smoothing(params.smoothing_window)
    if name == "jpeg":
        return jpeg_compression(params.jpeg_quality)
    raise PipelineError(f"unknown defence {name!r}; known: {list(DEFENCES)}")


def channels_last(model: nn.Module) -> nn.Module:
    """Move conv weights to channels-last layout, in place.

    Why: on CPUs, oneDNN convolutions of these small nets run about 1.3x (CNN) to 2.5x
    (autoencoder) faster in NHWC, forward and backward; single-channel images need no conversion
    and the results agree to float rounding (~1e-8).
    """
    return model.to(memory_format=torch.channels_last)


def defended_classifier(defence: nn.Module, cnn: nn.Module) -> nn.Sequential:
    """`Sequential(defence, cnn)` in eval mode, frozen (attacks need input gradients only), NHWC."""
    model = channels_last(nn.Sequential(defence, cnn)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# --------------------------------------------------------------------------- attacks


def _cell_seed(seed: int, *offsets: int) -> int:
    """A 32-bit seed for one attack cell (ART's random PGD start), independent of run order."""
    return int(np.random.SeedSequence([seed, _SEED_OFFSET, *offsets]).generate_state(1)[0])


def run_attack(
    classifier: object,
    method: str,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    attack: AttackParams,
    *,
    seed: int = 0,
    offsets: Sequence[int] = (),
) -> np.ndarray:
    """FGSM or L-inf PGD with the settings of `attack`, bound-checked."""
    return run_attacks(classifier, method, x, y, eps, attack, seed=seed, offsets=offsets)[0]


def run_attacks(
    classifier: object,
    method: str,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    attack: AttackParams,
    *,
    pgd_checkpoints: Sequence[int] = (),
    seed: int = 0,
    offsets: Sequence[int] = (),
) -> list[np.ndarray]:
    """FGSM, or PGD with its iterates at `pgd_checkpoints` steps (default attack.pgd_steps)."""
    if method == "fgsm":
        advs = [attacks.fgsm(classifier, x, y, eps, attack.batch_size)]
    elif method == "pgd":
        advs = attacks.pgd_checkpoints(
            classifier,
            x,
            y,
            eps,
            tuple(pgd_checkpoints) or (attack.pgd_steps,),
            attack.pgd_step_fraction,
            attack.pgd_random_init,
            attack.batch_size,
            seed=_cell_seed(seed, *offsets),
        )
    else:
        raise PipelineError(f"unknown attack method {method!r}; known: {list(METHODS)}")
    for adv in advs:
        check_perturbation(x, adv, eps, f"{method} eps={eps:g}")
    return advs


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
    offset: int,
) -> MixedAdversarial:
    """`copies` adversarial versions of every image, each with a (method, eps) drawn at random.

    Why not every (method, eps) for every image: on a CPU that costs len(methods) * len(eps) attacks
    per image; a balanced random assignment covers all combinations at the cost of one (or
    `copies`), and the denoiser still sees every attack strength during training.
    """
    combos = tuple((m, float(e)) for m in methods for e in eps_values)
    if not combos or copies < 1:
        raise PipelineError("craft_mixed needs at least one method, one eps and copies >= 1")
    rng = np.random.default_rng([seed, _SEED_OFFSET, offset])
    n = len(x)
    images = np.empty((copies * n, *x.shape[1:]), dtype=np.float32)
    combo = np.empty(copies * n, dtype=np.int64)
    for c in range(copies):
        assign = rng.permutation(np.arange(n) % len(combos))
        for k, (method, eps) in enumerate(combos):
            idx = np.flatnonzero(assign == k)
            if len(idx) == 0:
                continue
            images[c * n + idx] = run_attack(
                classifier, method, x[idx], y[idx], eps, attack, seed=seed, offsets=(offset, c, k)
            )
        combo[c * n : (c + 1) * n] = assign
    return MixedAdversarial(images, np.tile(np.arange(n), copies), combo, combos)


def feature_guided_loss(
    cnn: nn.Module, pixel_weight: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """HGD-style loss: mean |f(AE(x')) - f(x)| on the CNN's penultimate features + pixel MSE.

    Penultimate features (not the 2 logits) because they carry far more of the CNN's
    representation, as in HGD's LGD variant; the pixel term keeps reconstructions image-like. The
    CNN must be frozen and in eval mode; the gradient flows through it into the denoiser.
    """

    def loss(denoised: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = cnn.features(clean)
        value = F.l1_loss(cnn.features(denoised), target)
        if pixel_weight > 0:
            value = value + pixel_weight * F.mse_loss(denoised, clean)
        return value

    return loss


# --------------------------------------------------------------------------- training


def art_classifier(
    model: nn.Module, image_size: int, nb_classes: int, device: torch.device | str
) -> object:
    """ART PyTorchClassifier (via `attacks`) of a model taking 1 x image_size x image_size inputs."""
    return attacks.make_art_classifier(model, (1, image_size, image_size), nb_classes, device)


@dataclass(frozen=True)
class DenoiserTraining:
    model: Autoencoder
    fit: FitResult
    metrics: dict[str, float]


def _split_sets(
    classifier: object,
    split: Split,
    methods: Sequence[str],
    eps_values: Sequence[float],
    attack: AttackParams,
    copies: int,
    seed: int,
    offset: int,
) -> tuple[np.ndarray, MixedAdversarial | None]:
    clean = to_float(split.x).numpy()
    if len(clean) == 0:
        return clean, None
    mixed = craft_mixed(
        classifier, clean, split.y, methods, eps_values, attack,
        copies=copies, seed=seed, offset=offset,
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
    classifier = art_classifier(cnn, splits.image_size, len(splits.classes), device)
    sets = {
        name: _split_sets(
            classifier,
            getattr(splits, name),
            methods,
            eps_values,
            attack,
            copies if name == "train" else 1,
            seed,
            offset,
        )
        for offset, name in enumerate(("train", "val", "test"))
    }
    model = Autoencoder(splits.image_size, channels, latent_channels)
    train_inputs, train_index = _stack(*sets["train"])
    val_inputs, val_index = _stack(*sets["val"])
    fit = fit_denoiser(
        model, train_inputs, torch.from_numpy(sets["train"][0]), val_inputs,
        torch.from_numpy(sets["val"][0]), target_index=train_index, val_target_index=val_index,
        epochs=optim.epochs, lr=optim.lr, batch_size=optim.batch_size, seed=seed, device=device,
        loss_fn=loss_fn, eval_batch_size=eval_batch_size, desc=desc,
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
    best = fit.history[fit.best_epoch - 1]
    if "val.loss" in best:
        result["val.loss"] = best["val.loss"]
    result.update(best_epoch=float(fit.best_epoch), epochs=float(optim.epochs))
    result["train.images"] = float(len(train_inputs))
    return DenoiserTraining(model, fit, result)


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
        "clean": predict(cnn, clean, batch_size, device) == y,
        "denoised": predict(cnn, recon_clean, batch_size, device) == y,
        "adversarial": predict(cnn, adv, batch_size, device) == ys,
        "adversarial_denoised": predict(cnn, recon_adv, batch_size, device) == ys,
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


# --------------------------------------------------------------------------- evaluation


def predict(
    model: nn.Module, x: np.ndarray, batch_size: int, device: torch.device | str
) -> np.ndarray:
    """Predicted labels of float32 images (batched inference)."""
    model.eval()
    logits = batched_apply(model, torch.from_numpy(np.ascontiguousarray(x)), batch_size, device)
    return logits.argmax(1).numpy()


def sign_noise(x: np.ndarray, eps: float, seed: int) -> np.ndarray:
    """x + eps * uniform random signs, clipped to [0, 1]: the random floor of the same L-inf size."""
    rng = np.random.default_rng([seed, _SEED_OFFSET, 99])
    signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=x.shape)
    return np.clip(x + np.float32(eps) * signs, 0.0, 1.0).astype(np.float32)


@dataclass
class DefenceResult:
    """Accuracies of one defence: curves[(threat, method)][eps] and the headline extras."""

    name: str
    clean_accuracy: float
    n_images: int  # test images behind every accuracy (the checks allow one image of noise)
    chance: float = 0.5  # majority-class rate of the test labels: a constant classifier's accuracy
    curves: dict[tuple[str, str], dict[float, float]] = field(default_factory=dict)
    pgd_2x_steps: float = float("nan")
    random_noise: float = float("nan")


def evaluation_subset(y: np.ndarray, max_images: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset of at most `max_images` (0: all).

    Why: adaptive attacks through every defence dominate the pipeline's cost, and a robust
    accuracy on a few hundred images (binomial s.e. <= 3.5 points at 200) decides the verdicts.
    """
    if max_images == 0 or max_images >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    chosen, _ = train_test_split(
        np.arange(len(y)), train_size=max_images, stratify=y, random_state=_cell_seed(seed, 7)
    )
    return np.sort(chosen)


def check_oblivious_sets(
    oblivious: AdversarialSets, eps_values: Sequence[float], where: str
) -> None:
    """The attack stage must have crafted FGSM and PGD sets at every eps evaluated here."""
    missing = [e for e in eps_values if not any(abs(e - o) < 1e-12 for o in oblivious.eps)]
    if missing or not set(METHODS) <= set(oblivious.methods):
        raise PipelineError(
            f"{where}: needs fgsm and pgd sets at every eps of robustness.eps_grid"
            f" {list(eps_values)}; it has {list(oblivious.methods)} at {list(oblivious.eps)}"
            f" (add the missing eps {missing} to attack.eps_grid and attack.methods)"
        )


def evaluate_defence(
    name: str,
    defence: nn.Module,
    cnn: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    oblivious: AdversarialSets,
    attack: AttackParams,
    eps_values: Sequence[float],
    headline: float,
    *,
    seed: int,
    device: torch.device | str,
    make_classifier: Callable[[nn.Module], object],
) -> DefenceResult:
    """Clean, oblivious, adaptive (FGSM, PGD; PGD with 2x steps at `headline`) and random-noise accuracy.

    Oblivious: the attack stage's sets (crafted against the bare CNN) through defence + CNN.
    Adaptive: FGSM and PGD against `Sequential(defence, cnn)` end to end. For `none` the two threat
    models coincide, so the adaptive curves reuse the attack stage's sets (same params and ART code).
    Each cell's random start is seeded from (seed, defence, eps), whatever else the grid holds.
    """
    if headline not in eps_values:
        raise PipelineError(f"{name}: headline eps {headline:g} is not in {list(eps_values)}")
    model = defended_classifier(defence, cnn)
    bs, steps = attack.batch_size, attack.pgd_steps

    def acc(images: np.ndarray) -> float:
        return float(np.mean(predict(model, images, bs, device) == y))

    result = DefenceResult(name, acc(x), len(y), float(np.bincount(y).max() / len(y)))
    di = DEFENCES.index(name) if name in DEFENCES else len(DEFENCES)
    classifier = make_classifier(model)
    for method in METHODS:
        result.curves[("oblivious", method)] = {
            e: acc(oblivious.get(method, e)) for e in eps_values
        }
        if name == "none":  # the attack stage's sets: same params and ART code
            result.curves[("adaptive", method)] = dict(result.curves[("oblivious", method)])
            continue
        curve: dict[float, float] = {}
        for e in eps_values:
            with_2x = method == "pgd" and e == headline  # the 10-step run goes on to 20
            advs = run_attacks(
                classifier, method, x, y, e, attack, seed=seed, offsets=(di, _eps_key(e)),
                pgd_checkpoints=(steps, 2 * steps) if with_2x else (),
            )  # fmt: skip
            curve[e] = acc(advs[0])
            if with_2x:
                result.pgd_2x_steps = acc(advs[1])
        result.curves[("adaptive", method)] = curve
    if name == "none":
        (twice,) = run_attacks(
            classifier, "pgd", x, y, headline, attack, seed=seed, offsets=(di, _eps_key(headline)),
            pgd_checkpoints=(2 * steps,),
        )  # fmt: skip
        result.pgd_2x_steps = acc(twice)
    noisy = sign_noise(x, headline, seed)
    check_perturbation(x, noisy, headline, f"{name}: random sign noise")
    result.random_noise = acc(noisy)
    return result


def _eps_key(eps: float) -> int:
    return int(round(eps * 1e9))


def evaluate_defences(
    params: RobustnessParams,
    autoencoders: Mapping[str, nn.Module],
    cnn: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    oblivious: AdversarialSets,
    attack: AttackParams,
    *,
    seed: int,
    device: torch.device | str,
    nb_classes: int,
    log: Callable[[str], None] = lambda _msg: None,
) -> list[DefenceResult]:
    """`evaluate_defence` for every defence of params.defences on params.eps_grid (times to `log`)."""
    image_size = int(x.shape[-1])
    results = []
    for name in params.defences:
        start = time.perf_counter()
        defence = build_defence(name, params, autoencoders)
        results.append(
            evaluate_defence(
                name,
                defence,
                cnn,
                x,
                y,
                oblivious,
                attack,
                params.eps_grid,
                params.eps,
                seed=seed,
                device=device,
                make_classifier=lambda m: art_classifier(m, image_size, nb_classes, device),
            )
        )
        log(f"{name}: {time.perf_counter() - start:.1f} s")
    return results


def checks(result: DefenceResult, headline: float) -> dict[str, bool]:
    """Carlini et al. 2019 sanity checks of one defence's evaluation (True = passed).

    Orderings ("a <= b") tolerate one image, as the attack stage's checks do (a random PGD start
    can flip a single borderline image); convergence allows CONVERGENCE_TOLERANCE.
    """
    tol = attacks.MONOTONE_TOLERANCE / max(result.n_images, 1) + 1e-12
    out: dict[str, bool] = {}
    for threat in THREATS:
        fgsm, pgd = result.curves[(threat, "fgsm")], result.curves[(threat, "pgd")]
        out[f"{threat}.pgd_le_fgsm"] = all(pgd[e] <= fgsm[e] + tol for e in pgd)
        for method in METHODS:
            curve = result.curves[(threat, method)]
            accs = [result.clean_accuracy] + [curve[e] for e in sorted(curve)]
            out[f"{threat}.{method}.non_increasing_in_eps"] = all(
                b <= a + tol for a, b in zip(accs, accs[1:], strict=False)
            )
    adaptive_pgd = result.curves[("adaptive", "pgd")][headline]
    adaptive_fgsm = result.curves[("adaptive", "fgsm")][headline]
    out["pgd_converged"] = abs(result.pgd_2x_steps - adaptive_pgd) <= CONVERGENCE_TOLERANCE + 1e-12
    out["random_noise_floor"] = result.random_noise + tol >= max(adaptive_pgd, adaptive_fgsm)
    out["adaptive_le_oblivious"] = (
        adaptive_pgd <= result.curves[("oblivious", "pgd")][headline] + tol
    )
    return out


def robustness_metrics(
    results: Sequence[DefenceResult], headline: float
) -> dict[str, float | bool]:
    """Flat metrics: accuracies at the headline eps and every check, per defence."""
    out: dict[str, float | bool] = {"eps": float(headline)}
    if results:
        out["test_images"] = results[0].n_images
    for r in results:
        out[f"{r.name}.clean_accuracy"] = r.clean_accuracy
        for (threat, method), curve in r.curves.items():
            out[f"{r.name}.{threat}.{method}.accuracy"] = curve[headline]
        out[f"{r.name}.random_noise.accuracy"] = r.random_noise
        out[f"{r.name}.adaptive.pgd_2x_steps.accuracy"] = r.pgd_2x_steps
        for check, passed in checks(r, headline).items():
            out[f"checks.{r.name}.{check}"] = bool(passed)
    out["checks.all_passed"] = all(v for k, v in out.items() if k.startswith("checks."))
    for key, value in out.items():
        if not isinstance(value, bool) and not np.isfinite(value):
            raise PipelineError(f"robustness metric {key} is not finite")
    return out


def robustness_table(results: Sequence[DefenceResult], headline: float) -> pd.DataFrame:
    """One row per defence: clean accuracy and every (threat, method) accuracy at the headline eps."""
    rows = []
    for r in results:
        row: dict[str, object] = {"defence": r.name, "clean_accuracy": r.clean_accuracy}
        for threat in THREATS:
            for method in METHODS:
                row[f"{threat}_{method}"] = r.curves[(threat, method)][headline]
        row["adaptive_pgd_2x_steps"] = r.pgd_2x_steps
        row["random_noise"] = r.random_noise
        rows.append(row)
    return pd.DataFrame(rows)


def robustness_curves(results: Sequence[DefenceResult]) -> pd.DataFrame:
    """Long table (defence, threat, method, eps, accuracy); eps = 0 is the clean accuracy."""
    rows = []
    for r in results:
        for (threat, method), curve in r.curves.items():
            rows.append((r.name, threat, method, 0.0, r.clean_accuracy))
            rows.extend((r.name, threat, method, e, curve[e]) for e in sorted(curve))
    return pd.DataFrame(rows, columns=["defence", "threat", "method", "eps", "accuracy"])


def wide_curves(curves: pd.DataFrame, threat: str, method: str) -> pd.DataFrame:
    """eps + one accuracy column per defence (for a DVC linear plot of one threat x method)."""
    part = curves[(curves.threat == threat) & (curves.method == method)]
    wide = part.pivot(index="eps", columns="defence", values="accuracy")
    order = [d for d in part.defence.drop_duplicates()]
    return wide[order].reset_index()


def verdicts(
    results: Sequence[DefenceResult], headline: float, attack_steps: int = 10
) -> pd.DataFrame:
    """One sentence per defence: what the numbers say at the headline eps, and failed checks."""
    base = {r.name: r for r in results}.get("none")
    rows = []
    for r in results:
        obl = r.curves[("oblivious", "pgd")][headline]
        ada = min(r.curves[("adaptive", "pgd")][headline], r.pgd_2x_steps)  # the stronger PGD
        failed = [k for k, v in checks(r, headline).items() if not v]
        if r.name == "none":
            text = (
                f"undefended: clean {r.clean_accuracy:.1%}; PGD at eps={headline:g} leaves {ada:.1%}"
                f" (random sign noise of the same size: {r.random_noise:.1%})"
            )
        else:
            ref = f" (undefended {base.curves[('oblivious', 'pgd')][headline]:.1%})" if base else ""
            text = (
                f"{r.name}: clean {r.clean_accuracy:.1%}; oblivious PGD {obl:.1%}{ref}; "
                f"adaptive PGD {ada:.1%} (best of {attack_steps} and 2x steps)"
            )
            floor = base.curves[("adaptive", "pgd")][headline] if base else 0.0
            if ada <= floor + 0.05:
                text += " - no robustness once the attack goes through the defence"
            elif ada < r.chance:
                text += (
                    " - no useful robustness: below the"
                    f" {r.chance:.0%} of always answering the majority class"
                )
            elif ada >= 0.5 * r.clean_accuracy:
                text += " - keeps accuracy under the adaptive attack"
            else:
                text += " - some robustness under the adaptive attack, far below clean accuracy"
        if failed:
            text += f"; failed checks: {', '.join(failed)}"
        rows.append(
            {
                "defence": r.name,
                "clean_accuracy": r.clean_accuracy,
                "oblivious_pgd": obl,
                "adaptive_pgd_best": ada,
                "checks_passed": not failed,
                "failed_checks": ";".join(failed),
                "verdict": text,
            }
        )
    return pd.DataFrame(rows)
