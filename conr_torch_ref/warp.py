"""Backward warping with flows (official model/warplayer.py @ 660c4f7).

A flow holds pixel offsets; it is added to a [-1, 1] sampling grid (align_corners=True geometry) and the input is
sampled bilinearly with border padding. `warp_grouped` splits the channels into `flow.shape[1] // 2` groups, each
warped by its own 2-channel flow (CoNR's message passing uses 16 groups).
The grid is built per call in the flow's dtype and device: no module-level device, no cache keyed by size.

`flow2rgb` (a flow preview for humans) has no counterpart: nothing renders flows here.
Official names (megvii-research/CoNR @ 660c4f7, model/warplayer.py) -> ours (file:line):
- `warp` -> `warp` (conr_torch_ref/warp.py:37)
- `backwarp_tenGrid` -> `base_grid` (conr_torch_ref/warp.py:30)
  (built per call in the flow's dtype; no cache keyed by device and size)
- `tenHorizontal` -> `xs` (conr_torch_ref/warp.py:32)
- `tenVertical` -> `ys` (conr_torch_ref/warp.py:33)
- `tenFlow (normalised to [-1, 1])` -> `scaled` (conr_torch_ref/warp.py:40)
- `g` -> `grid` (conr_torch_ref/warp.py:41)
- `warp_features` -> `warp_grouped` (conr_torch_ref/warp.py:45)
- `groups, chns_per_group` -> `groups` (conr_torch_ref/warp.py:48)
- `F.interpolate(..., size=f_size, mode="bilinear") (model/shader.py)` -> `resize` (conr_torch_ref/warp.py:55)
- `CINN.flow_rescale (model/shader.py)` -> `rescale_flow` (conr_torch_ref/warp.py:60)
- `up_scale_factor` -> `factor` (conr_torch_ref/warp.py:64)
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def base_grid(n: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) identity grid: channel 0 is x in [-1, 1] along W, channel 1 is y along H."""
    xs = torch.linspace(-1.0, 1.0, w, dtype=like.dtype, device=like.device).view(1, 1, 1, w).expand(n, 1, h, w)
    ys = torch.linspace(-1.0, 1.0, h, dtype=like.dtype, device=like.device).view(1, 1, h, 1).expand(n, 1, h, w)
    return torch.cat([xs, ys], dim=1)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `x` (N, C, H, W) at pixel + `flow` (N, 2, H, W)."""
    n, _, h, w = x.shape
    scaled = torch.cat([flow[:, 0:1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)], dim=1)
    grid = (base_grid(n, h, w, flow) + scaled).permute(0, 2, 3, 1)  # (N, H, W, 2)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def warp_grouped(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Warp channel group g of `x` with flow channels (2g, 2g+1); C must divide into flow.shape[1] // 2 groups."""
    n, c, h, w = x.shape
    groups = flow.shape[1] // 2
    if flow.shape[1] % 2 or c % groups or flow.shape[0] != n or flow.shape[2:] != x.shape[2:]:
        raise ValueError(f"warp_grouped: features {tuple(x.shape)} do not fit flow {tuple(flow.shape)}")
    out = warp(x.reshape(n * groups, c // groups, h, w), flow.reshape(n * groups, 2, h, w))
    return out.reshape(n, c, h, w)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to `size` (align_corners=False, no antialias), as F.interpolate(..., mode="bilinear")."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)


def rescale_flow(flow: torch.Tensor, width: int) -> torch.Tensor:
    """Resize a flow to `width` by a scale factor and scale its vectors alike (official CINN.flow_rescale)."""
    # float(): the same number in eager mode; while the ONNX exporter traces, shapes are tensors, and a tensor scale
    # factor is refused by upsample_bilinear2d (shapes are fixed per export, so it is a constant there too)
    factor = float(width / flow.shape[-1])
    if factor == 1:
        return flow
    up = F.interpolate(flow, scale_factor=factor, mode="bilinear", align_corners=False, recompute_scale_factor=False)
    return up * factor


class Warp(nn.Module):
    """Parameter-free layer around `warp`, so that layer hooks (parity reports) see every warp by name."""

    def forward(self, x, flow):
        return warp(x, flow)


class GroupedWarp(nn.Module):
    def forward(self, x, flow):
        return warp_grouped(x, flow)


class Resize(nn.Module):
    def forward(self, x, size: tuple[int, int]):
        return resize(x, size)


class FlowRescale(nn.Module):
    def forward(self, flow, width: int):
        return rescale_flow(flow, width)
