"""One forward + backward pass of one side, recorded (`compare(..., backward=True)`): the gradient of a scalar loss
with respect to every named layer's output (per call), every parameter (qualified name) and every float input.

The loss is a fixed random projection of the outputs: loss = sum_i sum(out_i * P_i), with P_i standard normal,
drawn by numpy from `projection_seed` in the order of the flattened outputs and rounded to float32 once, so that
every pass (either framework, float32 or float64) sees exactly the same numbers. Every output element feeds the
loss with a weight of order one, and no element's gradient is zero by construction (as it would be for a mean).

Each run works on a copy of the model (cast to float64 for the truth passes), in eval mode, BatchNorm in train mode
with `train=True` (Dropout stays in eval mode: its masks cannot match). Layer-output gradients come from tensor
hooks registered on the outputs in the layers' forward hooks (torch `Tensor.register_hook`, Paddle
`Tensor.register_hook`); a torch tensor later modified in place (torchvision's ReLU(inplace=True)) still reports the
gradient of the value the layer returned. `consumers` says which calls took a call's output as an input: where a
gradient first diverges in backward order, the suspects are the backward functions of its consumers.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from portcheck.record import flatten_tensors
from portcheck.runs import _as_tuple, _cast, first_calls, paddle_batchnorms, torch_batchnorms

__all__ = ["GradRun", "projection", "torch_grad_run", "paddle_grad_run", "default_call"]


@dataclass
class GradRun:
    """keys: call keys in forward execution order; grads[key][i]: the gradient of output i (None where it took no
    part in the loss); params: qualified parameter name -> gradient (None: no gradient reached it, or it does not
    require one); inputs: one gradient per input (None for integer inputs); consumers: call key -> call keys that
    took one of its outputs as an argument; names/types/leaf: as `portcheck.runs.Run`; kink_inputs: the forward
    input of every max-pool call (`KINK_TYPES`), where `portcheck.kinks` checks a gradient difference for a tie."""

    keys: list[str] = field(default_factory=list)
    grads: dict[str, list] = field(default_factory=dict)
    params: dict[str, np.ndarray | None] = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    consumers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    names: list[str] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)
    leaf: dict[str, bool] = field(default_factory=dict)
    loss: float = 0.0
    kink_inputs: dict[str, np.ndarray] = field(default_factory=dict)  # call key -> input of a max-pool call

    @property
    def first_call(self) -> dict[str, int]:
        return first_calls(self.keys)


# Layer types whose forward has kinks that ties reach in practice (a max over a window of equal values): their
# inputs are kept so that a gradient difference can be checked against the forward point (`portcheck.kinks`).
KINK_TYPES = ("MaxPool1d", "MaxPool2d", "MaxPool3d", "MaxPool1D", "MaxPool2D", "MaxPool3D")


def default_call(model, *inputs):
    return model(*inputs)


def projection(shapes: list[tuple[int, ...]], seed: int) -> list[np.ndarray]:
    """The loss weights P_i, one per output shape: standard normal (numpy default_rng(seed)), rounded to float32."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


class _Tracker:
    """Forward-hook bookkeeping shared by both sides: call keys, output tensors by identity (to find consumers), and
    the gradient slots the tensor hooks fill."""

    def __init__(self, run: GradRun) -> None:
        self.run = run
        self.counts: dict[str, int] = defaultdict(int)
        self.producer: dict[int, list[str]] = defaultdict(list)
        self.alive: list = []  # keeps hooked tensors alive so their ids stay unique

    def call(self, name: str, args, outputs: list, requires_grad: Callable, to_numpy: Callable) -> None:
        key = f"{name}#{self.counts[name]}"
        self.counts[name] += 1
        self.run.keys.append(key)
        for t in {id(a): a for a in args}.values():
            for src in self.producer.get(id(t), ()):
                if key not in self.run.consumers[src]:
                    self.run.consumers[src].append(key)
        if self.run.types.get(name) in KINK_TYPES and args:
            self.run.kink_inputs[key] = to_numpy(args[0].detach())
        slots = [None] * len(outputs)
        self.run.grads[key] = slots
        for i, t in enumerate(outputs):
            self.producer[id(t)].append(key)  # a container returning its last child's output: both produced it
            self.alive.append(t)
            if requires_grad(t):
                t.register_hook(self._hook(slots, i, to_numpy))

    @staticmethod
    def _hook(slots: list, i: int, to_numpy: Callable):
        def hook(grad):
            slots[i] = to_numpy(grad)
            return None

        return hook


def _flat_args(args, kwargs, is_tensor) -> list:
    return flatten_tensors(list(args) + list(kwargs.values()), is_tensor)


def torch_grad_run(module, inputs, dtype: str, train: bool, seed: int, call: Callable = default_call) -> GradRun:
    """The torch side: a copy of `module` in `dtype`, forward through `call(model, *inputs)`, loss, backward."""
    import torch

    model = copy.deepcopy(module)
    model = model.double() if dtype == "float64" else model.float()
    model.eval()
    for bn in torch_batchnorms(model).values() if train else ():
        bn.train()
    run = GradRun(names=[n for n, _ in model.named_modules()])
    for n, m in model.named_modules():
        run.types[n], run.leaf[n] = type(m).__name__, next(m.children(), None) is None
    tracker = _Tracker(run)
    is_t = lambda x: isinstance(x, torch.Tensor)  # noqa: E731

    def hook_for(name):
        def hook(mod, args, kwargs, output):
            tracker.call(name, _flat_args(args, kwargs, is_t), flatten_tensors(output, is_t),
                         lambda t: t.requires_grad, lambda g: g.detach().cpu().numpy().copy())
        return hook

    handles = [m.register_forward_hook(hook_for(n), with_kwargs=True) for n, m in model.named_modules()]
    xs = [torch.from_numpy(_cast(a, dtype)) for a in _as_tuple(inputs)]
    for x in xs:
        x.requires_grad_(bool(x.is_floating_point()))
    try:
        with torch.enable_grad():
            outs = flatten_tensors(call(model, *xs), is_t)
            weights = projection([tuple(o.shape) for o in outs], seed)
            loss = sum((o * torch.from_numpy(w).to(o.dtype)).sum() for o, w in zip(outs, weights))
            loss.backward()
    finally:
        for h in handles:
            h.remove()
    run.loss = float(loss.detach())
    run.params = {n: None if p.grad is None else p.grad.detach().cpu().numpy().copy()
                  for n, p in model.named_parameters()}
    run.inputs = [None if x.grad is None else x.grad.numpy().copy() for x in xs]
    return run


def paddle_grad_run(layer, inputs, dtype: str, train: bool, seed: int, call: Callable = default_call) -> GradRun:
    """The Paddle side: a copy of `layer` in `dtype`, forward through `call(model, *inputs)`, loss, backward."""
    import paddle

    model = copy.deepcopy(layer)
    if dtype == "float64":
        model.to(dtype="float64")
    model.eval()
    for bn in paddle_batchnorms(model).values() if train else ():
        bn.train()
    named = list(model.named_sublayers(include_self=True))
    run = GradRun(names=[n for n, _ in named])
    for n, m in named:
        run.types[n], run.leaf[n] = type(m).__name__, not m.sublayers()
    tracker = _Tracker(run)
    is_t = lambda x: isinstance(x, paddle.Tensor)  # noqa: E731

    def hook_for(name):
        def hook(lay, args, output):
            tracker.call(name, flatten_tensors(list(args), is_t), flatten_tensors(output, is_t),
                         lambda t: not t.stop_gradient, lambda g: g.numpy().copy())
        return hook

    handles = [m.register_forward_post_hook(hook_for(n)) for n, m in named]
    xs = [paddle.to_tensor(_cast(a, dtype)) for a in _as_tuple(inputs)]
    for x in xs:
        x.stop_gradient = not paddle.is_floating_point(x)
    try:
        with paddle.set_grad_enabled(True):
            outs = flatten_tensors(call(model, *xs), is_t)
            weights = projection([tuple(o.shape) for o in outs], seed)
            loss = paddle.add_n([(o * paddle.to_tensor(w).astype(o.dtype)).sum() for o, w in zip(outs, weights)])
            loss.backward()
    finally:
        for h in handles:
            h.remove()
    run.loss = float(loss)
    run.params = {n: None if p.grad is None else p.grad.numpy().copy() for n, p in model.named_parameters()}
    run.inputs = [None if x.grad is None else x.grad.numpy().copy() for x in xs]
    return run
