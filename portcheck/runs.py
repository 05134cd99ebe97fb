"""One forward pass of one side, recorded: the torch module or the Paddle layer (a copy cast to float64 for the
truth passes, a copy in train mode for `train=True`, so the caller's objects are never changed), every named
layer's output per call, and, in train mode, each BatchNorm's running statistics after the pass.

Modes: eval() everywhere by default. With `train=True` only the BatchNorm layers are put in train mode (batch
statistics, running-statistics update); Dropout stays in eval mode on both sides either way, because random masks
cannot match across frameworks (`dropout_names` lists them for the result's note).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from portcheck.record import PaddleRecorder, TorchRecorder

__all__ = ["Run", "torch_run", "paddle_run", "dropout_names", "torch_batchnorms", "paddle_batchnorms"]


@dataclass
class Run:
    """What one pass recorded: call keys in execution order, each call's outputs (numpy), every module's class
    name and leafness, module names in definition order, BatchNorm running statistics after the pass (train)."""

    keys: list[str] = field(default_factory=list)
    outputs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    leaf: dict[str, bool] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def first_call(self) -> dict[str, int]:
        return first_calls(self.keys)


def dropout_names(named) -> list[str]:
    """Names of the dropout layers among (name, module) pairs, either framework (Dropout, Dropout2d/2D,
    AlphaDropout, FeatureAlphaDropout ...)."""
    return [n for n, m in named if "Dropout" in type(m).__name__]


def torch_batchnorms(module) -> dict:
    import torch

    return {n: m for n, m in module.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}


def paddle_batchnorms(layer) -> dict:
    import paddle

    return {n: m for n, m in layer.named_sublayers(include_self=True)
            if isinstance(m, paddle.nn.layer.norm._BatchNormBase)}


def _as_tuple(inputs) -> tuple:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _cast(a: np.ndarray, dtype: str) -> np.ndarray:
    a = np.asarray(a)
    return np.ascontiguousarray(a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a)


def torch_run(module, inputs, dtype: str, train: bool) -> Run:
    """The torch side in `dtype` ("float32" or "float64") on `inputs` (numpy arrays, float ones cast)."""
    import torch

    if dtype == "float64" or train:
        module = copy.deepcopy(module)
        module = module.double() if dtype == "float64" else module
    module.eval()
    bns = torch_batchnorms(module)
    for bn in bns.values() if train else ():
        bn.train()
    run = Run(names=[n for n, _ in module.named_modules()])
    for n, m in module.named_modules():
        run.types[n], run.leaf[n] = type(m).__name__, next(m.children(), None) is None
    rec = TorchRecorder(module, copy_outputs=True, include_root=True)
    try:
        with torch.no_grad():
            module(*(torch.from_numpy(_cast(a, dtype)) for a in _as_tuple(inputs)))
    finally:
        rec.remove()
    for c in rec.calls:
        run.keys.append(c.key)
        run.outputs[c.key] = [t.cpu().numpy() for t in c.outputs]
    if train:
        run.stats = {n: {"mean": bn.running_mean.detach().cpu().numpy().copy(),
                         "variance": bn.running_var.detach().cpu().numpy().copy()}
                     for n, bn in bns.items() if bn.running_mean is not None}
    return run


def paddle_run(layer, inputs, dtype: str, train: bool) -> Run:
    """The Paddle side in `dtype` on `inputs` (numpy arrays, float ones cast)."""
    import paddle

    if dtype == "float64" or train:
        layer = copy.deepcopy(layer)
        if dtype == "float64":
            layer.to(dtype="float64")
    layer.eval()
    bns = paddle_batchnorms(layer)
    for bn in bns.values() if train else ():
        bn.train()
    named = list(layer.named_sublayers(include_self=True))
    run = Run(names=[n for n, _ in named])
    for n, m in named:
        run.types[n], run.leaf[n] = type(m).__name__, not m.sublayers()

    def on_call(name: str, call: int, tensors: list) -> None:
        run.keys.append(f"{name}#{call}")
        run.outputs[f"{name}#{call}"] = [t.numpy() for t in tensors]  # .numpy() copies

    rec = PaddleRecorder(layer, on_call, include_root=True)
    try:
        with paddle.no_grad():
            layer(*(paddle.to_tensor(_cast(a, dtype)) for a in _as_tuple(inputs)))
    finally:
        rec.remove()
    if train:
        run.stats = {n: {"mean": bn._mean.numpy().copy(), "variance": bn._variance.numpy().copy()}
                     for n, bn in bns.items()}
    return run


def first_calls(keys) -> dict[str, int]:
    """Module name -> index of its first call among `keys` (`<name>#<call>` in execution order): what the pairing's
    execution-order fallback sorts children by."""
    out: dict[str, int] = {}
    for i, key in enumerate(keys):
        out.setdefault(key.rpartition("#")[0], i)
    return out
