"""The four CoNR networks and the inference step (official conr.py @ 660c4f7, class CoNR, model_step).

Inference: parse the character sheet once (parser features + premultiplied reference), encode the target pose
(UDP xyz * alpha, alpha), run the shader over all views, decode RGBA and premultiply it.
Inputs are float tensors in [0, 1]; the data pipeline (conr_common.data.pipeline) produces them.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from conr_common.contract.config import INPUT_MEAN, INPUT_STD, NETWORK_NAMES, OFFICIAL, CoNRConfig
from conr_common.weights.checkpoints import check_state_fits, network_path, read_network
from conr_common.data.checks import check_pose_shape, check_sheet_shapes, check_weight_values
from conr_torch_ref.backbone import ResEncUnet
from conr_torch_ref.decoder import RGBADecoderNet
from conr_torch_ref.shader import CINN


def build_network(name: str, config: CoNRConfig = OFFICIAL) -> nn.Module:
    """One official network by its checkpoint name (udpparsernet, target_pose_encoder, shader, rgbadecodernet),
    in eval mode."""
    builders = {
        "udpparsernet": lambda: ResEncUnet(config.parser),
        "target_pose_encoder": lambda: ResEncUnet(config.pose_encoder),
        "shader": lambda: CINN(config.shader),
        "rgbadecodernet": lambda: RGBADecoderNet(config.decoder),
    }
    return builders[name]().eval()


def build_networks(config: CoNRConfig = OFFICIAL) -> dict[str, nn.Module]:
    """The four official networks, keyed by their checkpoint names, in eval mode."""
    return {name: build_network(name, config) for name in NETWORK_NAMES}


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - INPUT_MEAN) / INPUT_STD


@dataclass(frozen=True)
class Sheet:
    """What the sheet contributes to every frame: parser features per level (M, C, h, w) and the reference (M, 4, S, S)."""

    features: list
    reference: torch.Tensor


def float64_copy(model: nn.Module) -> nn.Module:
    """A float64 copy of a torch network or of the whole reference, in eval mode: the float64 truth every float32
    difference is judged against (float32 -> float64 is exact; the float32 model is left as it is)."""
    import copy

    return copy.deepcopy(model).double().eval()


def encode_sheet(parser: ResEncUnet, rgb: torch.Tensor) -> list[torch.Tensor]:
    """Encoder features of sheet RGB (M, 3, S, S), deepest first."""
    _, features = parser(normalize(rgb), decode=False)
    return features


def sheet_reference(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The shader's reference (M, 4, S, S): the official input premultiplies the (already premultiplied) sheet RGB
    once more."""
    return torch.cat([alpha * rgb, alpha], dim=1)


def parse_pose(parser: ResEncUnet, image: torch.Tensor) -> torch.Tensor:
    """RGBA-derived pose image (B, 3, S, S) -> predicted UDP (B, 4, S, S) clipped to [0, 1]."""
    logits, _ = parser(normalize(image))
    return torch.clamp(logits, 0.0, 1.0)


def encode_target(encoder: ResEncUnet, xyz: torch.Tensor, alpha: torch.Tensor) -> list[torch.Tensor]:
    """Target pose features from UDP xyz (B, 3, S, S) and alpha (B, 1, S, S)."""
    _, features = encoder(normalize(torch.cat([xyz * alpha, alpha], dim=1)), decode=False)
    return features


def broadcast_sheet(sheet: Sheet, b: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The sheet seen by B target poses at once: reference (B, M, 4, S, S) and features (B, M, C, h, w), views
    expanded without copying (the official `CoNR.forward` repeats the sheet per pose)."""
    reference = sheet.reference.unsqueeze(0).expand((b,) + tuple(sheet.reference.shape))
    return reference, [f.unsqueeze(0).expand((b,) + tuple(f.shape)) for f in sheet.features]


def premultiply(rgba: torch.Tensor) -> torch.Tensor:
    """The decoder's straight RGBA (B, 4, S, S) as premultiplied RGBA, the renderer's output."""
    return torch.cat([rgba[:, 0:3] * rgba[:, 3:4], rgba[:, 3:4]], dim=1)


def shade(shader: CINN, decoder: RGBADecoderNet, sheet: Sheet, target_features: list[torch.Tensor]) -> torch.Tensor:
    """Premultiplied RGBA (B, 4, S, S) for B target poses of one character."""
    reference, feats = broadcast_sheet(sheet, target_features[0].shape[0])
    return premultiply(decoder(shader(target_features, reference, feats)))


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
        return Sheet(features=encode_sheet(self.udpparsernet, rgb), reference=sheet_reference(rgb, alpha))

    def parse_pose(self, image: torch.Tensor) -> torch.Tensor:
        """RGBA-derived pose image (B, 3, S, S) -> predicted UDP (B, 4, S, S) clipped to [0, 1]."""
        return parse_pose(self.udpparsernet, image)

    def encode_target(self, xyz: torch.Tensor, alpha: torch.Tensor) -> list[torch.Tensor]:
        """Target pose features from UDP xyz (B, 3, S, S) and alpha (B, 1, S, S)."""
        return encode_target(self.target_pose_encoder, xyz, alpha)

    def shade(self, sheet: Sheet, target_features: list[torch.Tensor]) -> torch.Tensor:
        """Premultiplied RGBA (B, 4, S, S) for B target poses of one character."""
        return shade(self.shader, self.rgbadecodernet, sheet, target_features)

    @torch.no_grad()
    def render(self, sheet: Sheet, xyz: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        size = sheet.reference.shape[-1]
        check_pose_shape(tuple(xyz.shape), size, 3, "target pose xyz")
        check_pose_shape(tuple(alpha.shape), size, 1, "target pose alpha")
        return self.shade(sheet, self.encode_target(xyz, alpha))


def strict_load(net: nn.Module, state: dict, what: str) -> None:
    """Load numpy arrays (official names) into `net`; ConrInputError naming `what` and every missing/unexpected key,
    shape mismatch or NaN/Inf/integer tensor before anything is assigned (the same check as the Paddle side)."""
    own = net.state_dict()
    check_state_fits({k: tuple(v.shape) for k, v in own.items()}, state, what, type(net).__name__)
    check_weight_values(state, what)
    assign = any(t.is_meta for t in own.values())  # built by `unloaded`: the loaded tensors become the parameters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # from_numpy of a read-only array: copied below
        tensors = {k: torch.from_numpy(np.asarray(v)).to(own[k].dtype) for k, v in state.items()}
    if assign:  # own copies: a parameter never shares memory with the caller's array
        tensors = {k: t.clone() for k, t in tensors.items()}
    net.load_state_dict(tensors, strict=True, assign=assign)


def unloaded(config: CoNRConfig = OFFICIAL) -> CoNR:
    """A CoNR whose parameters are declared on torch's meta device (no memory, no random draw), for `load_official`
    or `load_networks` to fill right away: their strict load assigns every tensor (1.8 s of random initialisation of
    the official 180 M parameters saved, measured on a 2-core AMD EPYC). The twin of the Paddle side's `unloaded`."""
    with torch.device("meta"):
        return CoNR(config).eval()


def load_networks(model: CoNR, states: dict[str, dict]) -> CoNR:
    """Strictly load official-named numpy state dicts (network name -> state) into the model (`strict_load`)."""
    for name in NETWORK_NAMES:
        strict_load(getattr(model, name), states[name], what=name)
    return model


def load_official(model: CoNR, folder: str | Path) -> CoNR:
    """Strictly load the four official `.pth` files, one at a time, through the safe reader of
    `conr_common.weights.checkpoints` (`torch.load(weights_only=True)`: a checkpoint never runs code). A missing, damaged or
    mismatching file, or one holding NaN/Inf, is a ConrInputError naming it."""
    for name in NETWORK_NAMES:
        path = network_path(folder, name, "torch")
        strict_load(getattr(model, name), read_network(path, "torch"), what=str(path))
    return model
