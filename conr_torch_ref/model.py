"""The four CoNR networks and the inference step (official conr.py @ 660c4f7, class CoNR, model_step).

Inference: parse the character sheet once (parser features + premultiplied reference), encode the target pose
(UDP xyz * alpha, alpha), run the shader over all views, decode RGBA and premultiply it.
Inputs are float tensors in [0, 1]; the data pipeline (conr_common.pipeline) produces them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from conr_common.config import INPUT_MEAN, INPUT_STD, NETWORK_NAMES, OFFICIAL, CoNRConfig
from conr_common.manifest import official_manifest
from conr_common.checks import check_pose_shape, check_sheet_shapes, check_weight_values
from .backbone import ResEncUnet
from .decoder import RGBADecoderNet
from .shader import CINN


def build_networks(config: CoNRConfig = OFFICIAL) -> dict[str, nn.Module]:
    """The four official networks, keyed by their checkpoint names, in eval mode."""
    nets = {
        "udpparsernet": ResEncUnet(config.parser),
        "target_pose_encoder": ResEncUnet(config.pose_encoder),
        "shader": CINN(config.shader),
        "rgbadecodernet": RGBADecoderNet(config.decoder),
    }
    return {k: v.eval() for k, v in nets.items()}


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - INPUT_MEAN) / INPUT_STD


@dataclass(frozen=True)
class Sheet:
    """What the sheet contributes to every frame: parser features per level (M, C, h, w) and the reference (M, 4, S, S)."""

    features: list
    reference: torch.Tensor


class CoNR(nn.Module):
    def __init__(self, config: CoNRConfig = OFFICIAL) -> None:
        super().__init__()
        for name, net in build_networks(config).items():
            self.add_module(name, net)
        self.eval()

    def parse_sheet(self, sheet: torch.Tensor) -> Sheet:
        """sheet: (M, 4, S, S) premultiplied RGB + alpha in [0, 1] (or a list of M (4, S, S) views)."""
        if isinstance(sheet, (list, tuple)):
            check_sheet_shapes([tuple(v.shape) for v in sheet])
            sheet = torch.stack(list(sheet))
        check_sheet_shapes([tuple(sheet.shape)])
        rgb, alpha = sheet[:, :3], sheet[:, 3:4]
        _, features = self.udpparsernet(normalize(rgb), decode=False)
        # the official shader input premultiplies the (already premultiplied) RGB once more
        return Sheet(features=features, reference=torch.cat([alpha * rgb, alpha], dim=1))

    def parse_pose(self, image: torch.Tensor) -> torch.Tensor:
        """RGBA-derived pose image (B, 3, S, S) -> predicted UDP (B, 4, S, S) clipped to [0, 1]."""
        logits, _ = self.udpparsernet(normalize(image))
        return torch.clamp(logits, 0.0, 1.0)

    def encode_target(self, xyz: torch.Tensor, alpha: torch.Tensor) -> list[torch.Tensor]:
        """Target pose features from UDP xyz (B, 3, S, S) and alpha (B, 1, S, S)."""
        _, features = self.target_pose_encoder(normalize(torch.cat([xyz * alpha, alpha], dim=1)), decode=False)
        return features

    def shade(self, sheet: Sheet, target_features: list[torch.Tensor]) -> torch.Tensor:
        """Premultiplied RGBA (B, 4, S, S) for B target poses of one character."""
        b = target_features[0].shape[0]
        reference = sheet.reference.unsqueeze(0).expand((b,) + tuple(sheet.reference.shape))  # (B, M, 4, S, S)
        feats = [f.unsqueeze(0).expand((b,) + tuple(f.shape)) for f in sheet.features]
        fused = self.shader(target_features, reference, feats)
        rgba = self.rgbadecodernet(fused)
        return torch.cat([rgba[:, 0:3] * rgba[:, 3:4], rgba[:, 3:4]], dim=1)

    @torch.no_grad()
    def render(self, sheet: Sheet, xyz: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        size = sheet.reference.shape[-1]
        check_pose_shape(tuple(xyz.shape), size, 3, "target pose xyz")
        check_pose_shape(tuple(alpha.shape), size, 1, "target pose alpha")
        return self.shade(sheet, self.encode_target(xyz, alpha))


def load_official(model: CoNR, folder: str | Path) -> CoNR:
    """Strictly load the four official `.pth` files (weights_only: a checkpoint never runs code)."""
    folder = Path(folder)
    for name in NETWORK_NAMES:
        path = folder / official_manifest()[name].file
        state = torch.load(path, map_location="cpu", weights_only=True)
        check_weight_values({k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()},
                            str(path))
        getattr(model, name).load_state_dict(state, strict=True)
    return model
