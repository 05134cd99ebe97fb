"""Give a freshly constructed torch module's normalisation layers statistics worth verifying.

A network built by its constructor has BatchNorm running mean 0, running variance 1, weight 1 and bias 0: in eval
mode every BatchNorm is then the identity up to 1/sqrt(1 + eps), and a port that swapped the mean and the variance,
dropped the affine part or read the wrong statistic would pass unseen. `exercise_norms` draws, from one seeded
numpy generator in definition order, for every BatchNorm / InstanceNorm with running statistics: mean N(0, 0.1),
variance U(0.5, 1.5); and for every affine normalisation (BatchNorm, InstanceNorm, GroupNorm, LayerNorm): weight
U(0.9, 1.1), bias N(0, 0.1). Shifts of that size keep the activations of a deep network within a few orders of
magnitude of the constructor's, so the outputs keep their contrast (a checked property of the zoo tests).
The CLI calls it when no --torch-weights are given; weights loaded from a file are never touched.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NormDraws:
    """The distributions drawn from (the module docstring says why these)."""

    mean_std: float = 0.1
    var_low: float = 0.5
    var_high: float = 1.5
    weight_spread: float = 0.1
    bias_std: float = 0.1


def exercise_norms(torch_module, seed: int, draws: NormDraws = NormDraws()) -> list[str]:
    """Redraw the statistics and affine parameters of every normalisation layer of `torch_module` in place, from
    `seed` (the same seed gives the same values). Returns the qualified names of the layers changed."""
    import torch

    rng = np.random.default_rng(seed)
    changed = []
    with torch.no_grad():
        for path, module in torch_module.named_modules():
            touched = _draw_statistics(module, rng, draws) | _draw_affine(module, rng, draws)
            if touched:
                changed.append(path)
    return changed


def _draw_statistics(module, rng: np.random.Generator, draws: NormDraws) -> bool:
    import torch

    if not isinstance(module, _running_stat_norms(torch)) or module.running_mean is None or module.running_var is None:
        return False
    size = module.running_mean.shape
    module.running_mean.copy_(_tensor(rng.normal(0.0, draws.mean_std, size), module.running_mean))
    module.running_var.copy_(_tensor(rng.uniform(draws.var_low, draws.var_high, size), module.running_var))
    return True


def _draw_affine(module, rng: np.random.Generator, draws: NormDraws) -> bool:
    import torch

    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    if not isinstance(module, (*_running_stat_norms(torch), torch.nn.GroupNorm, torch.nn.LayerNorm)) or weight is None:
        return False
    spread = draws.weight_spread
    weight.copy_(_tensor(rng.uniform(1.0 - spread, 1.0 + spread, weight.shape), weight))
    if bias is not None:
        bias.copy_(_tensor(rng.normal(0.0, draws.bias_std, bias.shape), bias))
    return True


def _running_stat_norms(torch) -> tuple[type, ...]:
    """The public classes that may keep running statistics (their Lazy variants are subclasses)."""
    nn = torch.nn
    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
            nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def _tensor(values: np.ndarray, like):
    import torch

    return torch.from_numpy(values).to(dtype=like.dtype, device=like.device)
