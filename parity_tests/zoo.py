"""The model zoo that proves portcheck: torchvision.models against paddle.vision.models, two ports of the same
classic networks written by different teams (docs/facts.md, "Verifying other ports").

A pair is built the way a user of `verify-pair` without weight files gets it: the torchvision model constructed
under `torch.manual_seed(seed)`, its normalisation layers redrawn by `portcheck.exercise.exercise_norms(seed)`
(so eval-mode BatchNorm is not the identity), both in eval mode, the weights moved by
`portcheck.transfer.transfer_weights` (strict: every tensor, no rename table needed for these three).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ZooPair:
    """One network in both frameworks: `module:callable` and keyword arguments on each side, and the
    parameter-free layers declared unpaired (`compare(..., unpaired_ok=...)`)."""

    name: str
    torch_callable: str
    paddle_callable: str
    paddle_kwargs: dict = field(default_factory=dict)
    unpaired_ok: tuple[str, ...] = ()

    @property
    def paddle_spec(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.paddle_kwargs.items())
        return f"{self.paddle_callable}({args})" if args else self.paddle_callable


# The three pairs. Paddle spells vgg11_bn as vgg11(batch_norm=True). torchvision's mobilenet_v2 pools with
# F.adaptive_avg_pool2d inside forward(), paddle.vision's with an AdaptiveAvgPool2D layer, `pool2d_avg`: a
# parameter-free call with nothing to pair with, declared (the classifier after it is paired).
ZOO = (
    ZooPair("resnet18", "torchvision.models:resnet18", "paddle.vision.models:resnet18"),
    ZooPair("mobilenet_v2", "torchvision.models:mobilenet_v2", "paddle.vision.models:mobilenet_v2",
            unpaired_ok=("pool2d_avg",)),
    ZooPair("vgg11_bn", "torchvision.models:vgg11_bn", "paddle.vision.models:vgg11", {"batch_norm": True}),
)
ZOO_BY_NAME = {pair.name: pair for pair in ZOO}


def construct(spec: str, kwargs: dict):
    module, _, attribute = spec.partition(":")
    if module.startswith("torchvision"):
        from portcheck.torchvision_compat import prepare_torchvision

        prepare_torchvision()
    return getattr(importlib.import_module(module), attribute)(**kwargs)


def build_torch(pair: ZooPair, seed: int):
    """The seeded torchvision model with exercised norms, in eval mode."""
    import torch

    from portcheck.exercise import exercise_norms

    torch.manual_seed(seed)
    model = construct(pair.torch_callable, {})
    exercise_norms(model, seed)
    return model.eval()


def build_pair(pair: ZooPair, seed: int):
    """(torch model, Paddle model, TransferReport): the Paddle model holds the torch model's weights."""
    from portcheck.transfer import transfer_weights

    torch_model = build_torch(pair, seed)
    paddle_model = construct(pair.paddle_callable, pair.paddle_kwargs)
    paddle_model.eval()
    report = transfer_weights(torch_model, paddle_model)
    return torch_model, paddle_model, report


def image_batch(size: int, batch: int, seed: int, scale: float = 1.0) -> np.ndarray:
    """A seeded float32 NCHW batch: standard normal times `scale` (ImageNet-normalised pixels are of that size)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, 3, size, size)) * scale).astype(np.float32)


def transfer_mismatches(torch_model, paddle_model, report) -> list[str]:
    """What a complete, exact weight move would not show: a torch tensor neither moved nor dropped, a Paddle tensor
    never written, a value not equal bit for bit (after the transpose the report names). Empty when all is well."""
    torch_state, paddle_state = torch_model.state_dict(), paddle_model.state_dict()
    problems = []
    if len(report.moves) + len(report.dropped) != len(torch_state):
        problems.append(f"{len(torch_state)} torch tensors, {len(report.moves)} moved + {len(report.dropped)} dropped")
    written = {m.paddle_name for m in report.moves}
    problems += [f"Paddle {name} not written" for name in paddle_state if name not in written]
    for move in report.moves:
        source = torch_state[move.torch_name].detach()
        expected = (source.t().contiguous() if move.transposed else source).numpy()
        if not np.array_equal(paddle_state[move.paddle_name].numpy(), expected):
            problems.append(f"{move.torch_name} -> {move.paddle_name} differs")
    return problems
