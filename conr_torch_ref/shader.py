"""CINN shader: per-level flow decoders run on every sheet view, views fused at every level.

Official model/shader.py @ 660c4f7 (classes DecoderBlock and CINN); paper section 3 ("cross-view message passing").
At level L each view's block sees [own flow, target-pose features, own warped reference, own warped sheet features,
fused flow, fused warped reference, fused message, own local message], predicts a residual flow, messages with
their flows and sigmoid masks; outputs are resized/warped to the next level and the views are fused with
softmax(mask over views) * mask weights.

Views are batched: the official code loops over views with batch N; here they run as one batch of N*M, which
gives the same numbers (every op is per-sample).

Official names (megvii-research/CoNR @ 660c4f7, model/shader.py) -> ours (file:line):
- `DecoderBlock` -> `DecoderBlock` (conr_torch_ref/shader.py:58): one pyramid level's flow decoder
- `DecoderBlock.forward` -> `DecoderBlock.forward` (conr_torch_ref/shader.py:68)
  (the residual conv blocks, input concatenated by the caller)
- `flow, mask, message, message_flow, local_message, ...` -> `_split_outputs` (conr_torch_ref/shader.py:103)
  (the block's output channels, in the official order)
- `CINN` -> `CINN` (conr_torch_ref/shader.py:116)
- `CINN.forward` -> `CINN.run_levels` (conr_torch_ref/shader.py:136)
  (every level; `CINN.forward` keeps the last fused message)
- `self.decoder_blocks` -> `decoder_blocks` (conr_torch_ref/shader.py:128): checkpoint keys unchanged
- `in_planes + each_*_chn` -> `ShaderConfig.in_channels` (conr_common/contract/config.py:91)
  (a block's input channels)
- `pyrlevel, ifblock` -> `level` (conr_torch_ref/shader.py:152): with `block`
- `for view_id in range(x_reference.shape[1])` -> `ref` (conr_torch_ref/shader.py:142)
  (views run as one batch of B*M)
- `x_reference_features[pyrlevel][:, view_id]` -> `feats` (conr_torch_ref/shader.py:143)
  (every view's sheet features, (B*M, C, h, w))
- `scaled_x_target` -> `repeat_views` (conr_torch_ref/shader.py:81): target features repeated for each view
- `residual_flow` -> `residual` (conr_torch_ref/shader.py:167)
  (with `message`, `message_flow`, `local`, `local_flow`, `mask`)
- `accumulated_flow` -> `flow` (conr_torch_ref/shader.py:168)
- `CINN.apply_flow` -> `size` (conr_torch_ref/shader.py:172): from here to `feat`: resize and warp to the next level
- `CINN.flow_rescale` -> `rescale_flow` (conr_torch_ref/warp.py:60)
- `F.interpolate(..., size=f_size, mode="bilinear")` -> `resize` (conr_torch_ref/warp.py:55)
- `warp_features` -> `warp_grouped` (conr_torch_ref/warp.py:45): message and local message warps
- `feat_ev` -> `nxt` (conr_torch_ref/shader.py:171): the next level's sheet features
- `warp_x_reference` -> `wref` (conr_torch_ref/shader.py:178)
- `warp_x_reference_features` -> `feat` (conr_torch_ref/shader.py:179)
- `stacked_contrib` -> `fusion_weights` (conr_torch_ref/shader.py:86): softmax over the views, times the mask
- `weighted_flow, weighted_wref, weighted_mesg` -> `fuse_views` (conr_torch_ref/shader.py:92)
  (the torch.sum over the views)
- `y_weighted_flow[-1], y_weighted_x_reference[-1]` -> `fused_flow` (conr_torch_ref/shader.py:183)
  (with `fused_wref`)
- `y_weighted_message[-1]` -> `fused_msg` (conr_torch_ref/shader.py:185)
- `"y_last_remote_features"` -> `out` (conr_torch_ref/shader.py:144): per level: fused flow, reference and message
"""
from __future__ import annotations

import torch
import torch.nn as nn

from conr_common.contract.config import ShaderConfig
from conr_torch_ref.layers import conv, deconv
from conr_torch_ref.warp import FlowRescale, GroupedWarp, Resize, Warp


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, c: int, block_nums: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(conv(cin, c, 3, 2, 1), nn.PReLU(c), conv(c, c, 3, 2, 1), nn.PReLU(c))
        self.convblocks = nn.ModuleList(
            nn.Sequential(*[m for _ in range(6) for m in (conv(c, c, 3, 1, 1), nn.PReLU(c))])
            for _ in range(block_nums)
        )
        self.conv_last = nn.Sequential(deconv(c, c, 4, 2, 1), nn.PReLU(c), deconv(c, out_channels, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv0(x)
        for block in self.convblocks:
            feat = block(feat) + feat
        return self.conv_last(feat)



def _views(x: torch.Tensor, m: int) -> torch.Tensor:
    """(B*M, ...) -> (B, M, ...)"""
    return x.reshape((x.shape[0] // m, m) + tuple(x.shape[1:]))


def repeat_views(x: torch.Tensor, m: int) -> torch.Tensor:
    """(B, ...) -> (B*M, ...), each sample repeated for its M views."""
    return x.unsqueeze(1).expand((x.shape[0], m) + tuple(x.shape[1:])).reshape((-1,) + tuple(x.shape[1:]))


def fusion_weights(mask: torch.Tensor, m: int) -> torch.Tensor:
    """(B*M, K, h, w) masks -> (B, M, K, h, w) weights softmax(mask over the M views) * mask."""
    vm = _views(mask, m)
    return torch.softmax(vm, dim=1) * vm


def fuse_views(mask: torch.Tensor, flow: torch.Tensor, wref: torch.Tensor, message: torch.Tensor, m: int):
    """Cross-view fusion: weights softmax(mask over the M views) * mask; mask channel 0 weighs the flow and the
    warped reference, channels 2.. the message channels (channel 1 is unused). Inputs are (B*M, ...), outputs
    (B, ...): fused flow, fused reference, fused message."""
    weight = fusion_weights(mask, m)
    fused_flow = torch.sum(weight[:, :, 0:1] * _views(flow, m), dim=1)
    fused_wref = torch.sum(weight[:, :, 0:1] * _views(wref, m), dim=1)
    fused_msg = torch.sum(weight[:, :, 2:] * _views(message, m), dim=1)
    return fused_flow, fused_wref, fused_msg


def _split_outputs(y: torch.Tensor, split) -> tuple:
    """A decoder block's output channels (`ShaderConfig.split`), in order: flow residual (2), messages, message
    flows, local messages and local flows (None where the level has none) and the sigmoid masks."""
    sizes = (2, split.messages, split.message_flows, split.locals, split.local_flows, split.masks)
    optional = (False, False, False, True, True, False)
    parts, o = [], 0
    for n, may_be_empty in zip(sizes, optional):
        parts.append(None if may_be_empty and not n else y[:, o:o + n])
        o += n
    residual, message, message_flow, local, local_flow, mask = parts
    return residual, message, message_flow, local, local_flow, torch.sigmoid(mask)


class CINN(nn.Module):
    """forward(target_features, reference, reference_features) -> fused 64-channel features at full size."""

    def __init__(self, cfg: ShaderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.splits = [cfg.split(lv) for lv in range(cfg.levels)]
        # parameter-free resampling layers (no state_dict entries): hooks see each call by name
        self.resize = Resize()
        self.rescale_flow = FlowRescale()
        self.warp = Warp()
        self.warp_grouped = GroupedWarp()
        self.decoder_blocks = nn.ModuleList(
            DecoderBlock(cfg.in_channels(lv), cfg.block_width[lv], cfg.block_nums[lv], self.splits[lv].total)
            for lv in range(cfg.levels)
        )

    def forward(self, target_features, reference, reference_features):
        return self.run_levels(target_features, reference, reference_features)[-1]["message"]

    def run_levels(self, target_features, reference, reference_features) -> list[dict[str, torch.Tensor]]:
        """Run every level; return per level the fused flow, fused warped reference and fused message.

        target_features: list of (B, C, h, w); reference: (B, M, 4, S, S); reference_features: list of (B, M, C, h, w).
        """
        b, m = reference.shape[0], reference.shape[1]
        ref = reference.reshape((b * m,) + tuple(reference.shape[2:]))  # (B*M, 4, S, S)
        feats = [f.reshape((b * m,) + tuple(f.shape[2:])) for f in reference_features]  # (B*M, C, h, w)
        out: list[dict[str, torch.Tensor]] = []

        # level 0 starts from zero flow; its "fused" inputs are each view's own
        feat = feats[0]
        flow = torch.zeros_like(feat[:, :2])
        wref = self.resize(ref, (feat.shape[-2], feat.shape[-1]))
        fused_flow, fused_wref, fused_msg, local = flow, wref, None, None

        for level, block in enumerate(self.decoder_blocks):
            split = self.splits[level]
            parts = [flow]
            if level < len(target_features):
                parts.append(repeat_views(target_features[level], m))
            parts.append(wref)
            if feat is not None:
                parts.append(feat)
            parts += [fused_flow, fused_wref]
            if fused_msg is not None:
                parts.append(fused_msg)
            if local is not None:
                parts.append(local)
            y = block(torch.cat(parts, dim=1))

            residual, message, message_flow, local, local_flow, mask = _split_outputs(y, split)
            flow = flow + residual

            # move everything to the next level's size: next sheet features, or the full image after the last
            nxt = feats[level + 1] if level + 1 < len(feats) else None
            size = (nxt.shape[-2], nxt.shape[-1]) if nxt is not None else (ref.shape[-2], ref.shape[-1])
            flow = self.rescale_flow(flow, size[1])
            mask = self.resize(mask, size)
            message = self.warp_grouped(self.resize(message, size), self.rescale_flow(message_flow, size[1]))
            if local is not None:
                local = self.warp_grouped(self.resize(local, size), self.rescale_flow(local_flow, size[1]))
            wref = self.warp(self.resize(ref, size), flow)
            feat = self.warp(nxt, flow) if nxt is not None else None

            fused_flow_b, fused_wref_b, fused_msg_b = fuse_views(mask, flow, wref, message, m)
            out.append({"flow": fused_flow_b, "reference": fused_wref_b, "message": fused_msg_b})
            fused_flow = repeat_views(fused_flow_b, m)
            fused_wref = repeat_views(fused_wref_b, m)
            fused_msg = repeat_views(fused_msg_b, m)
        return out
