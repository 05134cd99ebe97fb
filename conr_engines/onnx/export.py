"""Export the Paddle port's graphs (`conr_engines.onnx.graphs.paddle_onnx_graphs`) as checked ONNX files: what the
onnxruntime engine (`conr_engines.onnx.runner`) caches and `python -m convert export-onnx --paddle` writes.

`paddle.jit.to_static`, each program saved alone (PIR `.json`, `conr_engines.export.program`) in a temporary folder
with the parameters it reads (written once for the sheet and the pose graph, which read the same parser; not at all
when the caller finds them in the graph cache, where the predictor's graphs of the same weights keep them), then
paddle2onnx's converter called directly (its C++ entry point): paddle2onnx's Python `export` logs conversion errors
instead of raising, and its default optimiser ("polygraphy") sets POLYGRAPHY_AUTOINSTALL_DEPS=1 and pip-installs packages during export. Here
nothing is installed or downloaded, and any conversion error raises `OnnxExportError`. The graphs are traced from a
twin of the model (the same parameters) whose instance norms compute float32 statistics natively instead of in
float64 (`conr_paddle.layers`): onnxruntime has no float64 InstanceNormalization kernel, so the ONNX graphs use
float32 statistics throughout (see `convert.onnx_export` for the measured accuracy).
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conr_common.cli.args import one_line
from conr_engines.export.program import GraphParams
from conr_engines.onnx.contract import OnnxExportError, check_onnx, feature_and_message_shapes

from conr_engines.onnx.graphs import graph_io

__all__ = ["io_contract", "export_paddle_graphs", "NativeParser", "native_parser"]


def io_contract(size: int, views: int, batch: int) -> dict:
    """Input and output names and shapes of the sheet, step and pose graphs at these fixed shapes."""
    return graph_io(size, views, batch, *feature_and_message_shapes(size, views))


def _drop_unused_initializers(model) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _rename_outputs(model, names: list[str]) -> None:
    """Give the graph outputs (paddle2onnx: fetch_name_N, in return order) their meaningful names."""
    outputs = list(model.graph.output)
    if len(outputs) != len(names):
        raise OnnxExportError(f"converter wrote {len(outputs)} outputs, expected {len(names)} ({', '.join(names)})")
    mapping = {o.name: n for o, n in zip(outputs, names)}
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name in mapping:
                node.output[i] = mapping[name]
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
    for o in outputs:
        o.name = mapping[o.name]


def _native_norm_twin(model):
    """`model` computing its instance-norm statistics in float32 (module docstring): a twin sharing its parameters
    (`CoNR.with_ops`), so that the caller's model is left as it was."""
    from conr_paddle.layers import set_norm_statistics

    twin = model.with_ops(model.ops)
    set_norm_statistics(twin, "native")
    return twin


@dataclass(frozen=True, eq=False)
class NativeParser:
    """What the sheet and pose graphs are traced from, without the rest of the model: the parser of `_native_norm_twin`
    (the model's parameters, not a copy). The onnxruntime engine keeps it to export its pose graph on first use,
    after the renderer has dropped the eager model (`native_parser`)."""

    udpparsernet: Any


def native_parser(model) -> NativeParser:
    """`NativeParser` of the Paddle `CoNR` `model`."""
    return NativeParser(_native_norm_twin(model).udpparsernet)


def _paddle_to_onnx_bytes(json_path: Path, params_path: Path, opset: int) -> bytes:
    """paddle2onnx's converter without its Python wrapper (which swallows errors and may pip-install)."""
    from paddle2onnx import paddle2onnx_cpp2py_export as p2o

    try:
        data = p2o.export(
            str(json_path), str(params_path), opset,
            False,  # auto_upgrade_opset: the opset asked for, or an error
            False,  # verbose
            True,  # enable_onnx_checker
            False,  # enable_experimental_op
            True,  # enable_optimize (paddle2onnx's own C++ passes; installs nothing)
            {},  # custom_op_info: none
            "onnxruntime", "", "", False,  # deploy_backend, calibration_file, external_file, export_fp16_model
        )
    except Exception as e:  # the C++ side raises RuntimeError and friends
        raise OnnxExportError(f"paddle2onnx failed on {json_path.name}: {one_line(e)}") from e
    if not data:
        raise OnnxExportError(f"paddle2onnx wrote nothing for {json_path.name} (see its log)")
    return bytes(data)


def export_paddle_graphs(model, folder: Path, size: int, views: int, batch: int, opset: int,
                         graphs: list[str], log: Path,
                         params_from: Callable[[GraphParams], Path | None] | None = None) -> dict[str, int]:
    """Trace, convert and check the Paddle port's graphs into `folder`/<graph>.onnx; returns their byte sizes.
    model: the Paddle `CoNR`, or a `NativeParser` for the sheet and pose graphs alone.
    params_from(record): an existing parameter file holding a program's parameters (the graph cache's,
    `conr_engines.export.cache.found_params`), or None to write them into the temporary folder."""
    import onnx
    import paddle

    from conr_common.platform.quiet import output_to
    from conr_engines.export.program import save_params, save_program
    from conr_engines.export.to_static_files import removing_to_static_files
    from conr_engines.onnx.graphs import paddle_onnx_graphs

    contract = io_contract(size, views, batch)
    spec = paddle.static.InputSpec
    sizes = {}
    if isinstance(model, NativeParser) and "step" in graphs:
        raise ValueError("the step graph needs the whole model, not its parser (NativeParser)")
    layers = paddle_onnx_graphs(model if isinstance(model, NativeParser) else _native_norm_twin(model), graphs)
    with tempfile.TemporaryDirectory(prefix="conr-onnx-pir-") as work, removing_to_static_files():
        for graph in graphs:
            io = contract[graph]
            specs = [spec(shape, "float32", name) for name, shape in io["inputs"].items()]
            layer = layers[graph]
            base = Path(work) / graph
            with output_to(log):
                static = paddle.jit.to_static(layer, input_spec=specs, full_graph=True)
                params = save_program(static, specs, base.with_suffix(".json"))
                params_file = params_from(params) if params_from is not None else None
                reused = params_file is not None
                if params_file is None:
                    params_file = Path(work) / f"{params.digest()}.pdiparams"
                    if not params_file.is_file():
                        save_params(static.state_dict(), params, params_file)
                data = _paddle_to_onnx_bytes(base.with_suffix(".json"), params_file, opset)
            if reused:
                with open(log, "a") as f:
                    f.write(f"{graph}: parameters read from {params_file}\n")
            proto = onnx.load_from_string(data)
            del data
            _rename_outputs(proto, list(io["outputs"]))
            _drop_unused_initializers(proto)
            check_onnx(proto, graph, io, opset)
            path = folder / f"{graph}.onnx"
            onnx.save(proto, str(path))
            sizes[graph] = path.stat().st_size
            del proto
    return sizes
