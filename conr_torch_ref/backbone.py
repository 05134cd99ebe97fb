"""ResNet-encoder U-Net with instance norm: the UDP parser (ResNet-50) and the target pose encoder (ResNet-18).

Official model/backbone.py @ 660c4f7 ("resnet50_danbo" and "resnet18_danbo-4" through torchvision's ResNet with
norm_layer=MyNorm). Written here without torchvision, keeping the official state_dict keys: the encoder is one
nn.Sequential `backbone` = [stem conv, norm, relu, pool, layer1..layer4] (keys `backbone.0` .. `backbone.7`), the
decoder `upsample_blocks.{i}` with transposed convs, and a 1x1 `final_conv`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from conr_common.contract.config import UNetConfig
from conr_torch_ref.layers import InstanceNorm, conv, deconv


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = InstanceNorm(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = InstanceNorm(planes)
        self.downsample = _shortcut(cin, planes, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv(cin, planes, 1, bias=False)
        self.bn1 = InstanceNorm(planes)
        self.conv2 = conv(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3 (torchvision v1.5)
        self.bn2 = InstanceNorm(planes)
        self.conv3 = conv(planes, planes * 4, 1, bias=False)
        self.bn3 = InstanceNorm(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(cin, planes * 4, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(conv(cin, cout, 1, stride, bias=False), InstanceNorm(cout))


def _encoder(cfg: UNetConfig) -> nn.Sequential:
    block = Bottleneck if cfg.depth == 50 else BasicBlock
    pool = conv(64, 64, 3, 2, 1, bias=False) if cfg.stem_pool == "conv" else nn.MaxPool2d(3, 2, 1)
    layers: list[nn.Module] = [conv(cfg.in_channels, 64, 7, 2, 3, bias=False), InstanceNorm(64), nn.ReLU(), pool]
    cin = 64
    for i, count in enumerate(cfg.block_counts):
        planes = 64 * 2**i
        blocks = []
        for j in range(count):
            blocks.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1))
            cin = planes * block.expansion
        layers.append(nn.Sequential(*blocks))
    return nn.Sequential(*layers)


class UpsampleBlock(nn.Module):
    """Transposed conv x2 -> norm -> relu, concat skip, 3x3 conv -> norm -> relu (official parametric block)."""

    def __init__(self, cin: int, cout: int, skip: int) -> None:
        super().__init__()
        self.up = deconv(cin, cout, 4, 2, 1, bias=False)
        self.bn1 = InstanceNorm(cout)
        self.relu = nn.ReLU()
        self.conv2 = conv(cout + skip, cout, 3, 1, 1, bias=False)
        self.bn2 = InstanceNorm(cout)

    def forward(self, x, skip=None):
        x = self.relu(self.bn1(self.up(x)))
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.relu(self.bn2(self.conv2(x)))


# Encoder children whose outputs are the skip features, deepest first, and the encoder output (official names).
_SKIP_INDICES = (6, 5, 4, 2)
_OUTPUT_INDEX = 7


class ResEncUnet(nn.Module):
    """forward(x) -> (logits or None, features); features = [encoder out, layer3, layer2, layer1, stem relu]."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = _encoder(cfg)
        skips = cfg.skip_channels  # (stem, layer1, layer2, layer3, out)
        filters = cfg.decoder_filters
        cins = (skips[-1],) + filters[:-1]
        skip_in = (skips[3], skips[2], skips[1], skips[0], 0)
        self.upsample_blocks = nn.ModuleList(UpsampleBlock(ci, co, s) for ci, co, s in zip(cins, filters, skip_in))
        self.final_conv = conv(filters[-1], cfg.classes, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        saved = {}
        for i, child in enumerate(self.backbone):
            x = child(x)
            saved[i] = x
        return [saved[_OUTPUT_INDEX]] + [saved[i] for i in _SKIP_INDICES]

    def forward(self, x: torch.Tensor, decode: bool = True):
        features = self.encode(x)
        if not decode:
            return None, features
        y = features[0]
        for block, skip in zip(self.upsample_blocks, features[1:] + [None]):
            y = block(y, skip)
        return self.final_conv(y), features
