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
(`conr_common.data.samples`' pose image of the UDP frame, cropped and resized exactly like the UDP frame): the image CoNR
is trained to produce for that pose.

A leg keeps only its loss per step, its seconds, and a summary of the final parameters: the update of a fixed
random sample of elements of every trained tensor (same indices in every leg, official names).
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import numpy as np

from conr_common.contract.config import NETWORK_NAMES
from portcheck.optim import OptimizerSpec, paddle_effective, paddle_optimizer, torch_optimizer

__all__ = ["TRAINED", "TRAIN_CHOICES", "frozen", "Leg", "sample_indices", "perturb_", "torch_leg",
           "paddle_leg", "PERTURB_REL"]

TRAINED = ("shader", "rgbadecodernet")
# `--train`: all = the shader and the RGBA decoder (the default); decoder = the RGBA decoder only (the shader frozen
# too: a cheap run whose backward stops at the decoder, for smoke tests).
TRAIN_CHOICES = {"all": TRAINED, "decoder": ("rgbadecodernet",)}
SAMPLES_PER_TENSOR = 64
# The sensitivity leg's perturbation: every float weight times (1 +- 1e-15), a random sign per element: a few
# float64 ulps (2^-52 = 2.2e-16), i.e. what one float64 rounding more or less anywhere does to the start.
PERTURB_REL = 1e-15


def frozen(trained: tuple[str, ...]) -> tuple[str, ...]:
    """The networks that do not train (their features computed once per leg, outside the graph)."""
    return tuple(n for n in NETWORK_NAMES if n not in trained)


def perturb_(model, rel: float, seed: int) -> None:
    """Multiply every parameter of a (float64) torch model by (1 +- rel) in place, signs drawn from `seed`. Done
    after the cast to float64: the official weights are float32, where 1e-15 would round away."""
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.0 + rel * torch.from_numpy(rng.choice([-1.0, 1.0], size=tuple(p.shape))).to(p.dtype))


@dataclass
class Leg:
    """What one leg leaves behind: its loss before each step, the sampled parameter updates, seconds."""

    losses: list[float]
    updates: dict[str, np.ndarray]
    seconds: float


def sample_indices(states: dict[str, dict], seed: int, trained: tuple[str, ...] = TRAINED) -> dict[str, np.ndarray]:
    """Fixed flat indices (at most SAMPLES_PER_TENSOR) of every trained tensor, keyed `network.tensor`."""
    rng = np.random.default_rng(seed)
    out = {}
    for net in trained:
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


def torch_leg(states: dict, data: dict, spec: OptimizerSpec, steps: int, dtype: str, idx: dict,
              trained: tuple[str, ...] = TRAINED, perturb: float = 0.0) -> Leg:
    """torch reference, `steps` optimizer steps in `dtype` (states: official names, numpy). The optimizer is built
    from `paddle_effective(spec)`: Paddle's Momentum computes with float32(mu) even in float64, so both frameworks
    run the same arithmetic (portcheck.optim). `perturb`: the weights times (1 +- perturb) first (`perturb_`)."""
    import torch

    from conr_torch_ref.model import load_networks, unloaded

    t0 = time.perf_counter()
    model = load_networks(unloaded(), states).to(getattr(torch, dtype)).eval()
    if perturb:
        perturb_(model, perturb, seed=1)
    T = lambda a: torch.from_numpy(np.ascontiguousarray(a.astype(dtype)))  # noqa: E731
    for net in frozen(trained):
        getattr(model, net).requires_grad_(False)
    with torch.no_grad():
        sheet = model.parse_sheet(T(data["sheet"]))
        target_features = model.encode_target(T(data["xyz"]), T(data["alpha"]))
    target = T(data["target"])
    opt = torch_optimizer(paddle_effective(spec), [p for net in trained for p in getattr(model, net).parameters()])
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = (model.shade(sheet, target_features) - target).abs().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    final = {f"{net}.{k}": v.detach().double().numpy() for net in trained
             for k, v in getattr(model, net).state_dict().items()}
    del model, opt, sheet, target_features
    gc.collect()
    return Leg(losses, _updates(final, states, idx), time.perf_counter() - t0)


def paddle_leg(states: dict, paddle_states: dict, data: dict, spec: OptimizerSpec, steps: int, dtype: str,
               idx: dict, trained: tuple[str, ...] = TRAINED) -> Leg:
    """The Paddle port, the same steps (paddle_states: Paddle names; the summary under official names)."""
    import paddle

    from conr_common.contract.rename import torch_to_paddle_key
    from conr_paddle.model import load_networks, unloaded

    t0 = time.perf_counter()
    model = load_networks(unloaded(), paddle_states)
    if dtype == "float64":
        model.to(dtype="float64")
    model.eval()
    P = lambda a: paddle.to_tensor(np.ascontiguousarray(a.astype(dtype)))  # noqa: E731
    for net in frozen(trained):
        for p in getattr(model, net).parameters():
            p.stop_gradient = True
    with paddle.no_grad():
        sheet = model.parse_sheet(P(data["sheet"]))
        target_features = model.encode_target(P(data["xyz"]), P(data["alpha"]))
    target = P(data["target"])
    opt = paddle_optimizer(spec, [p for net in trained for p in getattr(model, net).parameters()])
    losses = []
    for _ in range(steps):
        loss = (model.shade(sheet, target_features) - target).abs().mean()
        loss.backward()
        opt.step()
        opt.clear_grad(set_to_zero=False)
        losses.append(float(loss))
    own = {net: {k: v for k, v in getattr(model, net).state_dict().items()} for net in trained}
    final = {f"{net}.{k}": own[net][torch_to_paddle_key(k, np.shape(v))].numpy()
             for net in trained for k, v in states[net].items()}
    del model, opt, sheet, target_features, own
    gc.collect()
    return Leg(losses, _updates(final, states, idx), time.perf_counter() - t0)
