"""The paper's "convolutional denoising autoencoder": an encoder of stride-2 conv3x3 + ReLU
blocks with widths `channels`, a conv3x3 bottleneck to `latent_channels` maps of size
H / 2**len(channels); a mirrored decoder of conv3x3 + ReLU then nearest 2x upsampling per level,
and a final conv3x3 to one channel with a sigmoid, so reconstructions lie in [0, 1] (the last
upsampling and conv run as one, `UpsampleConv`). No batch norm:
train and eval mode compute the same function, which keeps attacks through the denoiser simple.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

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
