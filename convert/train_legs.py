"""The four training legs of `python -m convert train-parity`: torch and Paddle, each in float32 and float64, run
one after another from the same official-format weights, each freed before the next (a CoNR pair with gradients
and Adam state in float64 is several GB).

What trains: the shader (CINN, 96.1 M parameters) and the RGBA decoder (84 k). The UDP parser and the target pose
encoder are frozen: their features are computed once per leg, in the leg's dtype, outside the graph (the sheet as
each framework's renderer parses it). Every shader warp is on the training path (the flows train), including the
warp of the reference image, whose sampled input never requires grad: Paddle's warp takes care of grid_sample's
backward crash there (conr_paddle.warp, branch wp-backward).

The loss is the L1 reconstruction of the pose frame's RGBA: mean over 4 x S x S of |render - target|, both
premultiplied RGBA in [0, 1], the target being the procedural character's own textured render in the same pose
(`conr_common.samples`' pose image of the UDP frame, cropped and resized exactly like the UDP frame): the image CoNR
is trained to produce for that pose.

A leg keeps only its loss per step, its seconds, and a summary of the final parameters: the update of a fixed
random sample of elements of every trained tensor (same indices in every leg, official names).
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import numpy as np

from conr_common.config import NETWORK_NAMES
from portcheck.optim import OptimizerSpec, paddle_optimizer, torch_optimizer

__all__ = ["TRAINED", "FROZEN", "Leg", "sample_indices", "torch_leg", "paddle_leg"]

TRAINED = ("shader", "rgbadecodernet")
FROZEN = tuple(n for n in NETWORK_NAMES if n not in TRAINED)
SAMPLES_PER_TENSOR = 64


@dataclass
class Leg:
    """What one leg leaves behind: its loss before each step, the sampled parameter updates, seconds."""

    losses: list[float]
    updates: dict[str, np.ndarray]
    seconds: float


def sample_indices(states: dict[str, dict], seed: int) -> dict[str, np.ndarray]:
    """Fixed flat indices (at most SAMPLES_PER_TENSOR) of every trained tensor, keyed `network.tensor`."""
    rng = np.random.default_rng(seed)
    out = {}
    for net in TRAINED:
        for key, value in states[net].items():
            size = int(np.asarray(value).size)
            out[f"{net}.{key}"] = np.sort(rng.choice(size, size=min(size, SAMPLES_PER_TENSOR), replace=False))
    return out


def _updates(final: dict[str, np.ndarray], start: dict[str, dict], idx: dict[str, np.ndarray]) -> dict:
    out = {}
    for name, where in idx.items():
        net, key = name.split(".", 1)
        before = np.asarray(start[net][key], dtype=np.float64).reshape(-1)[where]
        out[name] = final[name].reshape(-1)[where].astype(np.float64) - before
    return out


def torch_leg(states: dict, data: dict, spec: OptimizerSpec, steps: int, dtype: str, idx: dict) -> Leg:
    """torch reference, `steps` optimizer steps in `dtype` (states: official names, numpy)."""
    import torch

    from conr_torch_ref.model import CoNR, load_networks

    t0 = time.perf_counter()
    model = load_networks(CoNR(), states).to(getattr(torch, dtype)).eval()
    T = lambda a: torch.from_numpy(np.ascontiguousarray(a.astype(dtype)))  # noqa: E731
    for net in FROZEN:
        getattr(model, net).requires_grad_(False)
    with torch.no_grad():
        sheet = model.parse_sheet(T(data["sheet"]))
        target_features = model.encode_target(T(data["xyz"]), T(data["alpha"]))
    target = T(data["target"])
    opt = torch_optimizer(spec, [p for net in TRAINED for p in getattr(model, net).parameters()])
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = (model.shade(sheet, target_features) - target).abs().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    final = {f"{net}.{k}": v.detach().double().numpy() for net in TRAINED
             for k, v in getattr(model, net).state_dict().items()}
    del model, opt, sheet, target_features
    gc.collect()
    return Leg(losses, _updates(final, states, idx), time.perf_counter() - t0)


def paddle_leg(states: dict, paddle_states: dict, data: dict, spec: OptimizerSpec, steps: int, dtype: str,
               idx: dict) -> Leg:
    """The Paddle port, the same steps (paddle_states: Paddle names; the summary under official names)."""
    import paddle

    from conr_common.rename import torch_to_paddle_key
    from conr_paddle.model import CoNR, load_networks

    t0 = time.perf_counter()
    model = load_networks(CoNR(), paddle_states)
    if dtype == "float64":
        model.to(dtype="float64")
    model.eval()
    P = lambda a: paddle.to_tensor(np.ascontiguousarray(a.astype(dtype)))  # noqa: E731
    for net in FROZEN:
        for p in getattr(model, net).parameters():
            p.stop_gradient = True
    with paddle.no_grad():
        sheet = model.parse_sheet(P(data["sheet"]))
        target_features = model.encode_target(P(data["xyz"]), P(data["alpha"]))
    target = P(data["target"])
    opt = paddle_optimizer(spec, [p for net in TRAINED for p in getattr(model, net).parameters()])
    losses = []
    for _ in range(steps):
        loss = (model.shade(sheet, target_features) - target).abs().mean()
        loss.backward()
        opt.step()
        opt.clear_grad(set_to_zero=False)
        losses.append(float(loss))
    own = {net: {k: v for k, v in getattr(model, net).state_dict().items()} for net in TRAINED}
    final = {f"{net}.{k}": own[net][torch_to_paddle_key(k, np.shape(v))].numpy()
             for net in TRAINED for k, v in states[net].items()}
    del model, opt, sheet, target_features, own
    gc.collect()
    return Leg(losses, _updates(final, states, idx), time.perf_counter() - t0)
