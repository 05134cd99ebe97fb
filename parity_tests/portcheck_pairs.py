"""Small handmade torch/Paddle pairs for parity_tests/test_portcheck.py and the verify-pair command line (importable
as SPECs, e.g. `parity_tests.portcheck_pairs:TorchNet`): a conv, a BatchNorm, a ReLU called twice, a Dropout and a
Linear; Paddle variants with other names, a changed epsilon, a lossy activation, an extra layer, another network."""
from __future__ import annotations

import numpy as np
import paddle
import torch

IN_SHAPE = (2, 3, 6, 6)
WIDTH = 8


class TorchNet(torch.nn.Module):
    """`pool=True` pools to 6 x 6 before the Linear (any input size works; PaddleNet's Linear then fails on inputs
    other than 6 x 6, as paddle.vision's googlenet does at 64 px)."""

    def __init__(self, pool: bool = False) -> None:
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(6) if pool else None
        self.conv = torch.nn.Conv2d(3, WIDTH, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(WIDTH)
        self.act = torch.nn.ReLU()
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(WIDTH * 36, 10)

    def forward(self, x):
        x = self.act(self.bn(self.conv(x)))  # (N, C, 6, 6)
        x = self.pool(x) if self.pool is not None else x
        return self.act(self.fc(self.drop(torch.flatten(x, 1))))  # act called a second time


class LossyReLU(paddle.nn.Layer):
    """max(x, 0) computed as ((x + 1e4) - 1e4): the same function, exact in float64 (error ~1e-12), but in float32
    it keeps only ~1e-3 of each value's precision: structurally exact, less precise."""

    def forward(self, x):
        return paddle.nn.functional.relu((x + 1e4) - 1e4)


class PaddleNet(paddle.nn.Layer):
    """The port, same names. `epsilon` (BatchNorm), `act` (the activation layer), `extra` (a layer torch lacks)
    plant faults; `names` renames every child (torch names -> other names) to exercise the pairing rules."""

    def __init__(self, epsilon: float = 1e-5, act: str = "relu", extra: bool = False, names: dict | None = None,
                 momentum: float = 0.9) -> None:
        super().__init__()
        n = {"conv": "conv", "bn": "bn", "act": "act", "drop": "drop", "fc": "fc", **(names or {})}
        self._n = n
        self.add_sublayer(n["conv"], paddle.nn.Conv2D(3, WIDTH, 3, padding=1))
        self.add_sublayer(n["bn"], paddle.nn.BatchNorm2D(WIDTH, epsilon=epsilon, momentum=momentum))
        acts = {"relu": paddle.nn.ReLU, "sigmoid": paddle.nn.Sigmoid, "lossy": LossyReLU}
        self.add_sublayer(n["act"], acts[act]())
        self.add_sublayer(n["drop"], paddle.nn.Dropout(0.5))
        self.add_sublayer(n["fc"], paddle.nn.Linear(WIDTH * 36, 10))
        self.extra = paddle.nn.Identity() if extra else None

    def forward(self, x):
        layer = lambda k: getattr(self, self._n[k])  # noqa: E731
        x = layer("act")(layer("bn")(layer("conv")(x)))
        if self.extra is not None:
            x = self.extra(x)
        return layer("act")(layer("fc")(layer("drop")(paddle.flatten(x, 1))))


def copy_weights(torch_module, paddle_layer) -> None:
    """The test's own weight move: torch tensors in state-dict order (num_batches_tracked left out) onto Paddle's
    in its order, 2-D ones of transposed shape transposed (Linear)."""
    src = [v.detach().numpy() for k, v in torch_module.state_dict().items() if not k.endswith("num_batches_tracked")]
    dst = list(paddle_layer.state_dict().values())
    assert len(src) == len(dst), (len(src), len(dst))
    for a, t in zip(src, dst):
        a = a.T if a.ndim == 2 and tuple(a.shape) != tuple(t.shape) else a
        t.set_value(np.ascontiguousarray(a))


def draw_norms(torch_module, seed: int = 0) -> None:
    """BatchNorm statistics and affine parameters with contrast (eval-mode BatchNorm not the identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in torch_module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.9, 1.1, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)


def make_pair(seed: int = 0, **paddle_kw):
    """(torch net, its Paddle port with the torch weights copied)."""
    torch.manual_seed(seed)
    t = TorchNet()
    draw_norms(t, seed)
    p = PaddleNet(**paddle_kw)
    copy_weights(t, p)
    return t, p


def make_input(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(IN_SHAPE)
