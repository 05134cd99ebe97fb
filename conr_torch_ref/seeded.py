"""Seeded random weights in the official checkpoint format: a stand-in for the real downloads in tests and the demo.

`torch.save(net.state_dict())` under the official file names (udpparsernet.pth, ...), exactly what the official
inference code loads. Default initialisation is perturbed so that every tensor carries information: instance-norm
scales/biases and PReLU slopes are drawn at random too, so a swapped or dropped parameter shows in parity tests.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from conr_common.atomic import atomic_path
from conr_common.config import NETWORK_NAMES, OFFICIAL, CoNRConfig
from conr_common.manifest import official_manifest
from .model import build_networks

COMPLETE_MARKER = ".seeded-complete"


def seeded_state_dicts(seed: int = 0, config: CoNRConfig = OFFICIAL) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # default initialisers draw from the global generator
    nets = build_networks(config)
    states = {}
    for name in NETWORK_NAMES:
        state = nets[name].state_dict()
        for key, t in state.items():
            if t.ndim == 1 and key.endswith("norm.weight"):
                t.copy_(1.0 + 0.2 * torch.randn(t.shape, generator=gen))
            elif t.ndim == 1 and key.endswith("norm.bias"):
                t.copy_(0.2 * torch.randn(t.shape, generator=gen))
            elif t.ndim == 1 and key.endswith(".weight"):  # PReLU slopes
                t.copy_(torch.empty(t.shape).uniform_(0.05, 0.45, generator=gen))
        states[name] = state
    return states


def write_seeded_weights(folder: str | Path, seed: int = 0, config: CoNRConfig = OFFICIAL) -> Path:
    """Write the four official-format `.pth` files into `folder` (skipped when already complete for this seed)."""
    folder = Path(folder)
    marker = folder / COMPLETE_MARKER
    if marker.is_file() and marker.read_text().strip() == str(seed):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, state in seeded_state_dicts(seed, config).items():
        with atomic_path(folder / official_manifest()[name].file) as tmp:
            torch.save(state, tmp)
    marker.write_text(f"{seed}\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conr_torch_ref.seeded", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write udpparsernet.pth, target_pose_encoder.pth, ...")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_seeded_weights(args.out, args.seed)
    print(f"seeded official-format weights (seed {args.seed}) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
