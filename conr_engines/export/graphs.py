"""The exported graphs of CoNR, written once for both model twins: sheet, step and pose.

Framework-neutral: nothing of torch or paddle is imported here. `graph_layers(model, base, twin)` builds the three
layers over the sub-networks of a built model, given the framework's base class (`torch.nn.Module` or
`paddle.nn.Layer`) and the twin's model module (`conr_torch_ref.model` or `conr_paddle.model`), whose module-level
functions over sub-networks (`encode_sheet`, `sheet_reference`, `encode_target`, `parse_pose`, `broadcast_sheet`,
`premultiply`, `shade`, `Sheet`) the graphs call, as the twins' `CoNR` methods do. Used by the Paddle Inference export
(`conr_engines.inference.export`: step returns rgba only), the Paddle ONNX export (`conr_engines.onnx`) and the torch
ONNX export (`convert.onnx_export`; both ONNX steps return rgba and message0..message5).

Graphs (fixed shapes):
- `sheet`: sheet (M, 4, S, S) -> feat0..feat4 (the parser's encoder features, deepest first) and reference
  (M, 4, S, S), in the sheet's dtype (the eager Paddle runner parses the sheet in float64, `CoNR.parse_sheet`);
- `step`: xyz (B, 3, S, S), alpha (B, 1, S, S), feat0..feat4, reference -> rgba (B, 4, S, S) and, with `messages`,
  the fused shader message of every level, message0..message5 (B, C_k, h_k, w_k); message5 is what the RGBA decoder
  reads. The sheet inputs are broadcast to the B frames inside the graph exactly as `CoNR.shade` does;
- `pose`: rgb (B, 3, S, S) -> udp (B, 4, S, S).
"""
from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["graph_layers", "GRAPHS"]

GRAPHS = ("sheet", "step", "pose")


def _unchanged(function: Callable) -> Callable:
    """The default `as_is`: no mark."""
    return function


def _sheet_class(base: type, twin: ModuleType, as_is: Callable) -> type:
    @as_is
    def compute(graph: Any, sheet: Any) -> tuple:
        rgb, alpha = sheet[:, :3], sheet[:, 3:4]
        return (*twin.encode_sheet(graph.udpparsernet, rgb), twin.sheet_reference(rgb, alpha))

    class SheetGraph(base):
        """sheet (M, 4, S, S) -> (*features, reference): `CoNR.parse_sheet` on the model's own parser."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.udpparsernet = model.udpparsernet

        def forward(self, sheet):
            return compute(self, sheet)

    return SheetGraph


def _step_class(base: type, twin: ModuleType, as_is: Callable) -> type:
    @as_is
    def compute(graph: Any, xyz: Any, alpha: Any, features: list, reference: Any) -> Any:
        target = twin.encode_target(graph.target_pose_encoder, xyz, alpha)
        sheet = twin.Sheet(features=features, reference=reference)
        if not graph.messages:  # the shader called as a layer, as `CoNR.shade` does (the same ops either way)
            return twin.shade(graph.shader, graph.rgbadecodernet, sheet, target)
        levels = graph.shader.run_levels(target, *twin.broadcast_sheet(sheet, xyz.shape[0]))
        rgba = twin.premultiply(graph.rgbadecodernet(levels[-1]["message"]))
        return (rgba, *[lv["message"] for lv in levels])

    class StepGraph(base):
        """Target pose encoder + shader + RGBA decoder (`CoNR.encode_target`, `CoNR.shade`) without the eager
        checks; messages: also return the fused message of every shader level."""

        def __init__(self, model: Any, messages: bool) -> None:
            super().__init__()
            self.target_pose_encoder = model.target_pose_encoder
            self.shader = model.shader
            self.rgbadecodernet = model.rgbadecodernet
            self.messages = messages

        def forward(self, xyz, alpha, feat0, feat1, feat2, feat3, feat4, reference):
            return compute(self, xyz, alpha, [feat0, feat1, feat2, feat3, feat4], reference)

    return StepGraph


def _pose_class(base: type, twin: ModuleType, as_is: Callable) -> type:
    @as_is
    def compute(graph: Any, rgb: Any) -> Any:
        return twin.parse_pose(graph.udpparsernet, rgb)

    class PoseGraph(base):
        """rgb (B, 3, S, S) -> udp (B, 4, S, S): `CoNR.parse_pose` on the model's own parser."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.udpparsernet = model.udpparsernet

        def forward(self, rgb):
            return compute(self, rgb)

    return PoseGraph


def graph_layers(model: Any, base: type, twin: ModuleType, messages: bool, step_model: Any = None,
                 as_is: Callable[[Callable], Callable] = _unchanged,
                 graphs: tuple[str, ...] = GRAPHS) -> dict[str, Any]:
    """The graph layers named in `graphs` (default: sheet, step and pose) over `model`'s sub-networks, in eval mode.
    step_model: the model the step graph is built from instead (the same parameters computed with other `Ops`:
    `CoNR.with_ops`). `model` needs only the sub-networks of the graphs asked for (the sheet and pose graphs read
    `model.udpparsernet` alone).

    Each graph's `forward` only names its inputs and calls one function holding the computation, which `as_is`
    decorates. The Paddle exports pass `paddle.jit.not_to_static`: to_static then translates the forwards alone and
    runs everything below them as plain Python while it builds the program. With fixed shapes and no control flow
    that depends on tensor values, the program is the same, byte for byte (test_export_trace), and an official-size
    export is traced 3.4x (fp32) to 6x (bf16) faster (docs/predictor.md, "Graphs"): without it, to_static rewrote
    the source of every function and layer the graph calls and checked each call. The torch ONNX export passes
    nothing (torch.onnx traces by running the module)."""
    unknown = [g for g in graphs if g not in GRAPHS]
    if unknown:
        raise ValueError(f"unknown graphs {unknown}: choose from {GRAPHS}")
    build = {"sheet": lambda: _sheet_class(base, twin, as_is)(model),
             "step": lambda: _step_class(base, twin, as_is)(model if step_model is None else step_model, messages),
             "pose": lambda: _pose_class(base, twin, as_is)(model)}
    built = {g: build[g]() for g in ("step", "sheet", "pose") if g in graphs}  # the order layers were always built in
    layers = {g: built[g] for g in GRAPHS if g in built}
    for layer in layers.values():
        layer.eval()
    return layers
