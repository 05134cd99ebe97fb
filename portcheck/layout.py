"""The one rule for a tensor the two frameworks store in different layouts, shared by the weight move
(`portcheck.transfer`) and the parameter rows (`portcheck.params`), so the two cannot disagree.

A Linear weight is (out, in) in torch and (in, out) in Paddle: it is transposed exactly when the torch module is a
`torch.nn.Linear`, the Paddle layer a `paddle.nn.Linear` and the tensor is their `weight`. Decided from the layer
types, never from the shapes: a square Linear (vgg's 4096 x 4096 `classifier.3`) fits either way.
"""
from __future__ import annotations

__all__ = ["is_torch_linear", "is_paddle_linear", "linear_transposed"]


def is_torch_linear(module) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear)


def is_paddle_linear(layer) -> bool:
    import paddle

    return isinstance(layer, paddle.nn.Linear)


def linear_transposed(local_name: str, torch_linear: bool, paddle_linear: bool) -> bool:
    """Whether the tensor `local_name` moves (and compares) transposed between a torch module and a Paddle layer
    whose Linear-ness is given."""
    return local_name == "weight" and torch_linear and paddle_linear
