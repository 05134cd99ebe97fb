"""RGBA decoder, Paddle side of conr_torch_ref/decoder.py (official model/decoder_small.py @ 660c4f7)."""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from conr_common.contract.config import DecoderConfig
from conr_paddle.layers import conv


class ResBlock2d(nn.Layer):
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


class RGBADecoderNet(nn.Layer):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.conv_rgba = nn.Sequential(conv(cfg.channels, cfg.out_channels, 3, 1, 1))
        self.bottleneck = nn.Sequential()
        for i in range(cfg.blocks):
            self.bottleneck.add_sublayer(f"r{i}", ResBlock2d(cfg.channels))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.sigmoid(self.conv_rgba(self.bottleneck(x)))
