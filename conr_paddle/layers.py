"""Tiny layer factories of the Paddle port (the Paddle side of conr_torch_ref/layers.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

if TYPE_CHECKING:
    from conr_paddle.ops import PReLUFn

# How a float32 instance norm computes its per-channel statistics:
# - "float64": the input is cast to float64, normalised by Paddle's float64 kernel, and cast back (default);
# - "native": Paddle's float32 CPU kernel as is.
# Why: Paddle 3.3.1's float32 CPU `instance_norm` loses precision when a channel's mean is large against its
# spread (measured on (2, 64, 64, 64) inputs with std 1, max abs error against float64 at means 0 / 10 / 100:
# native 1.0e-6 / 4.1e-6 / 3.4e-5, torch's float32 kernel 5.7e-7 / 1.3e-6 / 6.9e-6, float64 statistics
# 2.3e-7 / 2.4e-7 / 2.4e-7, which is the float32 rounding of the output). CoNR's deep ResNet-50 parser and the
# shader's warps amplify that error: 4.1e-3 on the final RGBA against torch's own 1.3e-4 (docs/facts.md,
# "Float32 accuracy"). A two-pass float32 version made of Paddle ops is worse (its float32 `mean` is the
# inaccurate part). Float64 inputs always take Paddle's kernel unchanged.
NORM_STATISTICS = ("float64", "native")


class AccurateInstanceNorm2D(nn.InstanceNorm2D):
    """`nn.InstanceNorm2D` (same parameters `scale`, `bias`) whose float32 statistics are computed in float64.

    `statistics` is one of NORM_STATISTICS; `set_norm_statistics` changes it on a built model."""

    def __init__(self, channels: int, statistics: str = "float64") -> None:
        super().__init__(channels, epsilon=1e-5, momentum=0.9, data_format="NCHW")
        if statistics not in NORM_STATISTICS:
            raise ValueError(f"statistics must be one of {NORM_STATISTICS}, got {statistics!r}")
        self.statistics = statistics

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.statistics == "native" or x.dtype != paddle.float32:
            return super().forward(x)
        y = F.instance_norm(
            x.astype("float64"),
            weight=self.scale.astype("float64"),
            bias=self.bias.astype("float64"),
            eps=self._epsilon,
            momentum=self._momentum,
            data_format="NCHW",
        )
        return y.astype("float32")


class InstanceNorm(nn.Layer):
    """Affine instance norm (eps 1e-5, no running statistics) wrapped as `.norm`: params `*.norm.scale/bias`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = AccurateInstanceNorm2D(channels)

    def forward(self, x):
        return self.norm(x)


def set_norm_statistics(model: nn.Layer, statistics: str) -> int:
    """Set how every instance norm of `model` computes float32 statistics (NORM_STATISTICS); returns how many."""
    if statistics not in NORM_STATISTICS:
        raise ValueError(f"statistics must be one of {NORM_STATISTICS}, got {statistics!r}")
    count = 0
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, AccurateInstanceNorm2D):
            layer.statistics = statistics
            count += 1
    return count


def norm_statistics(model: nn.Layer) -> str:
    """How the instance norms of `model` compute float32 statistics: one of NORM_STATISTICS, or "mixed"."""
    kinds = {layer.statistics for layer in model.sublayers(include_self=True)
             if isinstance(layer, AccurateInstanceNorm2D)}
    return kinds.pop() if len(kinds) == 1 else "mixed"


# Float32 convolutions whose output has fewer pixels per map than this run in float64. Why: Paddle 3.3.1's eager
# CPU conv2d (im2col + MKL sgemm) loses precision when the output is small and its pixel count is not a multiple
# of 16 (the GEMM's tail path): measured scaled error against float64, 3x3 conv of 2048 channels, output 2x2 /
# 3x3 / 6x6: Paddle 3.4e-6 / 1.4e-6 / 2.8e-6, torch 3.5e-7 / 3.3e-7 / 4.9e-7; at 4x4, 8x8, 16x16 both ~4e-7.
# CoNR's shader runs its first levels on such maps (S/32 and S/16, then two stride-2 convs: 2x2 at 128 px) with
# up to 5388 input channels: 8.6e-6 there against torch's 4.6e-7. Those convolutions are a tiny share of the
# work (their output is under 256 pixels), so computing them in float64 costs almost nothing.
SMALL_OUTPUT_PIXELS = 256


class AccurateConv2D(nn.Conv2D):
    """`nn.Conv2D` (same parameters) computed in float64 when its float32 output map is small (SMALL_OUTPUT_PIXELS)."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.computes_in_float64(x):
            return self.float64_forward(x)
        return super().forward(x)

    def computes_in_float64(self, x: paddle.Tensor) -> bool:
        """Whether `forward(x)` runs in float64: eager float32 with a small output only. Exported graphs run
        oneDNN's convolutions, which do not have this loss (and PIR's conv+bias fusion has no float64 kernel)."""
        return (x.dtype == paddle.float32 and paddle.in_dynamic_mode()
                and self.small_output(int(x.shape[-2]), int(x.shape[-1])))

    def float64_forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = F.conv2d(
            x.astype("float64"),
            self.weight.astype("float64"),
            None if self.bias is None else self.bias.astype("float64"),
            stride=self._stride,
            padding=self._padding,
            dilation=self._dilation,
            groups=self._groups,
            data_format="NCHW",
        )
        return y.astype("float32")

    def small_output(self, h: int, w: int) -> bool:
        (kh, kw), (sh, sw), (dh, dw) = self._kernel_size, self._stride, self._dilation
        ph, pw = self._padding if isinstance(self._padding, (list, tuple)) else (self._padding, self._padding)
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        return oh * ow < SMALL_OUTPUT_PIXELS


class PReLU(nn.PReLU):
    """`nn.PReLU` (same parameter `_weight`) computed by `prelu` (`BlockOps.prelu`)."""

    def __init__(self, channels: int, prelu: PReLUFn) -> None:
        super().__init__(channels)
        self.prelu = prelu

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.prelu(x, self._weight)


def prelu(x: paddle.Tensor, weight: paddle.Tensor) -> paddle.Tensor:
    """Paddle's prelu op, as `nn.PReLU` calls it."""
    return F.prelu(x, weight, data_format="NCHW")


def conv(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, bias: bool = True) -> nn.Conv2D:
    return AccurateConv2D(cin, cout, kernel_size=k, stride=stride, padding=padding, bias_attr=None if bias else False)


def deconv(cin: int, cout: int, k: int = 4, stride: int = 2, padding: int = 1, bias: bool = True) -> nn.Conv2DTranspose:
    return nn.Conv2DTranspose(
        cin, cout, kernel_size=k, stride=stride, padding=padding, output_padding=0, bias_attr=None if bias else False
    )
