"""Export of the CoNR step as static graphs for Paddle Inference: the graph wrappers, their input specs, and the
export itself into the cache (`conr_engines.export.cache.cached_folder`), once per identity, under a lock shared by
processes.

Two graphs, traced with `paddle.jit.to_static` + `paddle.jit.save` (PIR format) at fixed shapes, each in a cache
folder of its own:
- `step`: xyz (B, 3, S, S), alpha (B, 1, S, S), the five sheet features (M, C, h, w) and the reference
  (M, 4, S, S) -> premultiplied RGBA (B, 4, S, S); exported when a predictor runner is built;
- `pose`: pose image (B, 3, S, S) -> UDP (B, 4, S, S); exported the first time pose images are parsed (renders
  of UDP files, the usual input, never need it: a third of an export's time and bytes saved).
Both are the graphs of `conr_engines.export.graphs` (the step without its per-level messages), traced from
`CoNR.with_ops(export_ops(...))`: the same parameters, computed with the export operators
(`conr_engines.inference.ops`). A graph's folder holds its program (`conr_engines.export.program.save_program`); the
parameters it reads are saved apart, in a cache folder of their own named by the weights and the parameter record
(`conr_engines.export.cache.cached_params`), which every graph set of one weight set shares: one 0.4 GB file, not
one per size, view count, batch, precision or warp. Why each choice was made, with measurements: docs/predictor.md.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paddle
import paddle.nn as nn

from conr_common.contract.config import OFFICIAL
from conr_common.platform.quiet import output_to

import conr_paddle.model as paddle_model
from conr_engines.export.cache import cached_folder, cached_params
from conr_engines.export.graphs import graph_layers
from conr_engines.export.program import GraphParams, save_program
from conr_engines.export.to_static_files import removing_to_static_files
from conr_engines.inference import bf16_marks
from conr_engines.inference.ext import WarpOp
from conr_engines.inference.ops import export_ops
from conr_paddle.model import CoNR

__all__ = ["cached_export", "export_graphs", "export_pose_graph", "pose_parser", "PoseParser", "BF16_FP32_LEVELS",
           "FEATURE_COUNT"]

# the files of an export that meta.json records the sha256 of: the program (PIR .json); its parameters are apart
GRAPH_SUFFIXES = (".json",)
# bf16 exports keep the decoder blocks of the last shader levels in float32 (`_bf16_fp32_regions`)
BF16_FP32_LEVELS = 3
# the step graph's sheet inputs feat0..feat4: the official parser's encoder features, one per skip level
FEATURE_COUNT = len(OFFICIAL.parser.skip_channels)


def _feature_shapes(model: CoNR, views: int, size: int) -> list[list[int]]:
    """Shapes of the parser encoder features for `views` sheet images of `size` (from the architecture config)."""
    cfg = model.udpparsernet.cfg
    if len(cfg.skip_channels) != FEATURE_COUNT:
        raise ValueError(f"expected {FEATURE_COUNT} parser feature levels, config has {cfg.skip_channels}")
    return cfg.feature_shapes(views, size)


def _specs(model: CoNR, size: int, views: int, batch: int) -> dict[str, list]:
    spec = paddle.static.InputSpec
    feats = [spec(shape, "float32", f"feat{i}") for i, shape in enumerate(_feature_shapes(model, views, size))]
    return {
        "step": [spec([batch, 3, size, size], "float32", "xyz"), spec([batch, 1, size, size], "float32", "alpha")]
        + feats
        + [spec([views, 4, size, size], "float32", "reference")],
    }


def _bf16_fp32_regions(model: CoNR) -> list[nn.Layer]:
    """Sub-networks a bf16 export keeps in float32 (`bf16_marks.fp32_regions`): the decoder blocks of the last
    BF16_FP32_LEVELS shader levels, the ones `export_ops(..., fp32_levels=BF16_FP32_LEVELS)` builds for it. The pose
    graph contains none of these layers and stays fully bf16. Measurements: docs/bf16_bisect.md."""
    blocks = list(model.shader.decoder_blocks)
    return blocks[len(blocks) - BF16_FP32_LEVELS:]


def _trace(model: CoNR, tmp: Path, size: int, views: int, batch: int, bf16: bool,
           graphs: tuple[str, ...]) -> dict[str, GraphParams]:
    """Trace `graphs` ("step", "pose") of `model` (built with the export ops) and save their programs into `tmp`;
    {graph: the parameters its program reads}. For the pose graph alone `model` may be anything holding the export
    parser as `udpparsernet` (`pose_parser`)."""
    layers = graph_layers(model, nn.Layer, paddle_model, messages=False, as_is=paddle.jit.not_to_static,
                          graphs=graphs)
    specs = {**_pose_spec(size, batch), **(_specs(model, size, views, batch) if "step" in graphs else {})}
    keep = _bf16_fp32_regions(model) if bf16 and "step" in graphs else []
    params = {}
    # tracing chatter (glog lines from the custom ops' static-graph API, PIR UserWarnings) goes to a log kept in the
    # export folder, not to the user's terminal; errors still raise
    with removing_to_static_files(), output_to(tmp / "export.log"), bf16_marks.fp32_regions(keep):
        for name, layer in layers.items():
            static = paddle.jit.to_static(layer, input_spec=specs[name], full_graph=True)
            params[name] = save_program(static, specs[name], tmp / (name + ".json"))
            if keep:
                bf16_marks.apply_marks(tmp / (name + ".json"))  # the tags -> use_quantizer (stays fp32)
    return params


def _pose_spec(size: int, batch: int) -> dict[str, list]:
    return {"pose": [paddle.static.InputSpec([batch, 3, size, size], "float32", "rgb")]}


def _ops(warp_op: WarpOp | None, precision: str):
    bf16 = precision == "bf16"
    return export_ops(warp_op, bf16=bf16, fp32_levels=BF16_FP32_LEVELS if bf16 else 0)


def export_graphs(model: CoNR, folder: Path, size: int, views: int, batch: int, warp_op: WarpOp | None,
                  precision: str) -> GraphParams:
    """Write the step graph's program of `model` (eager; traced through `model.with_ops(export_ops(...))`) into the
    empty folder `folder`; the parameters it reads."""
    return _trace(model.with_ops(_ops(warp_op, precision)), folder, size, views, batch, precision == "bf16",
                  ("step",))["step"]


@dataclass(frozen=True, eq=False)
class PoseParser:
    """What the pose graph is traced from: the parser of `CoNR.with_ops(export_ops(...))`, which shares its
    parameters with the eager model's parser (nothing of the shader or the decoders is held)."""

    udpparsernet: nn.Layer


def pose_parser(model: CoNR, warp_op: WarpOp | None, precision: str) -> PoseParser:
    """The export parser of `model` for the pose graph, to export it later (`export_pose_graph`): the same ops, and
    so the same program, as when the pose graph was exported with the step."""
    return PoseParser(model.with_ops(_ops(warp_op, precision)).udpparsernet)


def export_pose_graph(parser: PoseParser, folder: Path, size: int, batch: int, precision: str) -> GraphParams:
    """Write the pose graph's program (pose images -> UDP) of `parser` into the empty folder `folder`; the
    parameters it reads. The pose graph holds none of the layers a bf16 export keeps in float32
    (`_bf16_fp32_regions`): it is fully bf16 there."""
    return _trace(parser, folder, size, 1, batch, precision == "bf16", ("pose",))["pose"]


def _state(model: CoNR | PoseParser) -> dict:
    """The parameters of `model` under the keys the graphs' records use (`GraphParams.keys`: the model's own)."""
    if isinstance(model, PoseParser):
        return {f"udpparsernet.{key}": value for key, value in model.udpparsernet.state_dict().items()}
    return model.state_dict()


def _params_problem(meta: dict) -> str | None:
    """Why a graph folder's meta.json has no usable parameter record (`GraphParams`), or None."""
    try:
        GraphParams.from_json(meta.get("params"))
    except ValueError as e:
        return f"meta.json's parameter record: {e}"
    return None


def cached_export(model: CoNR | PoseParser, folder: Path, size: int, views: int, batch: int, meta: dict,
                  warp_op: WarpOp | None, precision: str, graph: str = "step") -> tuple[dict, bool, Path]:
    """(meta.json, exported, parameter file): the verified export of `graph` ("step": from the eager `model`;
    "pose": from a `PoseParser`) in `folder`, exported first when there is none (exported True), by
    `conr_engines.export.cache.cached_folder` (under the lock `<folder>.lock`, the program's sha256 in meta.json),
    and the verified parameter file its program reads (`conr_engines.export.cache.cached_params`, in the same
    cache). meta: what meta.json records besides the export time, the parameter record and the checksums."""
    if graph not in ("step", "pose"):
        raise ValueError(f"graph must be 'step' or 'pose', got {graph!r}")
    export: Callable[[Path], GraphParams] = (
        (lambda tmp: export_graphs(model, tmp, size, views, batch, warp_op, precision)) if graph == "step"
        else (lambda tmp: export_pose_graph(model, tmp, size, batch, precision)))

    def fill(tmp: Path) -> dict:
        started = time.perf_counter()
        params = export(tmp)
        return dict(meta, export_seconds=round(time.perf_counter() - started, 2), params=params.to_json())

    found, exported = cached_folder(folder, fill, GRAPH_SUFFIXES, _params_problem)
    params = GraphParams.from_json(found["params"])
    return found, exported, cached_params(lambda: _state(model), folder.parent, found["weights"], params)
