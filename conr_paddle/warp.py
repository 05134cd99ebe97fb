"""Backward warping with flows, Paddle side of conr_torch_ref/warp.py (official model/warplayer.py @ 660c4f7).

Every resampling argument is spelled out: Paddle's grid_sample defaults to align_corners=True and its
interpolate needs align_mode=0 to match torch's align_corners=False bilinear.

`flow2rgb` (a flow preview for humans) has no counterpart: nothing renders flows here.
Official names (megvii-research/CoNR @ 660c4f7, model/warplayer.py) -> ours (file:line):
- `warp` -> `warp` (conr_paddle/warp.py:53)
- `backwarp_tenGrid` -> `base_grid` (conr_paddle/warp.py:33)
  (built per call in the flow's dtype; no cache keyed by device and size)
- `tenHorizontal` -> `xs` (conr_paddle/warp.py:35)
- `tenVertical` -> `ys` (conr_paddle/warp.py:36)
- `tenFlow (normalised to [-1, 1])` -> `scaled` (conr_paddle/warp.py:57)
- `g` -> `grid` (conr_paddle/warp.py:58)
- `warp_features` -> `warp_grouped` (conr_paddle/warp.py:63)
- `groups, chns_per_group` -> `groups` (conr_paddle/warp.py:66)
- `F.interpolate(..., size=f_size, mode="bilinear") (model/shader.py)` -> `resize` (conr_paddle/warp.py:73)
- `CINN.flow_rescale (model/shader.py)` -> `rescale_flow` (conr_paddle/warp.py:83)
- `up_scale_factor` -> `factor` (conr_paddle/warp.py:88)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

if TYPE_CHECKING:
    from conr_paddle.ops import Ops


def base_grid(n: int, h: int, w: int, like: paddle.Tensor) -> paddle.Tensor:
    """(N, 2, H, W) identity grid: channel 0 is x in [-1, 1] along W, channel 1 is y along H."""
    xs = paddle.linspace(-1.0, 1.0, w, dtype=like.dtype).reshape([1, 1, 1, w]).expand([n, 1, h, w])
    ys = paddle.linspace(-1.0, 1.0, h, dtype=like.dtype).reshape([1, 1, h, 1]).expand([n, 1, h, w])
    return paddle.concat([xs, ys], axis=1)


def sampled_for_backward(x: paddle.Tensor, grid: paddle.Tensor) -> paddle.Tensor:
    """`x` as grid_sample may take it when a backward pass will run: Paddle 3.3.1's CPU GridSampleGradKernel
    segfaults (it resizes the missing input gradient) when the grid requires a gradient and the sampled input does
    not, CoNR's case whenever the flow trains. Then `x` is given as a detached leaf that requires a gradient (the
    same memory; its gradient is computed and dropped, nothing upstream sees it). Otherwise, and always under
    `no_grad` or in a static graph, `x` itself is returned: inference is unchanged."""
    if not (paddle.in_dynamic_mode() and paddle.is_grad_enabled()) or grid.stop_gradient or not x.stop_gradient:
        return x
    leaf = x.detach()
    leaf.stop_gradient = False
    return leaf


def warp(x: paddle.Tensor, flow: paddle.Tensor) -> paddle.Tensor:
    """Sample `x` (N, C, H, W) at pixel + `flow` (N, 2, H, W), with the grid geometry CoNR is trained with
    (align_corners=True, border padding). Safe to differentiate: `sampled_for_backward`."""
    n, _, h, w = x.shape
    scaled = paddle.concat([flow[:, 0:1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)], axis=1)
    grid = (base_grid(n, h, w, flow) + scaled).transpose([0, 2, 3, 1]).astype(x.dtype)  # (N, H, W, 2)
    return F.grid_sample(sampled_for_backward(x, grid), grid, mode="bilinear", padding_mode="border",
                         align_corners=True)


def warp_grouped(x: paddle.Tensor, flow: paddle.Tensor) -> paddle.Tensor:
    """Warp channel group g of `x` with flow channels (2g, 2g+1); C must divide into flow.shape[1] // 2 groups."""
    n, c, h, w = x.shape
    groups = flow.shape[1] // 2
    if flow.shape[1] % 2 or c % groups or flow.shape[0] != n or list(flow.shape[2:]) != list(x.shape[2:]):
        raise ValueError(f"warp_grouped: features {tuple(x.shape)} do not fit flow {tuple(flow.shape)}")
    out = warp(x.reshape([n * groups, c // groups, h, w]), flow.reshape([n * groups, 2, h, w]))
    return out.reshape([n, c, h, w])


def resize(x: paddle.Tensor, size: tuple[int, int], interpolate=None) -> paddle.Tensor:
    """Bilinear resize to `size`, the same sampling as torch's align_corners=False (align_mode=0).
    interpolate: a function of `F.interpolate`'s signature (`Ops.interpolate`), by default F.interpolate itself.
    (No module global as a default value: the static-graph tracer re-runs the def where the module's names are
    missing.)"""
    if interpolate is None:
        interpolate = F.interpolate
    return interpolate(x, size=list(size), mode="bilinear", align_corners=False, align_mode=0, data_format="NCHW")


def rescale_flow(flow: paddle.Tensor, width: int, interpolate=None) -> paddle.Tensor:
    """Resize a flow to `width` by a scale factor and scale its vectors alike (official CINN.flow_rescale).
    interpolate: as in `resize`."""
    if interpolate is None:
        interpolate = F.interpolate
    factor = width / flow.shape[-1]
    if factor == 1:
        return flow
    up = interpolate(
        flow, scale_factor=factor, mode="bilinear", align_corners=False, align_mode=0, data_format="NCHW"
    )
    return up * factor


class Warp(nn.Layer):
    """Parameter-free layer around `ops.warp`, so that layer hooks (parity reports) see every warp by name."""

    def __init__(self, ops: Ops) -> None:
        super().__init__()
        self.ops = ops

    def forward(self, x, flow):
        return self.ops.warp(x, flow)


class GroupedWarp(nn.Layer):
    def __init__(self, ops: Ops) -> None:
        super().__init__()
        self.ops = ops

    def forward(self, x, flow):
        return self.ops.warp_grouped(x, flow)


class Resize(nn.Layer):
    def __init__(self, ops: Ops) -> None:
        super().__init__()
        self.ops = ops

    def forward(self, x, size: tuple[int, int]):
        return resize(x, size, self.ops.interpolate)


class FlowRescale(nn.Layer):
    def __init__(self, ops: Ops) -> None:
        super().__init__()
        self.ops = ops

    def forward(self, flow, width: int):
        return rescale_flow(flow, width, self.ops.interpolate)
