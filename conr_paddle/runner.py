"""Numpy in, numpy out: the interface the renderer drives, here backed by the eager Paddle model.

The fast path (`conr_paddle.predictor.PredictorRunner`, Paddle Inference) offers the same three methods, so the
renderer, the benchmark and the parity report can swap one for the other.
Arrays are NCHW float in [0, 1]: sheet (M, 4, S, S) premultiplied RGB + alpha; pose xyz (B, 3, S, S) and
alpha (B, 1, S, S); pose images (B, 3, S, S).
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import paddle

from .model import CoNR


class Runner(Protocol):
    def parse_sheet(self, sheet: np.ndarray) -> Any: ...

    def parse_pose(self, rgb: np.ndarray) -> np.ndarray: ...

    def render(self, sheet: Any, xyz: np.ndarray, alpha: np.ndarray) -> np.ndarray: ...


class EagerRunner:
    """The eager (dygraph) model: the parity reference of every faster path."""

    def __init__(self, model: CoNR, dtype: str = "float32") -> None:
        self.model = model
        self.dtype = dtype

    def _t(self, x: np.ndarray) -> paddle.Tensor:
        return paddle.to_tensor(np.ascontiguousarray(x, dtype=self.dtype))

    @paddle.no_grad()
    def parse_sheet(self, sheet: np.ndarray):
        return self.model.parse_sheet(self._t(sheet))

    @paddle.no_grad()
    def parse_pose(self, rgb: np.ndarray) -> np.ndarray:
        return self.model.parse_pose(self._t(rgb)).numpy()

    @paddle.no_grad()
    def render(self, sheet, xyz: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        return self.model.render(sheet, self._t(xyz), self._t(alpha)).numpy()
