"""The operators CoNR's layers call where an exported graph needs another op than the eager model: `Ops`.

A model is built with one `Ops` (`CoNR(config, ops)`, `CoNR.with_ops`) and its layers call what it holds, so the
model file shows every path it can take and nothing is swapped behind its back:
- `EAGER_OPS`: the eager model, the parity reference (grid_sample warps, bilinear_interp resizes, the prelu op);
- `export_ops(...)`: the static graphs of `conr_engines.inference.export` (the custom operators of `conr_engines.inference.ext` or
  matmul resizes, one-frame view repeats, and for bf16 PReLU without the prelu op plus float32 regions);
- `conr_engines.onnx.graphs.ONNX_OPS`: the graphs converted to ONNX.
Why each export variant exists (measured with Paddle 3.3.1): docs/predictor.md.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Callable

import numpy as np
import paddle
import paddle.nn.functional as F

from conr_paddle.layers import prelu
from conr_paddle.shader import fuse_views, fusion_weights, repeat_views
from conr_paddle.warp import warp, warp_grouped

if TYPE_CHECKING:
    from conr_engines.inference.ext import WarpOp

__all__ = ["Ops", "EAGER_OPS", "export_ops"]


@dataclass(frozen=True)
class Ops:
    """What the shader and its decoder blocks call.

    warp(x (N, C, H, W), flow (N, 2, H, W)); warp_grouped(x, flow (N, 2G, H, W)): channel group g by flow 2g..2g+1;
    interpolate: `F.interpolate`'s signature; fuse_views / repeat_views: `conr_paddle.shader`'s signatures;
    prelu(x, weight); add(x, y): the residual sums of the decoder blocks; conv_bias_apart: their convolutions add
    the bias as a separate op (`conr_paddle.layers.conv_bias_apart`). tail: the ops of the decoder blocks of the
    last `tail_levels` shader levels, when they differ (`for_level`)."""

    warp: Callable
    warp_grouped: Callable
    interpolate: Callable
    fuse_views: Callable
    repeat_views: Callable
    prelu: Callable
    add: Callable
    conv_bias_apart: bool = False
    tail: Ops | None = None
    tail_levels: int = 0

    def for_level(self, level: int, levels: int) -> Ops:
        """The ops of the decoder block of shader level `level` (of `levels`)."""
        return self.tail if self.tail is not None and level >= levels - self.tail_levels else self


EAGER_OPS = Ops(warp=warp, warp_grouped=warp_grouped, interpolate=F.interpolate, fuse_views=fuse_views,
                repeat_views=repeat_views, prelu=prelu, add=operator.add)


def bilinear_matrix(n_in: int, n_out: int, ratio: float) -> np.ndarray:
    """(n_in, n_out) weights of 1-D bilinear resampling, half-pixel centres (align_corners=False, align_mode=0),
    the index arithmetic of Paddle's bilinear_interp CPU kernel (source clamped at 0, neighbour at n_in - 1)."""
    m = np.zeros((n_in, n_out), dtype=np.float64)
    for i in range(n_out):
        src = max(ratio * (i + 0.5) - 0.5, 0.0)
        i0 = int(src)
        i1 = min(i0 + 1, n_in - 1)
        lam = np.float32(src - i0)
        m[i0, i] += 1.0 - lam
        m[i1, i] += lam
    return m.astype(np.float32)


def interpolate_for_export(original: Callable, resize_op: Callable | None = None) -> Callable:
    """`original` (F.interpolate) with its NCHW half-pixel bilinear resizes done by `resize_op(x, out_h, out_w)`
    (`conr_resize`) or, without it, as x @ Wx then Wy @ x with constant matrices (`bilinear_matrix`): PIR
    bilinear_interp does not run under oneDNN (docs/predictor.md). Any other call goes to `original`."""

    def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=False, align_mode=0,
                    data_format="NCHW", **kwargs):
        if mode != "bilinear" or align_corners or align_mode != 0 or data_format != "NCHW" or kwargs:
            return original(x, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners,
                            align_mode=align_mode, data_format=data_format, **kwargs)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if size is not None:
            oh, ow = int(size[0]), int(size[1])
            rh, rw = h / oh, w / ow
        else:
            sh, sw = (scale_factor, scale_factor) if np.isscalar(scale_factor) else scale_factor
            oh, ow = int(h * sh), int(w * sw)
            rh, rw = 1.0 / sh, 1.0 / sw
        if (oh, ow) == (h, w):
            return x
        if resize_op is not None:
            return resize_op(x, oh, ow)
        wx = paddle.to_tensor(bilinear_matrix(w, ow, rw))  # (W, W')
        wy = paddle.to_tensor(bilinear_matrix(h, oh, rh).T.copy())  # (H', H)
        return paddle.matmul(wy, paddle.matmul(x, wx))  # (N, C, H', W')

    return interpolate


def add_as_subtract(x: paddle.Tensor, y: paddle.Tensor) -> paddle.Tensor:
    """x + y written x - (-y): bit-identical, and subtract is not on oneDNN's bf16 list (`conr_engines.inference.bf16_marks`)."""
    return x - (-y)


def prelu_without_prelu_op(x: paddle.Tensor, weight: paddle.Tensor, add: Callable | None = None) -> paddle.Tensor:
    """PReLU as relu(x) * (1 - w) + x * w: the same function with no oneDNN prelu op (broken in bf16). add: how
    the two terms are summed (`add_as_subtract` in float32 regions), by default `+` (no module global as a default
    value: see `conr_paddle.warp.resize`)."""
    w = weight.reshape([1, -1, 1, 1]) if weight.shape[0] > 1 else weight
    if add is None:
        return F.relu(x) * (1.0 - w) + x * w
    return add(F.relu(x) * (1.0 - w), x * w)


def repeat_views_one_frame(x: paddle.Tensor, m: int) -> paddle.Tensor:
    """`repeat_views` for one frame (1, ...) -> (M, ...) as one broadcast: a batch-1 graph needs no
    unsqueeze/reshape around the expand (reshapes of oneDNN's blocked layouts are copies)."""
    return x.expand([m] + list(x.shape[1:])) if x.shape[0] == 1 else repeat_views(x, m)


def flat_fusion_weights(mask: paddle.Tensor, m: int) -> paddle.Tensor:
    """fusion_weights(mask, m) as (B*M, K, h, w); for one frame (B*M == M) the softmax runs over axis 0 directly,
    the same numbers without the reshapes to (B, M, ...) and back."""
    if mask.shape[0] == m:
        return F.softmax(mask, axis=0) * mask
    return fusion_weights(mask, m).reshape(mask.shape)


def fuse_views_by(fuse: Callable) -> Callable:
    """`fuse_views` computed by the `conr_fuse` operator `fuse(weights (B*M, K, h, w), flow, wref, message, m)`."""

    def fuse_views_custom(mask, flow, wref, message, m):
        return tuple(fuse(flat_fusion_weights(mask, m), flow, wref, message, m))

    return fuse_views_custom


def export_ops(warp_op: WarpOp | None, bf16: bool = False, fp32_levels: int = 0) -> Ops:
    """The ops of the exported graphs: `conr_warp`, `conr_resize` and `conr_fuse` when `warp_op` was built (else
    grid_sample, matmul resizes and the eager fusion) and one-frame view repeats; for bf16, PReLU without the prelu
    op, and the decoder blocks of the last `fp32_levels` shader levels written for `bf16_marks` to keep in float32
    (residual sums and PReLU sums as subtractions, convolution biases apart)."""
    custom = warp_op is not None and warp_op.available
    ops = replace(EAGER_OPS, interpolate=interpolate_for_export(F.interpolate, warp_op.resize if custom else None),
                  repeat_views=repeat_views_one_frame)
    if custom:  # one op covers both warps: groups = flow channels / 2
        ops = replace(ops, warp=warp_op.function, warp_grouped=warp_op.function, fuse_views=fuse_views_by(warp_op.fuse))
    if not bf16:
        return ops
    ops = replace(ops, prelu=prelu_without_prelu_op)
    if not fp32_levels:
        return ops
    kept = replace(ops, prelu=partial(prelu_without_prelu_op, add=add_as_subtract), add=add_as_subtract,
                   conv_bias_apart=True)
    return replace(ops, tail=kept, tail_levels=fp32_levels)
