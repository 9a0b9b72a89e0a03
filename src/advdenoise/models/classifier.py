"""What the pipeline needs of a classifier (`ClassifierNet`), and the paper's (`arch: paper`).

Every stage after train_cnn uses a classifier through `ClassifierNet`: logits (`forward`), the
penultimate features (`features`: embed, the feature-guided denoiser) and its conv -> batch-norm
pairs (`conv_bn_pairs`: `fold_batch_norm`). The architectures are registered in
`models.architectures`.

The paper gives no architecture. Its classifier here is a compact batch-norm conv net that trains
on a CPU: one block per entry of `channels`, each conv3x3 -> BatchNorm -> maxpool 2x2 -> ReLU, so a
64 px input leaves 4 x 4 maps after four blocks and a 224 px input 14 x 14. Pooling before the ReLU
is the usual conv-BN-ReLU-pool block bit for bit (ReLU is monotone, so it commutes with max, outputs
and gradients alike), with the ReLU on a quarter of the pixels. Inputs of 128 px and more first
pass a stride-2 conv3x3 stem (width channels[0], BN, ReLU): it halves the cost of the
first, most expensive block at the paper's 224 px without changing the receptive-field story.
Then global average pooling (the penultimate features), dropout and a linear layer giving the
logits. Input: N x 1 x H x W in [0, 1]; the net centres it by subtracting 0.5.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from advdenoise.models.architectures import arch_spec

if TYPE_CHECKING:
    from advdenoise.core.params import TrainCnnParams

STEM_MIN_SIZE = 128  # inputs this large get a stride-2 stem (see module docstring)


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class ClassifierNet(nn.Module):
    """A classifier of N x 1 x H x W images in [0, 1]: logits, penultimate features, and the
    conv -> batch-norm pairs that `fold_batch_norm` fuses. `kind` and `hparams` are its model
    file's (`models.files`): the class is rebuilt from them."""

    kind: str
    hparams: dict[str, Any]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """(parent module, conv attribute, batch-norm attribute): each BN that follows a conv."""
        raise NotImplementedError


class Classifier(ClassifierNet):
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

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        body = self.body
        return [
            (body, str(i), str(i + 1))
            for i in range(len(body) - 1)
            if isinstance(body[i], nn.Conv2d) and isinstance(body[i + 1], nn.BatchNorm2d)
        ]


def build_classifier(cfg: TrainCnnParams, image_size: int, num_classes: int) -> ClassifierNet:
    """An untrained classifier of train_cnn.arch, with its section `train_cnn.<arch>`."""
    section = dataclasses.asdict(getattr(cfg, cfg.arch))
    model: ClassifierNet = arch_spec(cfg.arch).load()(
        image_size=image_size, num_classes=num_classes, **section
    )
    return model


def fold_batch_norm(model: ClassifierNet) -> ClassifierNet:
    """A frozen eval-mode copy of a trained classifier with each batch norm folded into its conv.

    Why: after train_cnn the CNN is only evaluated and attacked, where batch norm is a fixed
    per-channel affine map. Folded into the conv's weights and bias, its forward and backward
    passes (a fifth of the CNN's time on a CPU, torch.profiler) are gone. Outputs equal the
    unfolded model's up to float rounding (~1e-7). The copy cannot be trained or saved.
    """
    folded = copy.deepcopy(model).eval()
    for parent, conv, bn in folded.conv_bn_pairs():
        fused = fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn))
        setattr(parent, conv, fused)
        setattr(parent, bn, nn.Identity())
    for p in folded.parameters():
        p.requires_grad_(False)
    folded.kind = "classifier with folded batch norm"  # not a kind save_model writes
    return folded
