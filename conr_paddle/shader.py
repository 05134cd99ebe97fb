"""CINN shader, Paddle side of conr_torch_ref/shader.py (official model/shader.py @ 660c4f7).

Per-level flow decoders run on all sheet views as one batch (B*M), fused across views at every level with
softmax(mask over the view axis) * mask; see the torch side for the data flow.

Official names (megvii-research/CoNR @ 660c4f7, model/shader.py) -> ours (file:line):
- `DecoderBlock` -> `DecoderBlock` (conr_paddle/shader.py:56): one pyramid level's flow decoder
- `DecoderBlock.forward` -> `DecoderBlock.forward` (conr_paddle/shader.py:73)
  (the residual conv blocks, input concatenated by the caller)
- `flow, mask, message, message_flow, local_message, ...` -> `_split_outputs` (conr_paddle/shader.py:110)
  (the block's output channels, in the official order)
- `CINN` -> `CINN` (conr_paddle/shader.py:123)
- `CINN.forward` -> `CINN.run_levels` (conr_paddle/shader.py:149)
  (every level; `CINN.forward` keeps the last fused message)
- `self.decoder_blocks` -> `decoder_blocks` (conr_paddle/shader.py:138): checkpoint keys unchanged
- `in_planes + each_*_chn` -> `ShaderConfig.in_channels` (conr_common/contract/config.py:91)
  (a block's input channels)
- `pyrlevel, ifblock` -> `level` (conr_paddle/shader.py:161): with `block`
- `for view_id in range(x_reference.shape[1])` -> `ref` (conr_paddle/shader.py:152): views run as one batch of B*M
- `x_reference_features[pyrlevel][:, view_id]` -> `feats` (conr_paddle/shader.py:153)
  (every view's sheet features, (B*M, C, h, w))
- `scaled_x_target` -> `repeat_views` (conr_paddle/shader.py:85): target features repeated for each view
- `residual_flow` -> `residual` (conr_paddle/shader.py:176)
  (with `message`, `message_flow`, `local`, `local_flow`, `mask`)
- `accumulated_flow` -> `flow` (conr_paddle/shader.py:177)
- `CINN.apply_flow` -> `size` (conr_paddle/shader.py:180): from here to `feat`: resize and warp to the next level
- `CINN.flow_rescale` -> `rescale_flow` (conr_paddle/warp.py:83)
- `F.interpolate(..., size=f_size, mode="bilinear")` -> `resize` (conr_paddle/warp.py:73)
- `warp_features` -> `warp_grouped` (conr_paddle/warp.py:63): message and local message warps
- `feat_ev` -> `nxt` (conr_paddle/shader.py:179): the next level's sheet features
- `warp_x_reference` -> `wref` (conr_paddle/shader.py:186)
- `warp_x_reference_features` -> `feat` (conr_paddle/shader.py:187)
- `stacked_contrib` -> `fusion_weights` (conr_paddle/shader.py:91): softmax over the views, times the mask
- `weighted_flow, weighted_wref, weighted_mesg` -> `fuse_views` (conr_paddle/shader.py:97)
  (the torch.sum over the views)
- `y_weighted_flow[-1], y_weighted_x_reference[-1]` -> `fused_flow` (conr_paddle/shader.py:191): with `fused_wref`
- `y_weighted_message[-1]` -> `fused_msg` (conr_paddle/shader.py:193)
- `"y_last_remote_features"` -> `out` (conr_paddle/shader.py:154): per level: fused flow, reference and message
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from conr_common.contract.config import ShaderConfig
from conr_paddle.layers import PReLU
from conr_paddle.warp import FlowRescale, GroupedWarp, Resize, Warp

if TYPE_CHECKING:
    from conr_paddle.ops import BlockOps, Ops


class DecoderBlock(nn.Layer):
    """ops: its PReLU, its residual sum and the factories of its convolution layers (`BlockOps`)."""

    def __init__(self, cin: int, c: int, block_nums: int, out_channels: int, ops: BlockOps) -> None:
        super().__init__()
        self.ops = ops

        def conv_prelu(cin_: int, stride: int) -> list[nn.Layer]:
            return [ops.conv(cin_, c, 3, stride, 1), PReLU(c, ops.prelu)]

        self.conv0 = nn.Sequential(*conv_prelu(cin, 2), *conv_prelu(c, 2))
        self.convblocks = nn.LayerList(
            [nn.Sequential(*[m for _ in range(6) for m in conv_prelu(c, 1)]) for _ in range(block_nums)]
        )
        self.conv_last = nn.Sequential(ops.deconv(c, c, 4, 2, 1), PReLU(c, ops.prelu),
                                       ops.deconv(c, out_channels, 4, 2, 1))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        feat = self.conv0(x)
        for block in self.convblocks:
            feat = self.ops.add(block(feat), feat)
        return self.conv_last(feat)


def _views(x: paddle.Tensor, m: int) -> paddle.Tensor:
    """(B*M, ...) -> (B, M, ...)"""
    return x.reshape([-1, m] + list(x.shape[1:]))


def repeat_views(x: paddle.Tensor, m: int) -> paddle.Tensor:
    """(B, ...) -> (B*M, ...), each sample repeated for its M views."""
    tail = list(x.shape[1:])
    return x.unsqueeze(1).expand([x.shape[0], m] + tail).reshape([-1] + tail)


def fusion_weights(mask: paddle.Tensor, m: int) -> paddle.Tensor:
    """(B*M, K, h, w) masks -> (B, M, K, h, w) weights softmax(mask over the M views) * mask."""
    vm = _views(mask, m)
    return F.softmax(vm, axis=1) * vm


def fuse_views(mask: paddle.Tensor, flow: paddle.Tensor, wref: paddle.Tensor, message: paddle.Tensor, m: int,
               weights=None):
    """Cross-view fusion: weights softmax(mask over the M views) * mask; mask channel 0 weighs the flow and the
    warped reference, channels 2.. the message channels (channel 1 is unused). Inputs are (B*M, ...), outputs
    (B, ...): fused flow, fused reference, fused message. weights: a function computing the (B, M, K, h, w) weights
    another way, by default `fusion_weights` (no module global as a default value: see `warp.resize`)."""
    weight = (weights if weights is not None else fusion_weights)(mask, m)
    fused_flow = paddle.sum(weight[:, :, 0:1] * _views(flow, m), axis=1)
    fused_wref = paddle.sum(weight[:, :, 0:1] * _views(wref, m), axis=1)
    fused_msg = paddle.sum(weight[:, :, 2:] * _views(message, m), axis=1)
    return fused_flow, fused_wref, fused_msg


def _split_outputs(y: paddle.Tensor, split) -> tuple:
    """A decoder block's output channels (`ShaderConfig.split`), in order: flow residual (2), messages, message
    flows, local messages and local flows (None where the level has none) and the sigmoid masks."""
    sizes = (2, split.messages, split.message_flows, split.locals, split.local_flows, split.masks)
    optional = (False, False, False, True, True, False)
    parts, o = [], 0
    for n, may_be_empty in zip(sizes, optional):
        parts.append(None if may_be_empty and not n else y[:, o:o + n])
        o += n
    residual, message, message_flow, local, local_flow, mask = parts
    return residual, message, message_flow, local, local_flow, F.sigmoid(mask)


class CINN(nn.Layer):
    """forward(target_features, reference, reference_features) -> fused 64-channel features at full size.

    ops: the warps, resizes, cross-view fusion and view repeat it calls, and its decoder blocks' ops (`Ops`)."""

    def __init__(self, cfg: ShaderConfig, ops: Ops) -> None:
        super().__init__()
        self.cfg = cfg
        self.ops = ops
        self.splits = [cfg.split(lv) for lv in range(cfg.levels)]
        # parameter-free resampling layers (no state_dict entries): hooks see each call by name
        self.resize = Resize(ops)
        self.rescale_flow = FlowRescale(ops)
        self.warp = Warp(ops)
        self.warp_grouped = GroupedWarp(ops)
        self.decoder_blocks = nn.LayerList(
            [
                DecoderBlock(cfg.in_channels(lv), cfg.block_width[lv], cfg.block_nums[lv], self.splits[lv].total,
                             ops.block_ops(lv, cfg.levels))
                for lv in range(cfg.levels)
            ]
        )

    def forward(self, target_features, reference, reference_features):
        return self.run_levels(target_features, reference, reference_features)[-1]["message"]

    def run_levels(self, target_features, reference, reference_features) -> list[dict[str, paddle.Tensor]]:
        """target_features: list of (B, C, h, w); reference: (B, M, 4, S, S); reference_features: list of (B, M, C, h, w)."""
        m = reference.shape[1]
        ref = reference.reshape([-1] + list(reference.shape[2:]))  # (B*M, 4, S, S)
        feats = [f.reshape([-1] + list(f.shape[2:])) for f in reference_features]  # (B*M, C, h, w)
        out: list[dict[str, paddle.Tensor]] = []

        feat = feats[0]
        flow = paddle.zeros_like(feat[:, :2])
        wref = self.resize(ref, (feat.shape[-2], feat.shape[-1]))
        fused_flow, fused_wref, fused_msg, local = flow, wref, None, None

        for level, block in enumerate(self.decoder_blocks):
            split = self.splits[level]
            parts = [flow]
            if level < len(target_features):
                parts.append(self.ops.repeat_views(target_features[level], m))
            parts.append(wref)
            if feat is not None:
                parts.append(feat)
            parts += [fused_flow, fused_wref]
            if fused_msg is not None:
                parts.append(fused_msg)
            if local is not None:
                parts.append(local)
            y = block(paddle.concat(parts, axis=1))

            residual, message, message_flow, local, local_flow, mask = _split_outputs(y, split)
            flow = flow + residual

            nxt = feats[level + 1] if level + 1 < len(feats) else None
            size = (nxt.shape[-2], nxt.shape[-1]) if nxt is not None else (ref.shape[-2], ref.shape[-1])
            flow = self.rescale_flow(flow, size[1])
            mask = self.resize(mask, size)
            message = self.warp_grouped(self.resize(message, size), self.rescale_flow(message_flow, size[1]))
            if local is not None:
                local = self.warp_grouped(self.resize(local, size), self.rescale_flow(local_flow, size[1]))
            wref = self.warp(self.resize(ref, size), flow)
            feat = self.warp(nxt, flow) if nxt is not None else None

            fused_flow_b, fused_wref_b, fused_msg_b = self.ops.fuse_views(mask, flow, wref, message, m)
            out.append({"flow": fused_flow_b, "reference": fused_wref_b, "message": fused_msg_b})
            fused_flow = self.ops.repeat_views(fused_flow_b, m)
            fused_wref = self.ops.repeat_views(fused_wref_b, m)
            fused_msg = self.ops.repeat_views(fused_msg_b, m)
        return out
