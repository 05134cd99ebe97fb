"""The PyTorch reference's graphs for ONNX export (`python -m convert export-onnx --torch`): the same names, inputs
and outputs as `conr_engines.onnx.graphs`, so the two ONNX files of one checkpoint compare op for op on one runtime.

The reference is exported as it computes (torch's Softmax over the views axis and its scale-factor resizes are
kept): it is the referee, not the fast path.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from conr_torch_ref.model import CoNR, Sheet, broadcast_sheet, normalize, premultiply

__all__ = ["SheetGraph", "StepGraph", "PoseGraph"]


class SheetGraph(nn.Module):
    def __init__(self, model: CoNR) -> None:
        super().__init__()
        self.udpparsernet = model.udpparsernet

    def forward(self, sheet):
        rgb, alpha = sheet[:, :3], sheet[:, 3:4]
        _, features = self.udpparsernet(normalize(rgb), decode=False)
        return (*features, torch.cat([alpha * rgb, alpha], dim=1))


class StepGraph(nn.Module):
    def __init__(self, model: CoNR) -> None:
        super().__init__()
        self.target_pose_encoder = model.target_pose_encoder
        self.shader = model.shader
        self.rgbadecodernet = model.rgbadecodernet

    def forward(self, xyz, alpha, feat0, feat1, feat2, feat3, feat4, reference):
        target = CoNR.encode_target(self, xyz, alpha)
        sheet = Sheet(features=[feat0, feat1, feat2, feat3, feat4], reference=reference)
        levels = self.shader.run_levels(target, *broadcast_sheet(sheet, xyz.shape[0]))
        rgba = premultiply(self.rgbadecodernet(levels[-1]["message"]))
        return (rgba, *[lv["message"] for lv in levels])


class PoseGraph(nn.Module):
    def __init__(self, model: CoNR) -> None:
        super().__init__()
        self.udpparsernet = model.udpparsernet

    def forward(self, rgb):
        return CoNR.parse_pose(self, rgb)
