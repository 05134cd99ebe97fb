"""Architecture numbers of the four official CoNR networks, as frozen dataclasses shared by both frameworks.

Values are read off the official code (megvii-research/CoNR @ 660c4f7: conr.py, model/backbone.py,
model/shader.py, model/decoder_small.py); the test against conr_common/contract/official_manifest.json proves them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

NETWORK_NAMES: tuple[str, ...] = ("udpparsernet", "target_pose_encoder", "shader", "rgbadecodernet")

# Network input normalisation used everywhere in CoNR: (x - 0.6) / 0.2970.
INPUT_MEAN = 0.6
INPUT_STD = 0.2970

# The first shader level sees S/32 and its block downsamples by another 4.
SIZE_MULTIPLE = 128
# Strides of the encoder features, deepest first: encoder output, layer3, layer2, layer1, stem relu.
ENCODER_STRIDES = (32, 16, 8, 4, 2)


@dataclass(frozen=True)
class UNetConfig:
    """ResNet encoder + transposed-conv U-Net decoder with instance norm ("resnet*_danbo" in the official code)."""

    depth: int  # 18 (BasicBlock) or 50 (Bottleneck)
    in_channels: int
    classes: int
    # "conv": the stem max-pool is replaced by a 3x3 stride-2 conv (parser); "max": MaxPool2d(3, 2, 1).
    stem_pool: str
    decoder_filters: tuple[int, ...] = (512, 384, 256, 128, 32)

    @property
    def block_counts(self) -> tuple[int, ...]:
        return {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[self.depth]

    @property
    def expansion(self) -> int:
        return 1 if self.depth == 18 else 4

    @property
    def skip_channels(self) -> tuple[int, ...]:
        """Channels of the skip features [stem relu, layer1, layer2, layer3] and then the encoder output."""
        e = self.expansion
        return (64, 64 * e, 128 * e, 256 * e, 512 * e)

    def feature_shapes(self, views: int, size: int) -> list[list[int]]:
        """(views, C, h, w) of the encoder features of `views` images of `size`, deepest first (as
        ResEncUnet.encode returns them): strides ENCODER_STRIDES."""
        channels = reversed(self.skip_channels)
        return [[views, c, size // s, size // s] for c, s in zip(channels, ENCODER_STRIDES)]


@dataclass(frozen=True)
class LevelSplit:
    """Channel layout of one shader block's output: flow (2), message, message flow, local, local flow, masks."""

    messages: int
    message_flows: int
    locals: int
    local_flows: int
    masks: int

    @property
    def total(self) -> int:
        return 2 + self.messages + self.message_flows + self.locals + self.local_flows + self.masks


@dataclass(frozen=True)
class ShaderConfig:
    """CINN shader: one flow-decoder block per pyramid level, views fused at every level."""

    reference_channels: int = 4  # premultiplied RGB + alpha of each sheet view
    target_feature_channels: tuple[int, ...] = (512, 256, 128, 64, 64)
    feature_channels: tuple[int, ...] = (2048, 1024, 512, 256, 64)
    out_messages: tuple[int, ...] = (2048, 1024, 512, 256, 64, 64)
    out_locals: tuple[int, ...] = (2048, 1024, 512, 256, 64, 0)
    block_nums: tuple[int, ...] = (1, 1, 1, 1, 1, 2)
    block_width: tuple[int, ...] = (224, 224, 224, 224, 224, 224)
    message_flow_channels: int = 32  # 16 groups of 2-channel flows per message

    @property
    def levels(self) -> int:
        return len(self.out_messages)

    @property
    def fused_input_channels(self) -> int:
        # own flow (2) + fused flow (2) + own warped reference + fused warped reference
        return 2 + 2 + 2 * self.reference_channels

    def in_channels(self, level: int) -> int:
        c = self.fused_input_channels
        if level < len(self.target_feature_channels):
            c += self.target_feature_channels[level]
        if level < len(self.feature_channels):
            c += self.feature_channels[level]
        if level > 0:
            c += self.out_messages[level - 1] + self.out_locals[level - 1]
        return c

    def out_masks(self, level: int) -> int:
        # levels with sheet features have one mask per local channel; the extra last level one per message channel
        extra = self.out_locals[level] if level < len(self.feature_channels) else self.out_messages[level]
        return 2 + extra

    def split(self, level: int) -> LevelSplit:
        msgs, locs = self.out_messages[level], self.out_locals[level]
        return LevelSplit(
            messages=msgs,
            message_flows=self.message_flow_channels if msgs > 0 else 0,
            locals=locs,
            local_flows=self.message_flow_channels if locs > 0 else 0,
            masks=self.out_masks(level),
        )


@dataclass(frozen=True)
class DecoderConfig:
    """RGBA decoder: residual block(s) of 1x1 "norm" convs and 3x3 convs, then a 3x3 conv and a sigmoid."""

    channels: int = 64
    out_channels: int = 4
    blocks: int = 1


@dataclass(frozen=True)
class CoNRConfig:
    parser: UNetConfig = field(default_factory=lambda: UNetConfig(depth=50, in_channels=3, classes=4, stem_pool="conv"))
    pose_encoder: UNetConfig = field(
        default_factory=lambda: UNetConfig(depth=18, in_channels=4, classes=1, stem_pool="max")
    )
    shader: ShaderConfig = field(default_factory=ShaderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


OFFICIAL = CoNRConfig()
