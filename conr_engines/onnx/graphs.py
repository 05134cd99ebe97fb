"""The Paddle graphs exported to ONNX (`conr_engines.onnx.export`, `convert.onnx_export`): the graphs of
`conr_engines.export.graphs` (sheet, step with message0..message5, pose) over the eager model, the step traced with
the operators the ONNX path needs (`conr_engines.onnx.ops.ONNX_OPS`: the same parameters, `CoNR.with_ops`), and
their input/output contract (`graph_io`). Fixed shapes: Paddle 3.3.1 cannot export a dynamic view count. The sheet
graph computes in float32 (the eager runners parse the sheet in float64, `CoNR.parse_sheet`).
"""
from __future__ import annotations

from typing import Any

from conr_engines.export.graphs import GRAPHS

__all__ = ["paddle_onnx_graphs", "graph_io", "GRAPHS", "LEVELS"]

LEVELS = 6


def graph_io(size: int, views: int, batch: int, feature_shapes: list[list[int]],
             message_shapes: list[list[int]]) -> dict[str, dict[str, dict[str, list[int]]]]:
    """Input and output names with their shapes, per graph: the contract of both frameworks' ONNX files."""
    feats = {f"feat{i}": s for i, s in enumerate(feature_shapes)}
    ref = {"reference": [views, 4, size, size]}
    return {
        "sheet": {"inputs": {"sheet": [views, 4, size, size]}, "outputs": {**feats, **ref}},
        "step": {
            "inputs": {"xyz": [batch, 3, size, size], "alpha": [batch, 1, size, size], **feats, **ref},
            "outputs": {"rgba": [batch, 4, size, size],
                        **{f"message{k}": [batch] + s for k, s in enumerate(message_shapes)}},
        },
        "pose": {"inputs": {"rgb": [batch, 3, size, size]}, "outputs": {"udp": [batch, 4, size, size]}},
    }


def paddle_onnx_graphs(model: Any, graphs: tuple[str, ...] | list[str] = GRAPHS) -> dict[str, Any]:
    """The graph layers named in `graphs` (default: sheet, step and pose) of the Paddle `CoNR` `model`, the step
    computed by `model.with_ops(ONNX_OPS)` (the same parameters), their bodies marked for to_static to run as they
    are. For the sheet and pose graphs alone, `model` needs only its parser (`graph_layers`)."""
    import paddle
    import paddle.nn as nn

    import conr_paddle.model as paddle_model
    from conr_engines.export.graphs import graph_layers
    from conr_engines.onnx.ops import ONNX_OPS

    step_model = model.with_ops(ONNX_OPS) if "step" in graphs else None
    return graph_layers(model, nn.Layer, paddle_model, messages=True, step_model=step_model,
                        as_is=paddle.jit.not_to_static, graphs=tuple(graphs))  # traced as plain Python
