"""Analytic FLOP count of CoNR inference: convolutions and transposed convolutions, which dominate the work.

Counted with forward hooks on every `Conv2D` / `Conv2DTranspose` of an eager `CoNR` during one small forward
pass (S = 128, one sheet view, one frame), per top-level network; 2 FLOP per multiply-add:
- Conv2D: 2 * Cin/groups * Cout * k_h * k_w * H_out * W_out per sample;
- Conv2DTranspose: 2 * Cin * Cout/groups * k_h * k_w * H_in * W_in per sample (every input pixel scatters one
  k x k kernel; 2 * Cin * Cout * k^2 * H_out * W_out would count the stride^2 zeros of the dilated input).
Every feature map of CoNR scales with S (S is a multiple of 128, all strides are powers of two), so counts scale
exactly with (S / 128)^2; the shader runs once per sheet view (batch B * M), so it scales with M, while the pose
encoder and the RGBA decoder run once per frame. Resampling, norms and activations are not counted (a few %).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import paddle
import paddle.nn as nn

BASE_SIZE = 128


@dataclass(frozen=True)
class FlopCount:
    """GFLOP for one configuration (size, views)."""

    size: int
    views: int
    frame: float  # one frame with the sheet features cached: pose encoder + shader (M views) + RGBA decoder
    sheet: float  # parsing the M sheet images (parser encoder only, as CoNR.parse_sheet)
    pose_parse: float  # one pose image through the full parser (the pose-image path only)

    @property
    def first_frame(self) -> float:
        return self.frame + self.sheet


def _conv_flops(layer: nn.Layer, inputs, output) -> int:
    w = layer.weight.shape
    x = inputs[0]
    n = int(x.shape[0])
    if isinstance(layer, nn.Conv2DTranspose):
        cin, cout_g, kh, kw = (int(v) for v in w)
        return 2 * n * cin * cout_g * kh * kw * int(x.shape[2]) * int(x.shape[3])
    cout, cin_g, kh, kw = (int(v) for v in w)
    return 2 * n * cout * cin_g * kh * kw * int(output.shape[2]) * int(output.shape[3])


@lru_cache(maxsize=None)
def _base_counts() -> dict[str, int]:
    """FLOP per network at S = 128, one view, one frame, with the default architecture. Its parameters are zeros
    (Paddle's global initializer for the construction): the count depends on shapes only, and building the model with
    180 M random values took 2.7 s, with zeros 0.4 s (2-core AMD EPYC; the same 550.1 GFLOP at 256 px / 4 views)."""
    from conr_paddle.model import CoNR

    zero = paddle.nn.initializer.Constant(0.0)
    paddle.nn.initializer.set_global_initializer(zero, zero)
    try:
        model = CoNR()
    finally:
        paddle.nn.initializer.set_global_initializer(None)
    totals: dict[str, int] = {}
    current = {"name": None}

    def hook(layer, inputs, output):
        totals[current["name"]] = totals.get(current["name"], 0) + _conv_flops(layer, inputs, output)

    handles = [
        sub.register_forward_post_hook(hook)
        for _, sub in model.named_sublayers()
        if isinstance(sub, (nn.Conv2D, nn.Conv2DTranspose))
    ]
    s = BASE_SIZE
    rs = np.random.RandomState(0)
    try:
        with paddle.no_grad():
            current["name"] = "sheet"
            # float32 here: the default float64 parse runs on a transient copy whose convs these hooks do not see;
            # the operation count is the same
            sheet = model.parse_sheet(paddle.to_tensor(rs.rand(1, 4, s, s).astype("float32")), precision="float32")
            current["name"] = "encoder"
            target = model.encode_target(
                paddle.to_tensor(rs.rand(1, 3, s, s).astype("float32")), paddle.ones([1, 1, s, s], "float32")
            )
            # The shader and decoder run inside shade(); split them by running the decoder alone afterwards.
            current["name"] = "shade"
            model.shade(sheet, target)
            current["name"] = "decoder"
            model.rgbadecodernet(paddle.zeros([1, model.rgbadecodernet.conv_rgba[0]._in_channels, s, s]))
            current["name"] = "pose_parse"
            model.parse_pose(paddle.to_tensor(rs.rand(1, 3, s, s).astype("float32")))
    finally:
        for h in handles:
            h.remove()
    totals["shader"] = totals.pop("shade") - totals["decoder"]
    return totals


def count(size: int = 256, views: int = 4) -> FlopCount:
    base = _base_counts()
    scale = (size / BASE_SIZE) ** 2 / 1e9
    return FlopCount(
        size=size,
        views=views,
        frame=scale * (base["encoder"] + views * base["shader"] + base["decoder"]),
        sheet=scale * views * base["sheet"],
        pose_parse=scale * base["pose_parse"],
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m conr_engines.flops", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=4)
    args = parser.parse_args(argv)
    c = count(args.size, args.views)
    print(f"{args.size} px, {args.views} views: frame {c.frame:.1f} GFLOP (sheet cached), "
          f"first frame {c.first_frame:.1f}, sheet parse {c.sheet:.1f}, pose-image parse {c.pose_parse:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
