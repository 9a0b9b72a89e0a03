"""ResNet-18 (He et al. 2016), `arch: resnet18`: the standard architecture beside the paper's CNN.

torchvision's ResNet-18 with random weights (nothing is downloaded), a one-channel stem (conv7x7,
stride 2, 64 filters: the ImageNet stem for grey images) and `num_classes` outputs. It centres its
input by subtracting 0.5, as the paper's CNN does; the penultimate features are the 512 channels
after global average pooling.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models import resnet18

from advdenoise.models.classifier import ClassifierNet


class ResNet18(ClassifierNet):
    """torchvision's resnet18(weights=None) for N x 1 x H x W images in [0, 1]."""

    kind = "resnet18"

    def __init__(self, image_size: int, num_classes: int = 2, zero_init_residual: bool = False):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.hparams: dict[str, Any] = {
            "image_size": int(image_size),
            "num_classes": int(num_classes),
            "zero_init_residual": bool(zero_init_residual),
        }
        net = resnet18(weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(
            net.conv1.weight, mode="fan_out", nonlinearity="relu"
        )  # as torchvision
        self.net = net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, 512] (after global average pooling)."""
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x - 0.5))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return torch.flatten(n.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.fc(self.features(x))

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        n = self.net
        pairs: list[tuple[nn.Module, str, str]] = [(n, "conv1", "bn1")]
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
            for block in layer:
                pairs += [(block, "conv1", "bn1"), (block, "conv2", "bn2")]
                if block.downsample is not None:
                    pairs.append((block.downsample, "0", "1"))
        return [p for p in pairs if isinstance(getattr(p[0], p[2]), nn.BatchNorm2d)]
