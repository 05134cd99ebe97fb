"""Layer-output recording for the parity report (`python -m convert verify`): forward hooks on every named layer of
both frameworks, keyed by layer name and call index.

Keys: `<layer name>#<k>` for the k-th call (0-based) of that layer in one forward pass, and `<key>[i]` for the i-th
tensor of a layer that returns several (a tuple or a list, flattened depth-first; `None` entries skipped). CoNR's
shader calls its parameter-free `shader.warp`, `shader.resize`, ... many times per pass, and both ports call them
in the same order, so the keys pair the two runs without any name mapping (the module names are the official ones
on both sides). Post-hooks fire when a layer returns, so a container comes after its children: "execution order"
below means the order in which layers finish.

The torch side keeps references to its outputs (and to the arguments of leaf layers for `--single-step`): CoNR
has no in-place op, so a kept tensor is never overwritten. The Paddle side is compared on the fly by a callback and
keeps nothing, which halves the memory of a report.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CallRecord", "TorchRecorder", "PaddleRecorder", "flatten_tensors", "output_keys"]


def flatten_tensors(obj, is_tensor: Callable[[object], bool]) -> list:
    """Tensors of a layer output, depth-first through tuples, lists and dict values; everything else skipped."""
    if is_tensor(obj):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in flatten_tensors(item, is_tensor)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in flatten_tensors(item, is_tensor)]
    return []


def output_keys(call_key: str, count: int) -> list[str]:
    """`name#k` for a single tensor, `name#k[i]` for each tensor of a multi-tensor output."""
    return [call_key] if count == 1 else [f"{call_key}[{i}]" for i in range(count)]


@dataclass
class CallRecord:
    """One call of one layer on the reference side."""

    name: str  # module name, e.g. "shader.warp"
    call: int  # call index of that module within the pass
    type: str  # class name, e.g. "Warp"
    leaf: bool  # no child modules
    outputs: list  # torch tensors, detached (references, not copies)
    args: tuple | None = None  # positional arguments (leaf layers, --single-step only)
    kwargs: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}#{self.call}"

    @property
    def network(self) -> str:
        return self.name.split(".", 1)[0]


class TorchRecorder:
    """Forward hooks on every named sub-module of `model` (the root excluded); `calls` in execution order."""

    def __init__(self, model, *, keep_leaf_inputs: bool = False) -> None:
        import torch

        self._torch = torch
        self.keep_leaf_inputs = keep_leaf_inputs
        self.calls: list[CallRecord] = []
        self._counts: dict[str, int] = defaultdict(int)
        self._handles = []
        for name, module in model.named_modules():
            if name:
                leaf = next(module.children(), None) is None
                self._handles.append(module.register_forward_hook(self._hook(name, leaf), with_kwargs=True))

    def _hook(self, name: str, leaf: bool):
        torch = self._torch

        def hook(module, args, kwargs, output):
            call = self._counts[name]
            self._counts[name] += 1
            outs = [t.detach() for t in flatten_tensors(output, lambda x: isinstance(x, torch.Tensor))]
            rec = CallRecord(name, call, type(module).__name__, leaf, outs)
            if leaf and self.keep_leaf_inputs:
                rec.args = tuple(_detach_torch(a, torch) for a in args)
                rec.kwargs = {k: _detach_torch(v, torch) for k, v in kwargs.items()}
            self.calls.append(rec)

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _detach_torch(obj, torch):
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_detach_torch(o, torch) for o in obj)
    return obj


class PaddleRecorder:
    """Forward post-hooks on every named sublayer of `model`; each call's output tensors go to
    `on_call(name, call, tensors)` as they are produced (nothing is kept). `active = False` pauses recording."""

    def __init__(self, model, on_call: Callable[[str, int, list], None]) -> None:
        import paddle

        self._paddle = paddle
        self.on_call = on_call
        self.active = True
        self.order: list[str] = []  # call keys in execution order
        self._counts: dict[str, int] = defaultdict(int)
        self._handles = []
        for name, layer in model.named_sublayers():
            self._handles.append(layer.register_forward_post_hook(self._hook(name)))

    def _hook(self, name: str):
        paddle = self._paddle

        def hook(layer, inputs, output):
            if not self.active:
                return None
            call = self._counts[name]
            self._counts[name] += 1
            self.order.append(f"{name}#{call}")
            self.on_call(name, call, flatten_tensors(output, lambda x: isinstance(x, paddle.Tensor)))
            return None  # keep the layer's output unchanged

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def torch_to_numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def paddle_to_numpy(t) -> np.ndarray:
    return t.numpy()
