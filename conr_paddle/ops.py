"""The operators CoNR's shader calls where an exported graph needs another op than the eager model: `Ops`.

A model is built with one `Ops` (`CoNR(config, ops)`, `CoNR.with_ops`) and its shader calls what it holds, so the
model file shows every path it can take and nothing is swapped behind its back. This module only defines the types
(it imports nothing of the port); the values live where their functions do:
- `conr_paddle.model.EAGER_OPS`: the eager model, the parity reference (grid_sample warps, bilinear_interp resizes,
  the prelu op);
- `conr_engines.inference.ops.export_ops(...)`: the static graphs of the Paddle Inference engine;
- `conr_engines.onnx.ops.ONNX_OPS`: the graphs converted to ONNX.
Why each export variant exists (measured with Paddle 3.3.1): docs/predictor.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import paddle
import paddle.nn as nn

__all__ = ["Ops", "BlockOps", "WarpFn", "InterpolateFn", "FuseViewsFn", "RepeatViewsFn", "PReLUFn", "AddFn",
           "ConvFactory", "DeconvFactory"]


class WarpFn(Protocol):
    """Sample x (N, C, H, W) at pixel + flow (N, 2G, H, W): channel group g by flow channels 2g..2g+1."""

    def __call__(self, x: paddle.Tensor, flow: paddle.Tensor) -> paddle.Tensor: ...


class InterpolateFn(Protocol):
    """`paddle.nn.functional.interpolate` as the shader calls it (bilinear, by `size` or by `scale_factor`)."""

    def __call__(self, x: paddle.Tensor, size: list[int] | None = None, scale_factor: float | None = None,
                 mode: str = "nearest", align_corners: bool = False, align_mode: int = 0,
                 data_format: str = "NCHW") -> paddle.Tensor: ...


class FuseViewsFn(Protocol):
    """Cross-view fusion (`conr_paddle.shader.fuse_views`): mask, flow, warped reference and message (B*M, ...)
    -> fused flow, reference and message (B, ...)."""

    def __call__(self, mask: paddle.Tensor, flow: paddle.Tensor, wref: paddle.Tensor, message: paddle.Tensor,
                 m: int) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]: ...


class RepeatViewsFn(Protocol):
    """(B, ...) -> (B*M, ...), each sample repeated for its M views (`conr_paddle.shader.repeat_views`)."""

    def __call__(self, x: paddle.Tensor, m: int) -> paddle.Tensor: ...


class PReLUFn(Protocol):
    """PReLU of x (N, C, H, W) with slopes `weight` (C,) or (1,)."""

    def __call__(self, x: paddle.Tensor, weight: paddle.Tensor) -> paddle.Tensor: ...


class AddFn(Protocol):
    """The residual sum x + y of a decoder block."""

    def __call__(self, x: paddle.Tensor, y: paddle.Tensor) -> paddle.Tensor: ...


class ConvFactory(Protocol):
    """A 2-D convolution layer with bias (parameters `weight`, `bias`), as `conr_paddle.layers.conv` builds one."""

    def __call__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0) -> nn.Conv2D: ...


class DeconvFactory(Protocol):
    """A transposed convolution layer with bias, as `conr_paddle.layers.deconv` builds one."""

    def __call__(self, cin: int, cout: int, k: int = 4, stride: int = 2, padding: int = 1) -> nn.Conv2DTranspose: ...


@dataclass(frozen=True)
class BlockOps:
    """What one shader decoder block calls: its PReLU, its residual sum, and the factories of its convolution layers
    (the layers are built by the block, so a factory may give another forward; the parameter names never change)."""

    prelu: PReLUFn
    add: AddFn
    conv: ConvFactory
    deconv: DeconvFactory


@dataclass(frozen=True)
class Ops:
    """What the shader calls: warp (x (N, C, H, W), flow (N, 2, H, W)), warp_grouped (flow (N, 2G, H, W)), the
    resizes (`interpolate`), the cross-view fusion and the view repeat; `blocks`: the ops of its decoder blocks,
    except those of the last `last_levels` shader levels, which use `last_blocks` when it is set."""

    warp: WarpFn
    warp_grouped: WarpFn
    interpolate: InterpolateFn
    fuse_views: FuseViewsFn
    repeat_views: RepeatViewsFn
    blocks: BlockOps
    last_blocks: BlockOps | None = None
    last_levels: int = 0

    def block_ops(self, level: int, levels: int) -> BlockOps:
        """The ops of the decoder block of shader level `level` (of `levels`)."""
        if self.last_blocks is not None and level >= levels - self.last_levels:
            return self.last_blocks
        return self.blocks
