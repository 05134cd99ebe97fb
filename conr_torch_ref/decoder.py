"""RGBA decoder: fused 64-channel shader features -> RGBA in [0, 1] (official model/decoder_small.py @ 660c4f7)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from conr_common.contract.config import DecoderConfig
from conr_torch_ref.layers import conv


class ResBlock2d(nn.Module):
    """x + conv2(relu(norm2(conv1(relu(norm1(x)))))) where the "norms" are 1x1 convolutions (official naming)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = conv(c, c, 3, 1, 1)
        self.conv2 = conv(c, c, 3, 1, 1)
        self.norm1 = conv(c, c, 1)
        self.norm2 = conv(c, c, 1)

    def forward(self, x):
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class RGBADecoderNet(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.conv_rgba = nn.Sequential(conv(cfg.channels, cfg.out_channels, 3, 1, 1))
        self.bottleneck = nn.Sequential()
        for i in range(cfg.blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(cfg.channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv_rgba(self.bottleneck(x)))
