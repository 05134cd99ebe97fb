"""The Paddle graphs exported to ONNX (`convert.onnx_export`): thin layers over the eager model, the step traced with
the operators the ONNX path needs (`ONNX_OPS`).

Graphs (fixed shapes: Paddle 3.3.1 cannot export a dynamic view count):
- `sheet`: sheet (M, 4, S, S) -> feat0..feat4 (the parser's encoder features, deepest first) and reference
  (M, 4, S, S); float32 (the eager runners parse the sheet in float64, `CoNR.parse_sheet`);
- `step`: xyz (B, 3, S, S), alpha (B, 1, S, S), feat0..feat4, reference -> rgba (B, 4, S, S) and the fused shader
  message of every level, message0..message5 (B, C_k, h_k, w_k); message5 is what the RGBA decoder reads;
- `pose`: rgb (B, 3, S, S) -> udp (B, 4, S, S).

`StepGraph` traces `model.with_ops(ONNX_OPS)` (the same parameters), measured with paddle2onnx 2.1.0 and
onnxruntime 1.32 on CPU:
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
import paddle.nn as nn
import paddle.nn.functional as F

from conr_paddle.model import CoNR, Sheet, broadcast_sheet, encode_sheet, premultiply
from conr_paddle.ops import EAGER_OPS
from conr_paddle.shader import _views, fuse_views

__all__ = ["SheetGraph", "StepGraph", "PoseGraph", "ONNX_OPS", "graph_io", "GRAPHS", "LEVELS"]

GRAPHS = ("sheet", "step", "pose")
LEVELS = 6


def graph_io(size: int, views: int, batch: int, feature_shapes: list[list[int]],
             message_shapes: list[list[int]]) -> dict[str, dict[str, dict[str, list[int]]]]:
    """Input and output names with their shapes, per graph: the contract of both frameworks' ONNX files."""
    feats = {f"feat{i}": s for i, s in enumerate(feature_shapes)}
    ref = {"reference": [views, 4, size, size]}
    return {
        "sheet": {"inputs": {"sheet": [views, 4, size, size]}, "outputs": {**feats, **ref}},
        "step": {
            "inputs": {"xyz": [batch, 3, size, size], "alpha": [batch, 1, size, size], **feats, **ref},
            "outputs": {"rgba": [batch, 4, size, size],
                        **{f"message{k}": [batch] + s for k, s in enumerate(message_shapes)}},
        },
        "pose": {"inputs": {"rgb": [batch, 3, size, size]}, "outputs": {"udp": [batch, 4, size, size]}},
    }


class SheetGraph(nn.Layer):
    def __init__(self, model: CoNR) -> None:
        super().__init__()
        self.udpparsernet = model.udpparsernet

    def forward(self, sheet):
        rgb, alpha = sheet[:, :3], sheet[:, 3:4]
        features = encode_sheet(self.udpparsernet, rgb)
        return (*features, paddle.concat([alpha * rgb, alpha], axis=1))


class StepGraph(nn.Layer):
    """CoNR.render without the eager checks, returning the fused message of every shader level too; computed by
    `model.with_ops(ONNX_OPS)`."""

    def __init__(self, model: CoNR) -> None:
        super().__init__()
        model = model.with_ops(ONNX_OPS)
        self.target_pose_encoder = model.target_pose_encoder
        self.shader = model.shader
        self.rgbadecodernet = model.rgbadecodernet

    def forward(self, xyz, alpha, feat0, feat1, feat2, feat3, feat4, reference):
        target = CoNR.encode_target(self, xyz, alpha)
        sheet = Sheet(features=[feat0, feat1, feat2, feat3, feat4], reference=reference)
        levels = self.shader.run_levels(target, *broadcast_sheet(sheet, xyz.shape[0]))
        rgba = premultiply(self.rgbadecodernet(levels[-1]["message"]))
        return (rgba, *[lv["message"] for lv in levels])


class PoseGraph(nn.Layer):
    """The parser path of `CoNR.parse_pose` over the model's own sub-network: the pose graph of the predictor
    (`conr_engines.inference.export`) and of the ONNX export alike."""

    def __init__(self, model: CoNR) -> None:
        super().__init__()
        self.udpparsernet = model.udpparsernet

    def forward(self, rgb):
        return CoNR.parse_pose(self, rgb)


def _softmax_written_out(x: paddle.Tensor, axis: int) -> paddle.Tensor:
    e = paddle.exp(x - paddle.max(x, axis=axis, keepdim=True))
    return e / paddle.sum(e, axis=axis, keepdim=True)


def _fusion_weights_written_out(mask: paddle.Tensor, m: int) -> paddle.Tensor:
    """shader.fusion_weights with the softmax as exp / max / sum (module docstring)."""
    vm = _views(mask, m)  # (B, M, K, h, w)
    return _softmax_written_out(vm, 1) * vm


def interpolate_by_size(original):
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
