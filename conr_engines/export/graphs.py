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

from types import ModuleType
from typing import Any

__all__ = ["graph_layers", "GRAPHS"]

GRAPHS = ("sheet", "step", "pose")


def _sheet_class(base: type, twin: ModuleType) -> type:
    class SheetGraph(base):
        """sheet (M, 4, S, S) -> (*features, reference): `CoNR.parse_sheet` on the model's own parser."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.udpparsernet = model.udpparsernet

        def forward(self, sheet):
            rgb, alpha = sheet[:, :3], sheet[:, 3:4]
            return (*twin.encode_sheet(self.udpparsernet, rgb), twin.sheet_reference(rgb, alpha))

    return SheetGraph


def _step_class(base: type, twin: ModuleType) -> type:
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
            target = twin.encode_target(self.target_pose_encoder, xyz, alpha)
            sheet = twin.Sheet(features=[feat0, feat1, feat2, feat3, feat4], reference=reference)
            if not self.messages:  # the shader called as a layer, as `CoNR.shade` does (the same ops either way)
                return twin.shade(self.shader, self.rgbadecodernet, sheet, target)
            levels = self.shader.run_levels(target, *twin.broadcast_sheet(sheet, xyz.shape[0]))
            rgba = twin.premultiply(self.rgbadecodernet(levels[-1]["message"]))
            return (rgba, *[lv["message"] for lv in levels])

    return StepGraph


def _pose_class(base: type, twin: ModuleType) -> type:
    class PoseGraph(base):
        """rgb (B, 3, S, S) -> udp (B, 4, S, S): `CoNR.parse_pose` on the model's own parser."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.udpparsernet = model.udpparsernet

        def forward(self, rgb):
            return twin.parse_pose(self.udpparsernet, rgb)

    return PoseGraph


def graph_layers(model: Any, base: type, twin: ModuleType, messages: bool, step_model: Any = None) -> dict[str, Any]:
    """The sheet, step and pose graph layers over `model`'s sub-networks, in eval mode. step_model: the model the
    step graph is built from instead (the same parameters computed with other `Ops`: `CoNR.with_ops`)."""
    step = _step_class(base, twin)(model if step_model is None else step_model, messages)
    layers = {"sheet": _sheet_class(base, twin)(model), "step": step, "pose": _pose_class(base, twin)(model)}
    for layer in layers.values():
        layer.eval()
    return layers
