"""The operators of the Paddle graphs converted to ONNX: `ONNX_OPS`, an `Ops` (`conr_paddle.ops`) for
`CoNR.with_ops`, measured with paddle2onnx 2.1.0 and onnxruntime 1.32 on CPU:
- a bilinear resize given by `scale_factor` becomes one given by its explicit output size: paddle2onnx rejects the
  former; CoNR only scales by powers of two, where both give the same sampling;
- softmax(mask over the views) is written out as exp(x - max) / sum: onnxruntime's Softmax over a non-last axis
  transposes around a last-axis kernel (0.18-0.20 s of a 1.0 s frame at 128 px); the written-out form is
  elementwise work plus two small reductions.
Nothing else changes: every other op (GridSample, InstanceNormalization, PRelu, ConvTranspose, Resize) maps to a
standard ONNX op as the eager model calls it.
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial

import paddle
import paddle.nn.functional as F

from conr_paddle.model import EAGER_OPS
from conr_paddle.ops import InterpolateFn
from conr_paddle.shader import _views, fuse_views

__all__ = ["ONNX_OPS", "interpolate_by_size"]


def _softmax_written_out(x: paddle.Tensor, axis: int) -> paddle.Tensor:
    e = paddle.exp(x - paddle.max(x, axis=axis, keepdim=True))
    return e / paddle.sum(e, axis=axis, keepdim=True)


def _fusion_weights_written_out(mask: paddle.Tensor, m: int) -> paddle.Tensor:
    """shader.fusion_weights with the softmax as exp / max / sum (module docstring)."""
    vm = _views(mask, m)  # (B, M, K, h, w)
    return _softmax_written_out(vm, 1) * vm


def interpolate_by_size(original: InterpolateFn) -> InterpolateFn:
    """`original` (F.interpolate) whose bilinear `scale_factor` calls pass the explicit output size instead."""

    def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=False, align_mode=0,
                    data_format="NCHW", **kwargs):
        if scale_factor is not None and size is None:
            sh, sw = (scale_factor, scale_factor) if not isinstance(scale_factor, (list, tuple)) else scale_factor
            size = [int(int(x.shape[-2]) * sh), int(int(x.shape[-1]) * sw)]
            scale_factor = None
        return original(x, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners,
                        align_mode=align_mode, data_format=data_format, **kwargs)

    return interpolate


# The ONNX-friendly resize and fusion (module docstring); everything else as the eager model computes it.
ONNX_OPS = replace(EAGER_OPS, interpolate=interpolate_by_size(F.interpolate),
                   fuse_views=partial(fuse_views, weights=_fusion_weights_written_out))
