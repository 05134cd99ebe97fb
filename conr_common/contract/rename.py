"""The torch <-> Paddle rename table of CoNR checkpoints, as data, and the pure functions that apply it.

Conv and ConvTranspose weights have the same layout in both frameworks ([out, in, kH, kW] and [in, out, kH, kW]),
so the table is close to the identity; only the parameter names of two layer types differ:

- InstanceNorm (affine): torch `weight` -> Paddle `scale`. Every norm in CoNR is wrapped in a module named `norm`
  (`backbone.1.norm.weight`, `upsample_blocks.0.bn1.norm.weight`), so the suffix `.norm.weight` identifies it.
- PReLU: torch `weight` -> Paddle `_weight`. The shader's PReLUs sit in `nn.Sequential`s
  (`decoder_blocks.{L}.conv0.{1,3}.weight`, `...convblocks.{B}.{1,3,5,...}.weight`, `...conv_last.1.weight`), so
  the key alone cannot tell them from a conv; the shape does: a 1-D `weight` that is not a norm's is a PReLU's
  (CoNR has no Linear layers and no BatchNorm).
- Linear (not in CoNR; kept so the table is complete): Paddle stores [in, out], torch [out, in].

The layer kind of a key is decided from its torch name and torch shape (the manifest's); the Paddle -> torch
direction first renames, then looks the shape up in the manifest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "RenameRule",
    "RULES",
    "layer_kind",
    "torch_to_paddle_key",
    "paddle_to_torch_key",
    "torch_to_paddle_shape",
    "to_paddle_tensor",
    "to_torch_tensor",
]


@dataclass(frozen=True)
class RenameRule:
    """One row of the table: tensors of layer `kind` named `*<torch_suffix>` in torch are `*<paddle_suffix>` in
    Paddle; `transform` is what happens to the array on the way to Paddle (its inverse on the way back)."""

    kind: str
    torch_suffix: str
    paddle_suffix: str
    transform: str  # "identity" | "transpose" (2-D swap of the two axes)


RULES: tuple[RenameRule, ...] = (
    RenameRule("instance_norm", ".norm.weight", ".norm.scale", "identity"),
    RenameRule("prelu", ".weight", "._weight", "identity"),
    RenameRule("linear", ".weight", ".weight", "transpose"),
)
_RULE_BY_KIND = {r.kind: r for r in RULES}


def layer_kind(torch_key: str, shape: tuple[int, ...]) -> str:
    """Layer kind of one torch tensor, from its name and (manifest) shape."""
    if torch_key.endswith(".norm.weight"):
        return "instance_norm"
    if torch_key.endswith(".norm.bias"):
        return "instance_norm_bias"
    if torch_key.endswith(".bias"):
        return "bias"
    if torch_key.endswith(".weight"):
        if len(shape) == 1:
            return "prelu"
        if len(shape) == 2:
            return "linear"
        return "conv"
    return "other"


def _rule(kind: str) -> RenameRule | None:
    # Kinds without a rule (conv, conv-transpose, biases) keep their name and layout.
    return _RULE_BY_KIND.get(kind)


def torch_to_paddle_key(key: str, shape: tuple[int, ...]) -> str:
    """Paddle name of the torch tensor `key` whose torch shape is `shape`."""
    rule = _rule(layer_kind(key, tuple(shape)))
    if rule is None or not key.endswith(rule.torch_suffix):
        return key
    return key[: len(key) - len(rule.torch_suffix)] + rule.paddle_suffix


def paddle_to_torch_key(key: str) -> str:
    """Torch name of the Paddle tensor `key` (Paddle's suffixes `.norm.scale` and `._weight` are unambiguous)."""
    for rule in RULES:
        if rule.torch_suffix != rule.paddle_suffix and key.endswith(rule.paddle_suffix):
            return key[: len(key) - len(rule.paddle_suffix)] + rule.torch_suffix
    return key


def torch_to_paddle_shape(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Paddle shape of the torch tensor `key` of torch shape `shape`."""
    rule = _rule(layer_kind(key, tuple(shape)))
    if rule is not None and rule.transform == "transpose":
        return tuple(reversed(shape))
    return tuple(shape)


def _apply(transform: str, array: np.ndarray) -> np.ndarray:
    if transform == "identity":
        return array  # no copy: the converters never change the bytes of conv, norm or PReLU tensors
    if transform == "transpose":
        return np.ascontiguousarray(array.T)
    raise ValueError(f"unknown transform {transform!r}")


def to_paddle_tensor(torch_key: str, array: np.ndarray) -> np.ndarray:
    """Array in Paddle layout for the torch tensor `torch_key` (torch layout)."""
    rule = _rule(layer_kind(torch_key, array.shape))
    return _apply(rule.transform if rule else "identity", array)


def to_torch_tensor(torch_key: str, torch_shape: tuple[int, ...], array: np.ndarray) -> np.ndarray:
    """Array in torch layout for a Paddle tensor whose torch name is `torch_key` and expected torch shape
    `torch_shape` (the kind cannot be read off a Paddle array: a Linear weight is stored transposed)."""
    rule = _rule(layer_kind(torch_key, tuple(torch_shape)))
    return _apply(rule.transform if rule else "identity", array)  # a 2-D transpose is its own inverse
