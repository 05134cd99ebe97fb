"""The four CoNR networks and the inference step, Paddle side of conr_torch_ref/model.py
(official conr.py @ 660c4f7, class CoNR, model_step)."""
from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from conr_common.weights.checkpoints import check_state_fits, network_path, read_network
from conr_common.data.checks import check_pose_shape, check_sheet_shapes, check_weight_values
from conr_common.contract.config import INPUT_MEAN, INPUT_STD, NETWORK_NAMES, OFFICIAL, CoNRConfig
from conr_paddle.backbone import ResEncUnet
from conr_paddle.decoder import RGBADecoderNet
from conr_paddle.layers import AccurateInstanceNorm2D, conv, deconv, prelu
from conr_paddle.ops import BlockOps, Ops
from conr_paddle.shader import CINN, fuse_views, repeat_views
from conr_paddle.warp import warp, warp_grouped

# The eager model's operators: the parity reference (`conr_paddle.ops` says who else builds an `Ops`).
EAGER_OPS = Ops(warp=warp, warp_grouped=warp_grouped, interpolate=F.interpolate, fuse_views=fuse_views,
                repeat_views=repeat_views, blocks=BlockOps(prelu=prelu, add=operator.add, conv=conv, deconv=deconv))


def build_network(name: str, config: CoNRConfig = OFFICIAL, ops: Ops = EAGER_OPS) -> nn.Layer:
    """One official network by its checkpoint name (udpparsernet, target_pose_encoder, shader, rgbadecodernet),
    in eval mode; the shader computes with `ops`."""
    builders = {
        "udpparsernet": lambda: ResEncUnet(config.parser),
        "target_pose_encoder": lambda: ResEncUnet(config.pose_encoder),
        "shader": lambda: CINN(config.shader, ops),
        "rgbadecodernet": lambda: RGBADecoderNet(config.decoder),
    }
    net = builders[name]()
    net.eval()
    return net


def build_networks(config: CoNRConfig = OFFICIAL, ops: Ops = EAGER_OPS) -> dict[str, nn.Layer]:
    """The four official networks, keyed by their checkpoint names, in eval mode; the shader computes with `ops`."""
    return {name: build_network(name, config, ops) for name in NETWORK_NAMES}


def strict_load(layer: nn.Layer, state: Mapping[str, object], what: str = "state dict") -> None:
    """Load `state` (numpy arrays or paddle tensors, Paddle names) into `layer`; raise ConrInputError naming every
    missing key, unexpected key and shape or dtype mismatch before anything is assigned (Paddle's `set_state_dict`
    only warns on a mismatch)."""
    own = layer.state_dict()
    check_state_fits({k: tuple(v.shape) for k, v in own.items()}, state, what, type(layer).__name__)
    arrays = {k: (v.numpy() if isinstance(v, paddle.Tensor) else np.asarray(v)) for k, v in state.items()}
    check_weight_values(arrays, what)  # NaN/Inf or integer tensors: refused before anything is assigned
    for k, p in own.items():
        p.set_value(arrays[k].astype(_np_dtype(p), copy=False))  # a float16 file loads into a float32 model


def _np_dtype(p: paddle.Tensor) -> np.dtype:
    return np.dtype(str(p.dtype).replace("paddle.", ""))


def normalize(x: paddle.Tensor) -> paddle.Tensor:
    return (x - INPUT_MEAN) / INPUT_STD


SHEET_PRECISIONS = ("float64", "float32")


def float64_copy(net: ResEncUnet) -> ResEncUnet:
    """A float64 copy of a parser network (the original is untouched; float32 -> float64 is exact).

    Built anew rather than deep-copied: a deep copy keeps the parameter names, and a graph exported from it next to
    one of the original (sheet and pose graphs) then saved the wrong values (measured: features off by 100%)."""
    with paddle.LazyGuard():  # declared, not drawn: the strict load below sets every parameter (1.4 s saved per copy)
        twin = ResEncUnet(net.cfg)
    for (_, mine), (_, theirs) in zip(twin.named_sublayers(), net.named_sublayers()):
        if isinstance(theirs, AccurateInstanceNorm2D):  # epsilon and statistics follow the original
            mine._epsilon, mine.statistics = theirs._epsilon, theirs.statistics
    strict_load(twin, {k: v.numpy() for k, v in net.state_dict().items()}, what="float64 parser")
    twin.to(dtype="float64")  # after the load: the values are the original's exactly (float32 -> float64 is exact)
    twin.eval()
    return twin


def sheet_parser(parser: ResEncUnet, precision: str, dtype) -> ResEncUnet:
    """The network that parses a sheet of `dtype`: a float64 copy of `parser` for precision "float64" and a
    float32 sheet (CoNR.parse_sheet says why), else `parser` itself."""
    if precision not in SHEET_PRECISIONS:
        raise ValueError(f"precision must be one of {SHEET_PRECISIONS}, got {precision!r}")
    return float64_copy(parser) if precision == "float64" and dtype == paddle.float32 else parser


def encode_sheet(parser: ResEncUnet, rgb: paddle.Tensor) -> list[paddle.Tensor]:
    """Encoder features of sheet RGB (M, 3, S, S), computed in the parser's dtype and returned in rgb's."""
    work = parser.parameters()[0].dtype
    _, features = parser(normalize(rgb.astype(work)), decode=False)
    return [f.astype(rgb.dtype) for f in features]


def sheet_reference(rgb: paddle.Tensor, alpha: paddle.Tensor) -> paddle.Tensor:
    """The shader's reference (M, 4, S, S): the official input premultiplies the (already premultiplied) sheet RGB
    once more."""
    return paddle.concat([alpha * rgb, alpha], axis=1)


def parse_pose(parser: ResEncUnet, image: paddle.Tensor) -> paddle.Tensor:
    """RGBA-derived pose image (B, 3, S, S) -> predicted UDP (B, 4, S, S) clipped to [0, 1]."""
    logits, _ = parser(normalize(image))
    return paddle.clip(logits, 0.0, 1.0)


def encode_target(encoder: ResEncUnet, xyz: paddle.Tensor, alpha: paddle.Tensor) -> list[paddle.Tensor]:
    """Target pose features from UDP xyz (B, 3, S, S) and alpha (B, 1, S, S)."""
    _, features = encoder(normalize(paddle.concat([xyz * alpha, alpha], axis=1)), decode=False)
    return features


@dataclass(frozen=True)
class Sheet:
    """What the sheet contributes to every frame: parser features per level (M, C, h, w) and the reference (M, 4, S, S)."""

    features: list
    reference: paddle.Tensor


def broadcast_sheet(sheet: Sheet, b: int) -> tuple[paddle.Tensor, list[paddle.Tensor]]:
    """The sheet seen by B target poses at once: reference (B, M, 4, S, S) and features (B, M, C, h, w), views
    expanded without copying (the official `CoNR.forward` repeats the sheet per pose)."""
    reference = sheet.reference.unsqueeze(0).expand([b] + list(sheet.reference.shape))
    return reference, [f.unsqueeze(0).expand([b] + list(f.shape)) for f in sheet.features]


def premultiply(rgba: paddle.Tensor) -> paddle.Tensor:
    """The decoder's straight RGBA (B, 4, S, S) as premultiplied RGBA, the renderer's output."""
    return paddle.concat([rgba[:, 0:3] * rgba[:, 3:4], rgba[:, 3:4]], axis=1)


def shade(shader: CINN, decoder: RGBADecoderNet, sheet: Sheet, target_features: list[paddle.Tensor]) -> paddle.Tensor:
    """Premultiplied RGBA (B, 4, S, S) for B target poses of one character."""
    reference, feats = broadcast_sheet(sheet, target_features[0].shape[0])
    return premultiply(decoder(shader(target_features, reference, feats)))


class CoNR(nn.Layer):
    """The four networks; `ops` says which operators the shader calls (`conr_paddle.ops`, `EAGER_OPS` by default)."""

    def __init__(self, config: CoNRConfig = OFFICIAL, ops: Ops = EAGER_OPS) -> None:
        super().__init__()
        self.config = config
        self.ops = ops
        # Every CoNR names its parameters alike (conv2d_0.w_0, ...), whatever the process built before it: an
        # exported graph's program reads its parameters by these names, and the graphs of one weight set share one
        # parameter file only if every process names them the same way (`conr_engines.export.program`).
        with paddle.utils.unique_name.guard():
            networks = build_networks(config, ops)
        for name, net in networks.items():
            self.add_sublayer(name, net)
        self.eval()

    def with_ops(self, ops: Ops) -> CoNR:
        """This model computing with `ops`: a new CoNR holding the same parameter tensors (nothing is copied; built
        under `paddle.LazyGuard`, its own parameters are never allocated), its instance norms set like these."""
        with paddle.LazyGuard():
            twin = CoNR(self.config, ops)
        mine = dict(self.named_sublayers(include_self=True))
        for name, layer in twin.named_sublayers(include_self=True):
            source = mine[name]
            for pname, _ in list(layer.named_parameters(include_sublayers=False)):
                layer.add_parameter(pname, getattr(source, pname))
            if isinstance(source, AccurateInstanceNorm2D):  # epsilon and statistics follow this model
                layer._epsilon, layer.statistics = source._epsilon, source.statistics
        if self.training:
            twin.train()
        return twin

    def parse_sheet(self, sheet: paddle.Tensor, precision: str = "float64", parser: ResEncUnet | None = None) -> Sheet:
        """sheet: (M, 4, S, S) premultiplied RGB + alpha in [0, 1] (or a list of M (4, S, S) views).

        precision "float64" (default): for a float32 sheet, the parser runs on a float64 copy of itself and the
        features are rounded to float32 once, at the end. The sheet is parsed once per sequence, and its deepest
        features carry the largest float32 error of the whole step (ResNet-50 layer4), which the shader's warps
        amplify: measured at 128 px / 3 views, final RGBA error against the float64 truth 1.2e-4 with a float32
        parse, 1.4e-5 with float64 features, torch's float32 reference 6.1e-5. "float32": the model's dtype.
        parser: the network to parse with instead (`sheet_parser`'s choice), e.g. a copy the caller has hooked."""
        if isinstance(sheet, (list, tuple)):
            check_sheet_shapes([tuple(v.shape) for v in sheet])
            sheet = paddle.stack(list(sheet))
        check_sheet_shapes([tuple(sheet.shape)])
        parser = parser if parser is not None else sheet_parser(self.udpparsernet, precision, sheet.dtype)
        rgb, alpha = sheet[:, :3], sheet[:, 3:4]
        return Sheet(features=encode_sheet(parser, rgb), reference=sheet_reference(rgb, alpha))

    def parse_pose(self, image: paddle.Tensor) -> paddle.Tensor:
        """RGBA-derived pose image (B, 3, S, S) -> predicted UDP (B, 4, S, S) clipped to [0, 1]."""
        return parse_pose(self.udpparsernet, image)

    def encode_target(self, xyz: paddle.Tensor, alpha: paddle.Tensor) -> list[paddle.Tensor]:
        """Target pose features from UDP xyz (B, 3, S, S) and alpha (B, 1, S, S)."""
        return encode_target(self.target_pose_encoder, xyz, alpha)

    def shade(self, sheet: Sheet, target_features: list[paddle.Tensor]) -> paddle.Tensor:
        """Premultiplied RGBA (B, 4, S, S) for B target poses of one character."""
        return shade(self.shader, self.rgbadecodernet, sheet, target_features)

    @paddle.no_grad()
    def render(self, sheet: Sheet, xyz: paddle.Tensor, alpha: paddle.Tensor) -> paddle.Tensor:
        size = sheet.reference.shape[-1]
        check_pose_shape(tuple(xyz.shape), size, 3, "target pose xyz")
        check_pose_shape(tuple(alpha.shape), size, 1, "target pose alpha")
        return self.shade(sheet, self.encode_target(xyz, alpha))


def unloaded(config: CoNRConfig = OFFICIAL, ops: Ops = EAGER_OPS) -> CoNR:
    """A CoNR whose parameters are declared but not drawn (built under `paddle.LazyGuard`), for `load_pdparams` or
    `load_networks` to fill right away: their strict load sets every parameter, so no random draw is wasted (0.1 s
    instead of 4.8 s for the official 180 M parameters, measured on a 2-core AMD EPYC). Not for computing before a
    load: its parameters hold no values until then."""
    with paddle.LazyGuard():
        return CoNR(config, ops)


def load_networks(model: CoNR, states: dict[str, dict]) -> CoNR:
    """Strictly load Paddle-named state dicts (network name -> state) into the model."""
    for name in NETWORK_NAMES:
        strict_load(getattr(model, name), states[name], what=name)
    return model


def load_pdparams(model: CoNR, folder: str | Path) -> CoNR:
    """Strictly load the four `<network>.pdparams` written by `python -m convert torch2paddle`, one at a time.

    Read with the restricted unpickler of `conr_common.weights.checkpoints` (plain `paddle.load` would run any code a
    pickle carries): a missing, damaged, foreign or code-carrying file is a ConrInputError naming it."""
    for name in NETWORK_NAMES:
        path = network_path(folder, name, "paddle")
        strict_load(getattr(model, name), read_network(path, "paddle"), what=str(path))  # errors name the file
    return model
