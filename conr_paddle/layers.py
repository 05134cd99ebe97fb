"""Tiny layer factories of the Paddle port (the Paddle side of conr_torch_ref/layers.py)."""
from __future__ import annotations

import paddle.nn as nn


class InstanceNorm(nn.Layer):
    """Affine instance norm (eps 1e-5, no running statistics) wrapped as `.norm`: params `*.norm.scale/bias`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2D(channels, epsilon=1e-5, momentum=0.9, data_format="NCHW")

    def forward(self, x):
        return self.norm(x)


def conv(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, bias: bool = True) -> nn.Conv2D:
    return nn.Conv2D(cin, cout, kernel_size=k, stride=stride, padding=padding, bias_attr=None if bias else False)


def deconv(cin: int, cout: int, k: int = 4, stride: int = 2, padding: int = 1, bias: bool = True) -> nn.Conv2DTranspose:
    return nn.Conv2DTranspose(
        cin, cout, kernel_size=k, stride=stride, padding=padding, output_padding=0, bias_attr=None if bias else False
    )
