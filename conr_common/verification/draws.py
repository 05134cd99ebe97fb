"""Weight draws: how seeded random weights in the official format are initialised (tests, demo, benchmarks).

The official weights cannot be downloaded here, so every test and the demo run on random weights saved exactly
like the official files. A draw must exercise the network: PyTorch's default initialisation (uniform, std
1/sqrt(3 fan_in)) renders an almost constant RGBA (per-channel std about 1e-3 at 128 px), which makes RGBA
agreement nearly meaningless. He-normal convolutions keep the signal alive through the ResNet parser and the
shader's residual blocks, and give renders with contrast. Several draws with different scales make the parity
suite run on more than one "world" (issue #11): the network's conditioning, and with it float32 error, depends
on the weights.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WeightDraw:
    """One reproducible weight draw.

    seed: the generator seed. conv_gain: convolution and transposed-convolution weights are He-normal
    (std = conv_gain * sqrt(2 / fan_in), fan_in as torch counts it), biases normal with std bias_std.
    norm_scale_std / norm_bias_std: instance-norm scales 1 + N(0, std), biases N(0, std). prelu_slope and
    prelu_spread: PReLU slopes uniform in prelu_slope +- prelu_spread. The official-format 1x1 "norm" convs of
    the RGBA decoder are convolutions and follow conv_gain."""

    name: str
    seed: int
    conv_gain: float = 1.0
    bias_std: float = 0.02
    norm_scale_std: float = 0.1
    norm_bias_std: float = 0.1
    prelu_slope: float = 0.25
    prelu_spread: float = 0.05


# The project's own seeded weights (tests' session fixture, the demo, the benchmarks).
SEEDED = WeightDraw("seeded", seed=0)

# Other worlds for the parity suite: other seeds, smaller and larger init scales, wider norm scales.
DRAWS: dict[str, WeightDraw] = {
    d.name: d
    for d in (
        SEEDED,
        # measured at 128 px / 3 views: conv_gain 0.8 renders nearly flat (RGBA std 0.005), 1.25 is chaotic
        # (torch fp32 is 0.8 away from its own float64 run); 0.95 and 1.1 keep contrast and a float32 error
        # of 1e-6..1e-4
        WeightDraw("narrow", seed=1, conv_gain=0.95, norm_scale_std=0.2, norm_bias_std=0.2, prelu_slope=0.2),
        WeightDraw("wide", seed=2, conv_gain=1.1, bias_std=0.05, norm_scale_std=0.05, norm_bias_std=0.05,
                   prelu_slope=0.3, prelu_spread=0.1),
    )
}


def draw_named(name: str) -> WeightDraw:
    try:
        return DRAWS[name]
    except KeyError:
        raise ValueError(f"unknown weight draw {name!r}; known: {', '.join(DRAWS)}") from None
