"""Tiny layer factories shared by the reference networks (honouring every argument)."""
from __future__ import annotations

import torch.nn as nn


class InstanceNorm(nn.Module):
    """Affine instance norm without running statistics, wrapped as `.norm` (official MyNorm): keys `*.norm.weight`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, eps=1e-5, momentum=0.1, affine=True, track_running_stats=False)

    def forward(self, x):
        return self.norm(x)


def conv(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=padding, bias=bias)


def deconv(cin: int, cout: int, k: int = 4, stride: int = 2, padding: int = 1, bias: bool = True) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, kernel_size=k, stride=stride, padding=padding, output_padding=0, bias=bias)
