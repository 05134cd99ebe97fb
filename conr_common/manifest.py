"""The contract real checkpoints must meet: every tensor (key, shape, dtype) of the four official files.

`official_manifest.json` is a copy of shared/conr_official_state_dicts.json (state_dict() of the networks built by
the official inference code, megvii-research/CoNR @ 660c4f7).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class NetworkManifest:
    name: str
    file: str
    num_parameters: int
    tensors: dict[str, TensorSpec]


@cache
def official_manifest() -> dict[str, NetworkManifest]:
    """Network name -> manifest, in the official order (parser, pose encoder, shader, decoder)."""
    raw = json.loads(resources.files("conr_common").joinpath("official_manifest.json").read_text())
    out: dict[str, NetworkManifest] = {}
    for name, comp in raw["components"].items():
        tensors = {k: TensorSpec(tuple(v["shape"]), v["dtype"]) for k, v in comp["tensors"].items()}
        out[name] = NetworkManifest(name, comp["file"], int(comp["num_parameters"]), tensors)
    return out
