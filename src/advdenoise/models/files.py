"""Pickle-free model files, and loading them onto a device.

Model files hold {"kind", "hparams", "state_dict"} only (strings, numbers, lists, tensors), written
atomically with torch.save and read with `weights_only=True`; nothing is ever unpickled.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from advdenoise.core.errors import PipelineError
from advdenoise.core.io import atomic_path
from advdenoise.models import architectures
from advdenoise.models.autoencoder import Autoencoder
from advdenoise.models.classifier import ClassifierNet, fold_batch_norm

MODEL_FILE = "model.pt"


def _class(kind: str) -> Callable[..., nn.Module]:
    """The class a file of `kind` rebuilds: the autoencoder, or an architecture's classifier
    (imported only now: torchvision loads only for a ResNet)."""
    return Autoencoder if kind == Autoencoder.kind else architectures.KINDS[kind].load()


CLASSIFIER_KINDS = tuple(architectures.KINDS)


def save_model(model: ClassifierNet | Autoencoder, path: str | Path) -> None:
    """Write {"kind", "hparams", "state_dict"} atomically and byte-reproducibly (CPU tensors)."""
    if model.kind not in (*CLASSIFIER_KINDS, Autoencoder.kind):
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


def _load(path: str | Path, kinds: tuple[str, ...], image_size: int | None) -> nn.Module:
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
    kind = payload["kind"]
    if kind not in kinds:
        expected = " or ".join(repr(k) for k in kinds)
        raise PipelineError(f"{path}: holds a {kind!r} model, expected a {expected}")
    hparams, state = payload["hparams"], payload["state_dict"]
    if not isinstance(hparams, dict) or not isinstance(state, dict):
        raise PipelineError(f"{path}: hparams and state_dict must be dicts")
    try:
        model = _class(kind)(**hparams)
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
) -> ClassifierNet:
    """Load a trained classifier of any architecture, frozen for evaluation and attacks
    (`fold_batch_norm`); `path` is the model file or the directory holding MODEL_FILE.

    With `image_size`, a model trained for another size is refused with a message naming the file.
    """
    model = _load(path, CLASSIFIER_KINDS, image_size)
    return _placed(fold_batch_norm(model), device)  # type: ignore[arg-type,return-value]


def load_autoencoder(
    path: str | Path, device: str | torch.device = "cpu", image_size: int | None = None
) -> Autoencoder:
    """Load an autoencoder in eval mode (`path` = model file or the directory holding MODEL_FILE).

    With `image_size`, a model trained for another size is refused with a message naming the file.
    """
    return _placed(_load(path, (Autoencoder.kind,), image_size), device)  # type: ignore[return-value]
