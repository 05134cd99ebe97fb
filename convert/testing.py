"""Cheap official-format checkpoints for tests and benchmarks: random arrays with the manifest's names and shapes."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from conr_common.config import NETWORK_NAMES
from conr_common.manifest import official_manifest

__all__ = ["random_official_state", "write_official_folder"]


def random_official_state(name: str, seed: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """`{official key: random array}` of network `name` (torch names, manifest order), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, spec in official_manifest()[name].tensors.items():
        out[key] = (rng.standard_normal(spec.shape, dtype=np.float32) * 0.05).astype(dtype, copy=False)
    return out


def write_official_folder(
    folder: str | os.PathLike, seed: int = 0, networks: Iterable[str] = NETWORK_NAMES, dtype=np.float32
) -> dict[str, Path]:
    """Write `<official file name>` (e.g. `shader.pth`) for each network with `torch.save`, one at a time."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, name in enumerate(networks):
        state = random_official_state(name, seed + i, dtype)
        path = folder / official_manifest()[name].file
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
        paths[name] = path
        del state
    return paths
