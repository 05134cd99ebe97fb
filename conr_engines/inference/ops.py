"""The operators of the Paddle Inference graphs (`conr_engines.inference.export`): `export_ops(...)`, an `Ops`
(`conr_paddle.ops`) for `CoNR.with_ops`.

The custom operators of `conr_engines.inference.ext` (or matmul resizes without them), one-frame view repeats, and
for bf16 PReLU without the prelu op plus the float32 regions `bf16_marks` keeps (residual sums and PReLU sums as
subtractions, convolution biases apart). Why each variant exists (measured with Paddle 3.3.1): docs/predictor.md.
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Callable

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from conr_paddle.layers import AccurateConv2D
from conr_paddle.model import EAGER_OPS
from conr_paddle.ops import BlockOps, FuseViewsFn, InterpolateFn, Ops
from conr_paddle.shader import fusion_weights, repeat_views

if TYPE_CHECKING:
    from conr_engines.inference.ext import WarpOp

__all__ = ["export_ops", "bilinear_matrix", "interpolate_for_export", "add_as_subtract", "prelu_without_prelu_op",
           "repeat_views_one_frame", "flat_fusion_weights", "fuse_views_by", "conv_bias_apart"]


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


def interpolate_for_export(original: InterpolateFn, resize_op: Callable | None = None) -> InterpolateFn:
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
    """x + y written x - (-y): bit-identical, and subtract is not on oneDNN's bf16 list (`bf16_marks`)."""
    return x - (-y)


def prelu_without_prelu_op(x: paddle.Tensor, weight: paddle.Tensor, add: Callable | None = None) -> paddle.Tensor:
    """PReLU as relu(x) * (1 - w) + x * w: the same function with no oneDNN prelu op (broken in bf16). add: how
    the two terms are summed (`add_as_subtract` in float32 regions), by default `+` (no module global as a default
    value: the static-graph tracer re-runs the def where the module's names are missing)."""
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


def fuse_views_by(fuse: Callable) -> FuseViewsFn:
    """`fuse_views` computed by the `conr_fuse` operator `fuse(weights (B*M, K, h, w), flow, wref, message, m)`."""

    def fuse_views_custom(mask, flow, wref, message, m):
        return tuple(fuse(flat_fusion_weights(mask, m), flow, wref, message, m))

    return fuse_views_custom


def conv_bias_apart(layer: nn.Conv2D | nn.Conv2DTranspose, x: paddle.Tensor) -> paddle.Tensor:
    """The layer's convolution without bias, then its bias subtracted as its negative: the same numbers (a - (-b)
    is a + b exactly) as two ops, so that no fused conv+bias op appears in a traced graph (`bf16_marks`)."""
    if isinstance(layer, nn.Conv2DTranspose):
        out = F.conv2d_transpose(x, layer.weight, None, padding=layer._padding, output_padding=layer.output_padding,
                                 stride=layer._stride, dilation=layer._dilation, groups=layer._groups,
                                 data_format=layer._data_format)
    else:
        out = F.conv2d(x, layer.weight, None, stride=layer._stride, padding=layer._padding, dilation=layer._dilation,
                       groups=layer._groups, data_format=layer._data_format)
    if layer.bias is None:
        return out
    return out - (-layer.bias.unsqueeze([0, 2, 3]))  # unsqueeze: no bf16 kernel (reshape has one)


class BiasApartConv2D(AccurateConv2D):
    """`conr_paddle.layers.conv`'s layer (same parameters, same eager float64 path) whose bias is otherwise added
    as its own op (`conv_bias_apart`)."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.float64_forward(x) if self.computes_in_float64(x) else conv_bias_apart(self, x)


class BiasApartConv2DTranspose(nn.Conv2DTranspose):
    """`nn.Conv2DTranspose` (same parameters) whose bias is added as its own op (`conv_bias_apart`)."""

    def forward(self, x: paddle.Tensor, output_size=None) -> paddle.Tensor:
        return conv_bias_apart(self, x) if output_size is None else super().forward(x, output_size)


def conv_with_bias_apart(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0) -> nn.Conv2D:
    """`conr_paddle.layers.conv` (with bias) as a `BiasApartConv2D` (a `ConvFactory`)."""
    return BiasApartConv2D(cin, cout, kernel_size=k, stride=stride, padding=padding, bias_attr=None)


def deconv_with_bias_apart(cin: int, cout: int, k: int = 4, stride: int = 2, padding: int = 1) -> nn.Conv2DTranspose:
    """`conr_paddle.layers.deconv` (with bias) as a `BiasApartConv2DTranspose` (a `DeconvFactory`)."""
    return BiasApartConv2DTranspose(cin, cout, kernel_size=k, stride=stride, padding=padding, output_padding=0,
                                    bias_attr=None)


def float32_region_blocks(blocks: BlockOps) -> BlockOps:
    """`blocks` written for `bf16_marks` to keep in float32: residual sums and PReLU sums as subtractions,
    convolution biases apart."""
    return replace(blocks, prelu=partial(prelu_without_prelu_op, add=add_as_subtract), add=add_as_subtract,
                   conv=conv_with_bias_apart, deconv=deconv_with_bias_apart)


def export_ops(warp_op: WarpOp | None, bf16: bool = False, fp32_levels: int = 0) -> Ops:
    """The ops of the exported graphs: `conr_warp`, `conr_resize` and `conr_fuse` when `warp_op` was built (else
    grid_sample, matmul resizes and the eager fusion) and one-frame view repeats; for bf16, PReLU without the prelu
    op, and the decoder blocks of the last `fp32_levels` shader levels written for `bf16_marks` to keep in float32
    (`float32_region_blocks`)."""
    custom = warp_op is not None and warp_op.available
    ops = replace(EAGER_OPS, interpolate=interpolate_for_export(F.interpolate, warp_op.resize if custom else None),
                  repeat_views=repeat_views_one_frame)
    if custom:  # one op covers both warps: groups = flow channels / 2
        ops = replace(ops, warp=warp_op.function, warp_grouped=warp_op.function, fuse_views=fuse_views_by(warp_op.fuse))
    if not bf16:
        return ops
    ops = replace(ops, blocks=replace(ops.blocks, prelu=prelu_without_prelu_op))
    if not fp32_levels:
        return ops
    return replace(ops, last_blocks=float32_region_blocks(ops.blocks), last_levels=fp32_levels)
