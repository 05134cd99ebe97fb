"""Seeded random weights in the official checkpoint format: a stand-in for the real downloads in tests, benchmarks
and the demo (the project's one generator of random weights).

`torch.save(net.state_dict())` under the official file names (udpparsernet.pth, ...), exactly what the official
inference code loads. How the tensors are drawn is a `conr_common.verification.draws.WeightDraw`: He-normal convolutions,
random instance-norm scales/biases and PReLU slopes, so renders have contrast and a swapped or dropped parameter
shows in parity tests.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from conr_common.platform.atomic import atomic_path
from conr_common.contract.config import NETWORK_NAMES, OFFICIAL, CoNRConfig
from conr_common.verification.draws import DRAWS, SEEDED, WeightDraw, draw_named
from conr_common.contract.manifest import official_manifest
from conr_torch_ref.model import build_network, build_networks

COMPLETE_MARKER = ".seeded-complete"


def _fan_in(weight: torch.Tensor) -> int:
    """torch's fan_in: size(1) * kernel area (for ConvTranspose weights (in, out, k, k) that is out * k * k)."""
    return weight.shape[1] * math.prod(weight.shape[2:])


@torch.no_grad()
def _draw_into(net: nn.Module, draw: WeightDraw, gen: torch.Generator) -> None:
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            std = draw.conv_gain * math.sqrt(2.0 / _fan_in(module.weight))
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * draw.bias_std)
        elif isinstance(module, nn.InstanceNorm2d) and module.affine:
            module.weight.copy_(1.0 + draw.norm_scale_std * torch.randn(module.weight.shape, generator=gen))
            module.bias.copy_(draw.norm_bias_std * torch.randn(module.bias.shape, generator=gen))
        elif isinstance(module, nn.PReLU):
            u = torch.rand(module.weight.shape, generator=gen) * 2.0 - 1.0
            module.weight.copy_(draw.prelu_slope + draw.prelu_spread * u)


def seeded_state_dicts(draw: WeightDraw = SEEDED, config: CoNRConfig = OFFICIAL) -> dict[str, dict[str, torch.Tensor]]:
    """The four official state dicts of `draw` (reproducible: one generator seeded with draw.seed)."""
    gen = torch.Generator().manual_seed(draw.seed)
    nets = build_networks(config)
    states = {}
    for name in NETWORK_NAMES:
        _draw_into(nets[name], draw, gen)
        states[name] = nets[name].state_dict()
    return states


def seeded_network_state(name: str, draw: WeightDraw = SEEDED, config: CoNRConfig = OFFICIAL) -> dict[str, np.ndarray]:
    """One network drawn alone, with its own generator seeded with draw.seed, as numpy arrays under the official
    names (not the same values as that network in `seeded_state_dicts`, which draws the four from one generator)."""
    net = build_network(name, config)
    _draw_into(net, draw, torch.Generator().manual_seed(draw.seed))
    return {key: value.numpy() for key, value in net.state_dict().items()}


def write_seeded_weights(folder: str | Path, draw: WeightDraw = SEEDED, config: CoNRConfig = OFFICIAL,
                         float_dtype: torch.dtype = torch.float32) -> Path:
    """Write the four official-format `.pth` files into `folder` (skipped when already complete for this draw and
    dtype). float_dtype: the dtype the floating-point tensors are saved in (torch.float16 halves the bytes; both
    loaders and the converter accept it, `conr_common.contract.manifest.ALLOWED_DTYPES`)."""
    folder = Path(folder)
    marker = folder / COMPLETE_MARKER
    stamp = repr(draw) if float_dtype == torch.float32 else f"{draw!r} {float_dtype}"
    if marker.is_file() and marker.read_text().strip() == stamp:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, state in seeded_state_dicts(draw, config).items():
        state = {k: v.to(float_dtype) if v.is_floating_point() else v for k, v in state.items()}
        with atomic_path(folder / official_manifest()[name].file) as tmp:
            torch.save(state, tmp)
    marker.write_text(f"{stamp}\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conr_torch_ref.seeded", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write udpparsernet.pth, target_pose_encoder.pth, ...")
    parser.add_argument("--draw", default=SEEDED.name, choices=sorted(DRAWS),
                        help=f"weight draw (conr_common.verification.draws; default {SEEDED.name})")
    args = parser.parse_args(argv)
    draw = draw_named(args.draw)
    write_seeded_weights(args.out, draw)
    print(f"seeded official-format weights ({draw}) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
