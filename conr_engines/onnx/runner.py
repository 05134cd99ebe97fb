"""The `Runner` interface (conr_engines.runner) on onnxruntime: `render --engine onnxruntime`.

The Paddle port's graphs are exported to ONNX by `conr_engines.onnx.export`, each one when it is first needed, and
cached as the predictor's graphs are (`conr_engines.export.cache.cached_folder`): one folder per graph and (weights,
size, views, batch, opset, formats, versions; the pose graph has no view count), under `$CONR_PADDLE_CACHE` or
`~/.cache/conr_paddle`, folder `onnx-<key>`, built under the lock `onnx-<key>.lock` and renamed into place whole,
complete when its meta.json exists, its `.onnx` file's sha256 checked before reuse. The step graph is exported when
the runner is built; the sheet graph too with `sheet_parser="onnx"`; the pose graph on the first `parse_pose` (a
render of UDP files never exports it: at 128 px a 0.23 GB file, and as much of parameters staged for the converter).
Sessions run on the CPU provider with `threads` intra-op threads (default one per core this process may use), no
spinning (threads sleep between calls instead of burning the cores other work needs), all graph optimisations.

The sheet is parsed once per sequence and its features bound to the step session once (`OnnxSheet`: OrtValues
reused by every frame's IOBinding), so a frame copies in only its own pose. Parsed by (`sheet_parser`):
- "float64" (default): the eager Paddle parser in float64, as the predictor does (`PredictorRunner.parse_sheet`);
- "onnx": the ONNX sheet graph, float32 all through (onnxruntime has no float64 InstanceNormalization and its
  float32 convolutions lose precision on the parser's deep maps): measured at 128 px / 2 views, the deepest
  feature 9.0e-4 scaled from the float64 truth (torch fp32 8.1e-5) and the RGBA 9.5e-5 (torch 9.5e-6); at 256 px /
  4 views the RGBA 6.3e-4 from the truth (torch 2.1e-5). The step graph itself is as accurate as either framework
  (RGBA 5.0e-6 from eager Paddle when fed the same features), so the float64 parse brings the engine to the
  predictor's accuracy at the cost of keeping the parser (a quarter of the model) in memory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conr_common.data.checks import check_frames
from conr_common.platform.cpu import usable_cores
from conr_common.platform.errors import ConrInputError, ConrInternalError
from conr_common.platform.memory import return_freed_memory
from conr_engines.onnx.contract import (DEFAULT_OPSET, ONNX_CACHE_LAYOUT, ONNX_CACHE_PREFIX, ONNX_FORMAT,
                                        check_settings, export_versions)
from conr_common.platform.versions import dist_version

__all__ = ["OnnxRunner", "OnnxSheet", "make_session", "onnx_identity", "onnx_cache_entry", "SHEET_PARSERS"]

SHEET_PARSERS = ("float64", "onnx")
# the files of an ONNX folder whose sha256 meta.json records
ONNX_SUFFIXES = (".onnx",)


def make_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session: `threads` intra-op threads (default: the cores this process may use), one
    inter-op thread, sequential execution, no spin-waiting, every graph optimisation, warnings only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: the converter leaves harmless unused-initializer warnings
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_identity(weights_hash: str, size: int, views: int | None, batch: int, opset: int, graph: str) -> dict:
    """Everything one exported ONNX graph depends on (`conr_engines.export.cache.cache_identity`): the predictor's
    common fields, the engine, the graph, the cache's layout, the opset and the converter's version. views: None
    for the pose graph (it has no sheet input)."""
    from conr_engines.export.cache import cache_identity

    return cache_identity(weights_hash, size, views, batch, ONNX_FORMAT, engine="onnxruntime", graph=graph,
                          layout=ONNX_CACHE_LAYOUT, opset=opset, paddle2onnx=dist_version("paddle2onnx"))


def onnx_cache_entry(root: Path, weights_hash: str, size: int, views: int, batch: int, opset: int,
                     graph: str) -> tuple[Path, dict]:
    """(folder, identity with its key): where the cache `root` keeps the engine's ONNX file of `graph` for these
    weights and settings (`onnx_identity`; the pose graph's ignores `views`), whether or not it was exported yet."""
    from conr_engines.export.cache import cache_entry

    identity = onnx_identity(weights_hash, size, None if graph == "pose" else views, batch, opset, graph)
    return cache_entry(root, identity, ONNX_CACHE_PREFIX)


@dataclass(frozen=True, eq=False)
class OnnxSheet:
    """Sheet features bound once per sequence: OrtValues named like the step graph's inputs, plus the arrays."""

    values: dict
    arrays: dict


class OnnxRunner:
    """`Runner` backed by onnxruntime sessions of the Paddle port's ONNX graphs.

    model: a loaded eager `CoNR`, used only to export on a cache miss. weights_hash: identifies the weights (part
    of the cache key). size, views, batch: the fixed shapes of the graphs; shorter batches are padded with their
    last frame and the padding dropped. threads: onnxruntime's intra-op threads (default: the cores this process
    may use, `conr_common.platform.cpu.usable_cores`). sheet_parser: "float64" (the eager parser of `model`, kept) or
    "onnx" (the sheet graph; `model` may then be None when the cache holds the step and sheet graphs), see the module
    docstring. The runner keeps the parser of `model` (its parameters, not a copy: the float64 sheet parse keeps
    them anyway) until the first `parse_pose`, which exports the pose graph from it when the cache lacks it."""

    def __init__(self, model, weights_hash: str, *, size: int = 256, views: int = 4, batch: int = 1,
                 cache_dir: str | os.PathLike | None = None, threads: int | None = None, opset: int | None = None,
                 sheet_parser: str = "float64") -> None:
        from conr_engines.export.cache import cache_root
        from conr_engines.onnx.export import io_contract, native_parser

        self.opset = opset or DEFAULT_OPSET
        check_settings(size, views, batch, self.opset)
        if sheet_parser not in SHEET_PARSERS:
            raise ValueError(f"sheet_parser must be one of {SHEET_PARSERS}, got {sheet_parser!r}")
        self.sheet_parser = sheet_parser
        self._parser = model.udpparsernet if sheet_parser == "float64" else None
        self.size, self.views, self.batch = size, views, batch
        self.threads = threads or usable_cores()
        self._root, self._weights_hash = cache_root(cache_dir), weights_hash
        self.folders: dict[str, Path] = {}  # graph -> its cache folder, once exported or found
        found = {graph: self._cached(model, graph) for graph in (("step", "sheet") if sheet_parser == "onnx"
                                                                  else ("step",))}
        # exported: True when this construction wrote a graph (False: all reused from the cache)
        self.exported = any(exported for _, exported in found.values())
        # the step graph's folder and meta.json (what `render` reports as the engine's cache)
        self.folder, self.meta = self.folders["step"], found["step"][0]
        # to export the pose graph on the first `parse_pose` if the cache lacks it
        self._pose_source = None if model is None else native_parser(model)
        self.pose_exported = False  # True once `parse_pose` exported the pose graph
        if self.exported:
            return_freed_memory()
        self.contract = io_contract(size, views, batch)
        self._sessions: dict = {}

    def _cached(self, model, graph: str) -> tuple[dict, bool]:
        """(meta.json, exported): `graph`'s verified cache folder (recorded in `folders`), exported from `model`
        first when there is none (reading the parameter files the predictor's graphs of these weights keep in the
        same cache, when there are)."""
        from conr_engines.export.cache import cached_folder, found_params
        from conr_engines.onnx.export import export_paddle_graphs

        folder, identity = onnx_cache_entry(self._root, self._weights_hash, self.size, self.views, self.batch,
                                            self.opset, graph)

        def fill(tmp: Path) -> dict:
            if model is None:
                raise RuntimeError(f"the cache holds no ONNX {graph} graph of these weights and settings, and no "
                                   "model was given to export it from")
            sizes = export_paddle_graphs(model, tmp, self.size, self.views, self.batch, self.opset, [graph],
                                         tmp / "export.log",
                                         lambda params: found_params(self._root, self._weights_hash, params))
            return {**identity, "bytes": sizes, "versions": export_versions()}

        found = cached_folder(folder, fill, ONNX_SUFFIXES)
        self.folders[graph] = folder
        return found

    warp_kind = "GridSample"

    def session(self, graph: str):
        """The graph's session, created on first use; the pose graph exported first when the cache lacks it."""
        if graph not in self._sessions:
            if graph not in self.folders:  # the pose graph (module docstring)
                try:
                    _, self.pose_exported = self._cached(self._pose_source, graph)
                except ConrInputError:
                    raise
                except Exception as e:  # not the input's fault, as for the step graph (conr_engines.runner)
                    raise ConrInternalError("exporting the ONNX pose graph", e) from e
                self._pose_source = None  # exported or found: the parser is no longer needed
            self._sessions[graph] = make_session(self.folders[graph] / f"{graph}.onnx", self.threads)
        return self._sessions[graph]

    def parse_sheet(self, sheet: np.ndarray) -> OnnxSheet:
        """sheet: (M, 4, S, S) premultiplied RGB + alpha in [0, 1], M == views."""
        import onnxruntime as ort

        check_frames(sheet, 4, self.size, "sheet", self.views)
        sheet = np.ascontiguousarray(sheet, dtype=np.float32)
        if self._parser is not None:
            from conr_engines.export.sheet_inputs import sheet_graph_inputs

            features, reference = sheet_graph_inputs(self._parser, sheet)
            arrays = {**{f"feat{i}": f for i, f in enumerate(features)}, "reference": reference}
        else:
            session = self.session("sheet")
            names = [o.name for o in session.get_outputs()]
            arrays = dict(zip(names, session.run(names, {"sheet": sheet})))
        values = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in arrays.items()}
        return OnnxSheet(values=values, arrays=arrays)

    def _batched(self, graph: str, bind_fixed, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
        session = self.session(graph)
        n = next(iter(inputs.values())).shape[0]
        out = []
        for start in range(0, n, self.batch):
            chunk = {k: np.ascontiguousarray(a[start:start + self.batch], dtype=np.float32) for k, a in inputs.items()}
            real = next(iter(chunk.values())).shape[0]
            if real < self.batch:  # pad with copies of the last frame; dropped below
                chunk = {k: np.concatenate([c, np.repeat(c[-1:], self.batch - real, axis=0)]) for k, c in chunk.items()}
            binding = session.io_binding()
            bind_fixed(binding)
            for k, c in chunk.items():
                binding.bind_cpu_input(k, c)
            binding.bind_output(output, "cpu")
            session.run_with_iobinding(binding)
            out.append(binding.copy_outputs_to_cpu()[0][:real])
        return np.concatenate(out, axis=0)

    def render(self, sheet: OnnxSheet, xyz: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """xyz (B, 3, S, S), alpha (B, 1, S, S) -> premultiplied RGBA (B, 4, S, S)."""
        check_frames(xyz, 3, self.size, "xyz")
        check_frames(alpha, 1, self.size, "alpha", xyz.shape[0])

        def bind_sheet(binding) -> None:
            for name, value in sheet.values.items():
                binding.bind_ortvalue_input(name, value)

        return self._batched("step", bind_sheet, {"xyz": xyz, "alpha": alpha}, "rgba")

    def parse_pose(self, rgb: np.ndarray) -> np.ndarray:
        """Pose images (B, 3, S, S) -> UDP (B, 4, S, S) in [0, 1]."""
        check_frames(rgb, 3, self.size, "pose images")
        return self._batched("pose", lambda binding: None, {"rgb": rgb}, "udp")
