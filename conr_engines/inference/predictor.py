"""Fast inference: the exported CoNR graphs (`conr_engines.inference.export`, cached by `conr_engines.export.cache`) run by Paddle
Inference, configured by `conr_engines.inference.inference_config` (oneDNN on CPU; GPU 0 and TensorRT on a CUDA build, untested
here).

`PredictorRunner` offers the three methods of `conr_engines.runner.EagerRunner` (numpy in, numpy out) and is built
from a loaded eager `CoNR`. The sheet is parsed by the eager parser in float64 (`CoNR.parse_sheet`'s default), the
pose and step by predictors of the cached graphs. Precision "fp32", or "bf16" (`enable_onednn_bfloat16()`, on a CPU
with AVX512-BF16 or AMX; fp16 on TensorRT). Measurements behind these choices: docs/predictor.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle

from conr_common.data.checks import check_frames, check_positive_int
from conr_common.platform.cpu import bf16_support, usable_cores
from conr_common.platform.errors import ConrInputError, ConrInternalError
from conr_common.platform.memory import return_freed_memory
from conr_common.cli.options import RenderOptions

from conr_engines.export.cache import EXPORT_FORMAT, cache_entry, cache_identity, cache_root
from conr_engines.inference.export import cached_export, pose_parser
from conr_engines.inference.ext import load_warp_op
from conr_engines.inference.inference_config import inference_config
from conr_paddle.layers import norm_statistics
from conr_engines.export.sheet_inputs import sheet_graph_inputs
from conr_paddle.model import CoNR

__all__ = ["PredictorRunner", "PredictorSheet"]


class _Graph:
    """One predictor with its input names in export order: the program `model_file` reading `params_file`."""

    def __init__(self, model_file: Path, params_file: Path, precision: str, threads: int, batch: int) -> None:
        from paddle import inference

        self.predictor = inference.create_predictor(
            inference_config(str(model_file), str(params_file), precision, threads, batch))
        self.inputs = [self.predictor.get_input_handle(n) for n in self.predictor.get_input_names()]
        self.input_names = list(self.predictor.get_input_names())
        self.outputs = [self.predictor.get_output_handle(n) for n in self.predictor.get_output_names()]

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        if len(arrays) != len(self.inputs):
            raise ValueError(f"graph takes {self.input_names}, got {len(arrays)} arrays")
        for handle, array in zip(self.inputs, arrays):
            handle.reshape(list(array.shape))
            handle.copy_from_cpu(np.ascontiguousarray(array, dtype=np.float32))
        self.predictor.run()
        return [h.copy_to_cpu() for h in self.outputs]


@dataclass(frozen=True, eq=False)
class PredictorSheet:
    """Sheet features as the step graph takes them: five (M, C, h, w) arrays and the reference (M, 4, S, S)."""

    features: list
    reference: np.ndarray


def _check_settings(size: int, views: int, batch: int, precision: str) -> None:
    """The predictor's settings, by the one rule of `conr_common.cli.options.RenderOptions` (size, batch, precision),
    plus a view count and a CPU that runs bf16: ConrInputError otherwise."""
    RenderOptions(size=size, batch=batch, engine="predictor", precision=precision)
    check_positive_int("views", views)
    if precision == "bf16":
        ok, why = bf16_support()
        if not ok:
            raise ConrInputError(f"--engine predictor --precision bf16: {why}")


class PredictorRunner:
    """The `Runner` interface backed by Paddle Inference predictors of the exported graphs.

    model: a loaded eager `CoNR` (used to export; only its parser is kept, for the sheet). weights_hash: any string
    identifying the weights (e.g. a sha256 of the checkpoint files), part of the cache key. size, views: S and M of
    every call. batch: frames per predictor call; shorter calls are padded by repeating their last frame and the
    padding is dropped from the output. precision: "fp32" or "bf16". custom_warp: export the shader's warps as the
    `conr_warp` operator (`conr_engines.inference.ext`; compiled on first use) instead of `grid_sample`; where it cannot be
    built, `grid_sample` is used and `warp_op.reason` says why. `self.warp` names the warp the graphs use.
    """

    def __init__(
        self,
        model: CoNR,
        weights_hash: str,
        *,
        size: int = 256,
        views: int = 4,
        batch: int = 1,
        precision: str = "fp32",
        cache_dir: str | os.PathLike | None = None,
        threads: int | None = None,
        custom_warp: bool = True,
    ) -> None:
        _check_settings(size, views, batch, precision)
        self.size, self.views, self.batch, self.precision = size, views, batch, precision
        self.threads = threads or usable_cores()
        # The custom warp op must be registered in this process before a predictor loads a graph that uses it.
        self.warp_op = load_warp_op(cache_root(cache_dir)) if custom_warp else None
        self._parser = model.udpparsernet  # sheet features in float64, eager (module docstring)
        # "conr_warp-<library build key>": a change to the operators' source re-exports the graphs
        self.warp = (
            f"conr_warp-{self.warp_op.build_dir.name}"
            if self.warp_op is not None and self.warp_op.available
            else "grid_sample"
        )
        self.norm = norm_statistics(model)
        self._root, self._weights_hash = cache_root(cache_dir), weights_hash
        self.folder, meta = self._cache_entry("step", views)
        # exported: True when this construction wrote the step graph's program (False: reused from the cache);
        # params_file: the parameter file it reads, shared by the weight set's step graphs (written when missing)
        self.meta, self.exported, self.params_file = cached_export(model, self.folder, size, views, batch, meta,
                                                               self.warp_op, precision)
        if self.exported:
            return_freed_memory()
        # the pose graph's folder (no view count in its key: the pose graph has no sheet input); exported on the
        # first `parse_pose`, from the export twin of the parser (its parameters are the parser's: nothing is copied)
        self.pose_folder, self._pose_meta = self._cache_entry("pose", None)
        self._pose_parser = pose_parser(model, self.warp_op, precision)
        self.pose_exported = False
        self.pose_params_file: Path | None = None  # the pose graph's parameter file, once it is loaded
        self._graphs: dict[str, _Graph] = {}

    def _cache_entry(self, graph: str, views: int | None) -> tuple[Path, dict]:
        """(folder, meta.json fields) of one graph's cache entry: its identity (`cache_identity`) and key."""
        return cache_entry(self._root, cache_identity(self._weights_hash, self.size, views, self.batch, EXPORT_FORMAT,
                                                      warp=self.warp, norm=self.norm, precision=self.precision,
                                                      graph=graph))

    @property
    def warp_kind(self) -> str:
        """"conr_warp" or "grid_sample": `warp` without the library build key."""
        return self.warp.split("-")[0]

    def _graph(self, name: str) -> _Graph:
        # Created on first use: a render of UDP files never exports or loads the pose graph.
        if name not in self._graphs:
            folder, params = self.folder, self.params_file
            if name == "pose":
                folder = self.pose_folder
                try:
                    _, self.pose_exported, params = cached_export(
                        self._pose_parser, folder, self.size, None, self.batch, self._pose_meta, self.warp_op,
                        self.precision, graph="pose")
                    self.pose_params_file = params
                except ConrInputError:
                    raise
                except Exception as e:  # not the input's fault, as for the step graph (conr_engines.runner)
                    raise ConrInternalError("exporting the predictor's pose graph", e) from e
            self._graphs[name] = _Graph(folder / f"{name}.json", params, self.precision, self.threads, self.batch)
        return self._graphs[name]

    def parse_sheet(self, sheet: np.ndarray) -> PredictorSheet:
        """sheet: (M, 4, S, S) premultiplied RGB + alpha in [0, 1], M == views."""
        check_frames(sheet, 4, self.size, "sheet", self.views)
        features, reference = sheet_graph_inputs(self._parser, sheet)
        return PredictorSheet(features=features, reference=reference)

    def _batched(self, name: str, fixed: tuple, *per_frame: np.ndarray) -> np.ndarray:
        n = per_frame[0].shape[0]
        graph = self._graph(name)
        out = []
        for start in range(0, n, self.batch):
            chunk = [np.ascontiguousarray(a[start:start + self.batch], dtype=np.float32) for a in per_frame]
            real = chunk[0].shape[0]
            if real < self.batch:  # pad with copies of the last frame; dropped below
                chunk = [np.concatenate([c, np.repeat(c[-1:], self.batch - real, axis=0)]) for c in chunk]
            out.append(graph(*chunk, *fixed)[0][:real])
        return np.concatenate(out, axis=0)

    def parse_pose(self, rgb: np.ndarray) -> np.ndarray:
        """Pose images (B, 3, S, S) -> UDP (B, 4, S, S) in [0, 1]."""
        check_frames(rgb, 3, self.size, "pose images")
        return self._batched("pose", (), rgb)

    def render(self, sheet: PredictorSheet, xyz: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """xyz (B, 3, S, S), alpha (B, 1, S, S) -> premultiplied RGBA (B, 4, S, S)."""
        check_frames(xyz, 3, self.size, "xyz")
        check_frames(alpha, 1, self.size, "alpha", xyz.shape[0])
        return self._batched("step", (*sheet.features, sheet.reference), xyz, alpha)
