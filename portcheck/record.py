"""Layer-output recording: forward hooks on every named layer of a torch module and of a Paddle layer, keyed by
layer name and call index. Framework-neutral (torch and Paddle are imported inside the recorders that need them);
used by `portcheck.engine` and by CoNR's `python -m convert verify`.

Keys: `<layer name>#<k>` for the k-th call (0-based) of that layer in one forward pass, and `<key>[i]` for the i-th
tensor of a layer that returns several (a tuple or a list, flattened depth-first; `None` entries skipped). A module
called several times (CoNR's parameter-free `shader.warp`, a shared activation) is recorded once per call.
Post-hooks fire when a layer returns, so a container comes after its children: "execution order" below means the
order in which layers finish. The root itself is recorded under the name "" when asked (`include_root`).

The torch side keeps its outputs: references by default (CoNR has no in-place op, so a kept tensor is never
overwritten), copies with `copy_outputs=True` (torchvision's `ReLU(inplace=True)` overwrites the BatchNorm output
it follows). The Paddle side hands each call's tensors to a callback as they are produced and keeps nothing itself.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CallRecord", "TorchRecorder", "PaddleRecorder", "flatten_tensors", "output_keys", "torch_to_numpy", "paddle_to_numpy"]


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
    """Forward hooks on every named sub-module of `model` (the root only with `include_root`); `calls` in execution
    order."""

    def __init__(self, model, *, keep_leaf_inputs: bool = False, copy_outputs: bool = False,
                 include_root: bool = False) -> None:
        import torch

        self._torch = torch
        self.keep_leaf_inputs = keep_leaf_inputs
        self.copy_outputs = copy_outputs
        self.calls: list[CallRecord] = []
        self._counts: dict[str, int] = defaultdict(int)
        self._handles = []
        for name, module in model.named_modules():
            if name or include_root:
                leaf = next(module.children(), None) is None
                self._handles.append(module.register_forward_hook(self._hook(name, leaf), with_kwargs=True))

    def _hook(self, name: str, leaf: bool):
        torch = self._torch

        def hook(module, args, kwargs, output):
            call = self._counts[name]
            self._counts[name] += 1
            outs = [t.detach().clone() if self.copy_outputs else t.detach()
                    for t in flatten_tensors(output, lambda x: isinstance(x, torch.Tensor))]
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
    `on_call(name, call, tensors)` as they are produced (nothing is kept). `active = False` pauses recording. The root
    is hooked under the name "" only with `include_root`."""

    def __init__(self, model, on_call: Callable[[str, int, list], None], *, include_root: bool = False) -> None:
        import paddle

        self._paddle = paddle
        self.on_call = on_call
        self.active = True
        self.order: list[str] = []  # call keys in execution order
        self._counts: dict[str, int] = defaultdict(int)
        self._handles = []
        for name, layer in model.named_sublayers(include_self=include_root):
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
