"""The runners: numpy in, numpy out, the interface the renderer drives, and `make_runner`, which picks one.

`EagerRunner` is the eager Paddle model; the fast path (`conr_engines.inference.predictor.PredictorRunner`, Paddle Inference)
and `conr_engines.onnx.runner.OnnxRunner` offer the same three methods, so the renderer, the benchmark and the parity
report can swap one for the other.
Arrays are NCHW float in [0, 1]: sheet (M, 4, S, S) premultiplied RGB + alpha; pose xyz (B, 3, S, S) and
alpha (B, 1, S, S); pose images (B, 3, S, S).
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import paddle

from conr_common.platform.errors import ConrInputError, ConrInternalError
from conr_common.cli.options import RenderOptions

from conr_paddle.model import CoNR


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


def make_runner(model, weights_hash: str | None, views: int, options: RenderOptions):
    """The Runner of `options.engine` for sheets of `views` views: "eager" (dygraph, fp32 only), "predictor"
    (Paddle Inference graphs exported once per (weights, size, views, batch, precision) and cached on disk, see
    conr_engines.inference.export and conr_engines.export.cache) or "onnxruntime" (the same graphs as ONNX, fp32, cached likewise, see
    conr_engines.onnx.runner). The options were validated when they were built; eager Paddle takes OMP_NUM_THREADS,
    the predictor and onnxruntime `options.threads`."""
    if options.engine == "eager":
        return EagerRunner(model)
    if options.engine == "predictor":
        return _predictor_runner(model, weights_hash, views, options)
    return _onnx_runner(model, weights_hash, views, options)


def _predictor_runner(model, weights_hash: str | None, views: int, options: RenderOptions):
    try:
        from conr_engines.inference.predictor import PredictorRunner
    except ImportError as e:
        raise ConrInputError(f"--engine predictor is not available ({e}); use --engine eager") from e
    try:
        return PredictorRunner(model, weights_hash, size=options.size, views=views, batch=options.batch,
                               precision=options.precision, cache_dir=options.cache_dir, threads=options.threads)
    except ConrInputError:
        raise
    except Exception as e:  # not the input's fault: the export or Paddle Inference itself
        raise ConrInternalError("exporting or loading the predictor graphs", e) from e


def _onnx_runner(model, weights_hash: str | None, views: int, options: RenderOptions):
    try:
        from conr_engines.onnx.runner import OnnxRunner

        import onnxruntime  # noqa: F401
        import paddle2onnx  # noqa: F401
    except ImportError as e:
        raise ConrInputError(f"--engine onnxruntime needs the [onnx] extra ({e}): pip install -e '.[onnx]'") from e
    try:
        return OnnxRunner(model, weights_hash, size=options.size, views=views, batch=options.batch,
                          cache_dir=options.cache_dir, threads=options.threads)
    except ConrInputError:
        raise
    except Exception as e:  # not the input's fault: the export or onnxruntime itself
        raise ConrInternalError("exporting or loading the ONNX graphs", e) from e
