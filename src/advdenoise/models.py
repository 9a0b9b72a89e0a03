"""The classifier and the denoising autoencoder, and their pickle-free model files.

Classifier (the paper gives no architecture; this is a compact batch-norm conv net that trains on a
CPU): one block per entry of `channels`, each conv3x3 -> BatchNorm -> maxpool 2x2 -> ReLU, so a
64 px input leaves 4 x 4 maps after four blocks and a 224 px input 14 x 14. Pooling before the ReLU
is the usual conv-BN-ReLU-pool block bit for bit (ReLU is monotone, so it commutes with max, outputs
and gradients alike), with the ReLU on a quarter of the pixels. Inputs of 128 px and more first
pass a stride-2 conv3x3 stem (width channels[0], BN, ReLU): it halves the cost of the
first, most expensive block at the paper's 224 px without changing the receptive-field story.
Then global average pooling (the penultimate features, `features`), dropout and a linear layer
giving the logits. Input: N x 1 x H x W in [0, 1]; the net centres it by subtracting 0.5.

Autoencoder (the paper's "convolutional denoising autoencoder"): encoder of stride-2 conv3x3 + ReLU
blocks with widths `channels`, a conv3x3 bottleneck to `latent_channels` maps of size
H / 2**len(channels); a mirrored decoder of conv3x3 + ReLU then nearest 2x upsampling per level,
and a final conv3x3 to one channel with a sigmoid, so reconstructions lie in [0, 1] (the last
upsampling and conv run as one, `UpsampleConv`). No batch norm:
train and eval mode compute the same function, which keeps attacks through the denoiser simple.

Model files hold {"kind", "hparams", "state_dict"} only (strings, numbers, lists, tensors), written
atomically with torch.save and read with `weights_only=True`; nothing is ever unpickled.
"""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from advdenoise.data import to_float
from advdenoise.errors import PipelineError
from advdenoise.io import atomic_path

MODEL_FILE = "model.pt"
STEM_MIN_SIZE = 128  # inputs this large get a stride-2 stem (see module docstring)


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class Classifier(nn.Module):
    """Compact batch-norm CNN: [stem] -> len(channels) x (conv-BN-ReLU-pool) -> GAP -> dropout -> FC."""

    kind = "classifier"

    def __init__(
        self,
        image_size: int,
        channels: Sequence[int],
        num_classes: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be non-empty positive widths, got {channels}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        stem = image_size >= STEM_MIN_SIZE
        spatial = image_size // (2 if stem else 1)
        if spatial < 2 ** len(channels):
            raise ValueError(
                f"image_size {image_size} is too small for {len(channels)} pooling blocks"
            )
        self.hparams: dict[str, Any] = {
            "image_size": int(image_size),
            "channels": channels,
            "num_classes": int(num_classes),
            "dropout": float(dropout),
        }
        layers: list[nn.Module] = []
        c_in = 1
        if stem:
            layers += _conv_bn_relu(1, channels[0], stride=2)
            c_in = channels[0]
        for c_out in channels:
            conv, bn, relu = _conv_bn_relu(c_in, c_out)
            layers += [conv, bn, nn.MaxPool2d(2), relu]  # pool first: see the module docstring
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, channels[-1]] (after global average pooling, before dropout)."""
        return self.pool(self.body(x - 0.5)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def fold_batch_norm(model: Classifier) -> Classifier:
    """A frozen eval-mode copy of a trained classifier with each batch norm folded into its conv.

    Why: after train_cnn the CNN is only evaluated and attacked, where batch norm is a fixed
    per-channel affine map. Folded into the conv's weights and bias, its forward and backward
    passes (a fifth of the CNN's time on a CPU, torch.profiler) are gone. Outputs equal the
    unfolded model's up to float rounding (~1e-7). The copy cannot be trained or saved.
    """
    folded = copy.deepcopy(model).eval()
    body = folded.body
    for i in range(len(body) - 1):
        conv, bn = body[i], body[i + 1]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            body[i], body[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    for p in folded.parameters():
        p.requires_grad_(False)
    folded.kind = "classifier with folded batch norm"  # not a kind save_model writes
    return folded


# Nearest 2x upsampling then a 3x3 conv, phase by phase: output row 2i + a reads input rows
# (i - 1, i, i) for a = 0 and (i, i, i + 1) for a = 1, so taps landing on one input row add up.
# _PHASE_TAPS[a, r, t] = 1 where tap t of phase a lands on input row i + r - 1 (columns alike).
_PHASE_TAPS = ((1, 0, 0), (0, 1, 1), (0, 0, 0)), ((0, 0, 0), (1, 1, 0), (0, 0, 1))


class UpsampleConv(nn.Conv2d):
    """Nearest 2x upsampling followed by this 3x3 conv (padding 1), computed as one 3x3 conv at the
    input's resolution into four phase maps per output channel, then a pixel shuffle.

    Why: the autoencoder's last layer (to one channel at full resolution) ran at a fifth of the
    other layers' speed on a CPU, forward and backward; this form runs it 2-3x faster. Same
    parameters (the state-dict keys of a Conv2d), same function up to float rounding (taps that
    land on one input pixel are summed first).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)
        self.register_buffer(
            "taps", torch.tensor(_PHASE_TAPS, dtype=torch.float32), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = self.taps.to(self.weight.dtype)
        phases = torch.einsum("art,bsu,oitu->oabirs", taps, taps, self.weight)
        weight = phases.reshape(4 * self.out_channels, self.in_channels, 3, 3)
        bias = None if self.bias is None else self.bias.repeat_interleave(4)
        return F.pixel_shuffle(F.conv2d(x, weight, bias, padding=1), 2)


class Autoencoder(nn.Module):
    """Convolutional denoising autoencoder; `forward` returns a sigmoid reconstruction in [0, 1]."""

    kind = "autoencoder"

    def __init__(self, image_size: int, channels: Sequence[int], latent_channels: int) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be non-empty positive widths, got {channels}")
        if latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {latent_channels}")
        if image_size % 2 ** len(channels):
            raise ValueError(
                f"image_size {image_size} must be divisible by 2**{len(channels)} for this encoder"
            )
        self.hparams: dict[str, Any] = {
            "image_size": int(image_size),
            "channels": channels,
            "latent_channels": int(latent_channels),
        }
        enc: list[nn.Module] = []
        c_in = 1
        for c_out in channels:
            enc += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c_out
        enc.append(nn.Conv2d(c_in, latent_channels, 3, padding=1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = []
        c_in = latent_channels
        for level, c_out in enumerate(reversed(channels)):
            dec += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]
            if level < len(channels) - 1:  # the last upsampling is part of UpsampleConv
                dec.append(nn.Upsample(scale_factor=2, mode="nearest"))
            c_in = c_out
        dec += [UpsampleConv(c_in, 1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck [N, latent_channels, H / 2**depth, W / 2**depth]."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


_KINDS: dict[str, type[nn.Module]] = {"classifier": Classifier, "autoencoder": Autoencoder}


def save_model(model: Classifier | Autoencoder, path: str | Path) -> None:
    """Write {"kind", "hparams", "state_dict"} atomically and byte-reproducibly (CPU tensors)."""
    if model.kind not in _KINDS:
        raise ValueError(f"cannot save a {model.kind}: save the model it was made from")
    payload = {
        "kind": model.kind,
        "hparams": dict(model.hparams),
        "state_dict": {
            k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
        },  # the default layout whatever layout the model computed in
    }
    buffer = io.BytesIO()  # a file name would leak into the archive's record names
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _load(path: str | Path, kind: str, image_size: int | None) -> nn.Module:
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise PipelineError(f"{path}: model file not found (run the stage that trains it)") from exc
    except pickle.UnpicklingError as exc:
        raise PipelineError(
            f"{path}: refused to load: contains pickled objects other than tensors and plain "
            f"containers (not a model file written by save_model)"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise PipelineError(
            f"{path}: not a readable model file (truncated or corrupt?): {exc}"
        ) from exc
    if not isinstance(payload, dict) or not {"kind", "hparams", "state_dict"} <= set(payload):
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise PipelineError(
            f"{path}: not a model file written by save_model: expected a dict with keys "
            f"kind, hparams, state_dict; found {found}"
        )
    if payload["kind"] != kind:
        raise PipelineError(f"{path}: holds a {payload['kind']!r} model, expected a {kind!r}")
    hparams, state = payload["hparams"], payload["state_dict"]
    if not isinstance(hparams, dict) or not isinstance(state, dict):
        raise PipelineError(f"{path}: hparams and state_dict must be dicts")
    try:
        model = _KINDS[kind](**hparams)
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"{path}: invalid {kind} hyperparameters {hparams}: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        raise PipelineError(
            f"{path}: the weights do not fit a {kind} with hparams {hparams}: "
            f"{' '.join(line.strip() for line in first[:3])}"
        ) from exc
    if image_size is not None and hparams.get("image_size") != image_size:
        raise PipelineError(
            f"{path}: the {kind} expects {hparams.get('image_size')} px images, the data holds "
            f"{image_size} px (re-run the stage that trains it)"
        )
    return model.eval()


def _placed(model: nn.Module, device: str | torch.device) -> nn.Module:
    # channels-last: on a CPU these convolutions and poolings run 1.4-2.5x faster in NHWC, and
    # on a GPU cuDNN takes either; outputs differ from NCHW by float rounding only
    return model.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]


def load_classifier(
    path: str | Path, device: str | torch.device = "cpu", image_size: int | None = None
) -> Classifier:
    """Load a trained classifier, frozen for evaluation and attacks (`fold_batch_norm`); `path` is
    the model file or the directory holding MODEL_FILE.

    With `image_size`, a model trained for another size is refused with a message naming the file.
    """
    model = _load(path, "classifier", image_size)
    return _placed(fold_batch_norm(model), device)  # type: ignore[arg-type,return-value]


def load_autoencoder(
    path: str | Path, device: str | torch.device = "cpu", image_size: int | None = None
) -> Autoencoder:
    """Load an autoencoder in eval mode (`path` = model file or the directory holding MODEL_FILE).

    With `image_size`, a model trained for another size is refused with a message naming the file.
    """
    return _placed(_load(path, "autoencoder", image_size), device)  # type: ignore[return-value]


def batched_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    batch_size: int,
    device: str | torch.device,
) -> torch.Tensor:
    """Apply `fn` to `x` in batches on `device` under inference_mode; return a CPU float32 tensor.

    uint8 inputs are scaled to [0, 1] batch by batch, so large image sets never exist as float32.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device)
            batch = to_float(batch)
            outputs.append(fn(batch).float().cpu())
    if not outputs:
        raise ValueError("batched_apply on an empty input")
    return torch.cat(outputs)


def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int, device: str | torch.device
) -> torch.Tensor:
    """Logits [N, K] (CPU float32) of `model` in eval mode, batched; x float in [0, 1] or uint8."""
    model.eval()
    return batched_apply(model, x, batch_size, device)


def predict_features(
    model: Classifier, x: torch.Tensor, batch_size: int, device: str | torch.device
) -> torch.Tensor:
    """Penultimate features [N, D] (CPU float32) of a classifier in eval mode, batched."""
    model.eval()
    return batched_apply(model.features, x, batch_size, device)


def reconstruct(
    model: Autoencoder, x: torch.Tensor, batch_size: int, device: str | torch.device
) -> torch.Tensor:
    """Autoencoder reconstructions [N, 1, H, W] in [0, 1] (CPU float32), batched."""
    model.eval()
    return batched_apply(model, x, batch_size, device)


def predict_labels(
    model: nn.Module, x: np.ndarray, batch_size: int, device: str | torch.device
) -> np.ndarray:
    """Predicted class indices of float32 images (batched inference)."""
    model.eval()
    logits = batched_apply(model, torch.from_numpy(np.ascontiguousarray(x)), batch_size, device)
    return logits.argmax(1).numpy()


def channels_last(model: nn.Module) -> nn.Module:
    """Move conv weights to channels-last layout, in place.

    Why: on CPUs, oneDNN convolutions of these small nets run about 1.3x (CNN) to 2.5x
    (autoencoder) faster in NHWC, forward and backward; single-channel images need no conversion
    and the results agree to float rounding (~1e-8).
    """
    return model.to(memory_format=torch.channels_last)


# --------------------------------------------------------------------------- attack objectives


class DetectorAware(nn.Module):
    """Logits of `cnn` and, as one more column, the AE's reconstruction error / threshold."""

    def __init__(self, autoencoder: nn.Module, cnn: nn.Module, threshold: float) -> None:
        super().__init__()
        self.autoencoder, self.cnn, self.threshold = autoencoder, cnn, float(threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        err = (self.autoencoder(x) - x).pow(2).flatten(1).mean(1, keepdim=True)
        return torch.cat([self.cnn(x), err / self.threshold], dim=1)


class EvadeLoss(nn.Module):
    """Cross-entropy on the logits minus lam * normalised reconstruction error (PGD ascends it)."""

    def __init__(self, lam: float) -> None:
        super().__init__()
        self.lam = float(lam)

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels = target.argmax(1) if target.ndim == 2 else target
        ce = nn.functional.cross_entropy(out[:, :-1], labels.long(), reduction="none")
        return (ce - self.lam * torch.relu(out[:, -1] - 1.0) - 1e-3 * out[:, -1]).mean()


class NoisyAverage(nn.Module):
    """log E[softmax(model(x + sigma * noise))] over `samples` Gaussian draws (EOT)."""

    def __init__(self, model: nn.Module, sigma: float, samples: int) -> None:
        super().__init__()
        self.model, self.sigma, self.samples = model, float(sigma), int(samples)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noisy = x.repeat_interleave(self.samples, 0)
        noisy = noisy + self.sigma * torch.randn_like(noisy)
        probs = torch.softmax(self.model(noisy), 1).view(len(x), self.samples, -1).mean(1)
        return probs.clamp_min(1e-12).log()


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
