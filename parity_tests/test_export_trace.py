"""The exported graphs are traced with their bodies run as plain Python (`conr_engines.export.graphs.graph_layers`,
`as_is=paddle.jit.not_to_static`, what the Paddle Inference and Paddle ONNX exports pass): to_static translates each
graph's `forward` and nothing below it. That is 3.4-6x faster for the official networks, and it is only right if the
program is the one a full source translation builds. This test traces every graph of the small CoNR both ways and
compares the saved programs and the weights they read. The full translation is traced from layers written here
(`_FULL`) whose `forward` makes the graphs' calls itself: to_static translates a function it finds among its module's
globals, so these bodies, and every function and layer below them, are rewritten.

Inputs: the small CoNR (`tiny_conr`: every layer kind and every shader level of the official shape) at 128 px with 2
views, the step built with the exporters' operators (`export_ops` without the compiled library: grid_sample). Shapes
are fixed, as in the exports. The one attribute left out of the comparison is `struct_name`: a label that carries a
per-process counter (the second trace of a layer in a process says `ResEncUnet_2`), not a part of the computation.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import paddle
import pytest

import conr_paddle.model as pm
from conr_engines.export.graphs import graph_layers
from conr_engines.export.program import save_params, save_program
from conr_engines.export.to_static_files import removing_to_static_files, to_static_folder
from conr_engines.inference.ops import export_ops
from parity_tests.tiny_conr import tiny_paddle_model

# the full translation of four graphs takes ~15 s: a guard on the exports, not a day-to-day test
pytestmark = pytest.mark.slow
SIZE, VIEWS, BATCH = 128, 2, 1


def _specs(sheet_layer) -> dict[str, list]:
    spec = paddle.static.InputSpec
    shapes = sheet_layer.udpparsernet.cfg.feature_shapes(VIEWS, SIZE)
    feats = [spec(s, "float32", f"feat{i}") for i, s in enumerate(shapes)]
    image = [BATCH, 3, SIZE, SIZE]
    return {
        "sheet": [spec([VIEWS, 4, SIZE, SIZE], "float32", "sheet")],
        "step": [spec(image, "float32", "xyz"), spec([BATCH, 1, SIZE, SIZE], "float32", "alpha"), *feats,
                 spec([VIEWS, 4, SIZE, SIZE], "float32", "reference")],
        "pose": [spec(image, "float32", "rgb")],
    }


def _without_struct_names(node):
    """The program's json with every `struct_name` attribute left out (module docstring)."""
    if isinstance(node, dict):
        return {k: _without_struct_names(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_struct_names(v) for v in node if not (isinstance(v, dict) and v.get("N") == "struct_name")]
    return node


class _FullSheet(paddle.nn.Layer):
    def __init__(self, model) -> None:
        super().__init__()
        self.udpparsernet = model.udpparsernet

    def forward(self, sheet):
        rgb, alpha = sheet[:, :3], sheet[:, 3:4]
        return (*pm.encode_sheet(self.udpparsernet, rgb), pm.sheet_reference(rgb, alpha))


class _FullStep(paddle.nn.Layer):
    def __init__(self, model, messages: bool) -> None:
        super().__init__()
        self.target_pose_encoder, self.shader = model.target_pose_encoder, model.shader
        self.rgbadecodernet, self.messages = model.rgbadecodernet, messages

    def forward(self, xyz, alpha, feat0, feat1, feat2, feat3, feat4, reference):
        target = pm.encode_target(self.target_pose_encoder, xyz, alpha)
        sheet = pm.Sheet(features=[feat0, feat1, feat2, feat3, feat4], reference=reference)
        if not self.messages:
            return pm.shade(self.shader, self.rgbadecodernet, sheet, target)
        levels = self.shader.run_levels(target, *pm.broadcast_sheet(sheet, xyz.shape[0]))
        rgba = pm.premultiply(self.rgbadecodernet(levels[-1]["message"]))
        return (rgba, *[lv["message"] for lv in levels])


class _FullPose(paddle.nn.Layer):
    def __init__(self, model) -> None:
        super().__init__()
        self.udpparsernet = model.udpparsernet

    def forward(self, rgb):
        return pm.parse_pose(self.udpparsernet, rgb)


def _full_layers(model, messages: bool) -> dict:
    layers = {"sheet": _FullSheet(model), "step": _FullStep(model.with_ops(export_ops(None)), messages),
              "pose": _FullPose(model)}
    for layer in layers.values():
        layer.eval()
    return layers


def _weights(static, params) -> list[tuple[str, tuple[int, ...], str]]:
    """What the graph's parameter file holds, read from the traced layer instead of a written file: each parameter's
    program name, shape and sha256 of its values, in the file's order. `save_params` writes exactly these, as
    `paddle.jit.save` does (test_program_only_save_is_what_jit_save_writes), so equal lists mean equal files."""
    state = static.state_dict()
    return [(name, shape, hashlib.sha256(state[key].numpy().tobytes()).hexdigest())
            for name, key, shape in zip(params.names, params.keys, params.shapes)]


def _trace(layers: dict, sheet_layer, folder: Path) -> dict[str, tuple]:
    """{graph: (program json without struct names, its weights (`_weights`), translated source files)} of each of
    `layers`. The program is saved alone (`save_program`, the exporters' save): the parameter files of 8 traces
    would be 0.4 GB written for a comparison the traced layers answer in memory."""
    out = {}
    specs_of = _specs(sheet_layer)
    for name, layer in layers.items():
        specs = specs_of[name]
        with removing_to_static_files():
            static = paddle.jit.to_static(layer, input_spec=specs, full_graph=True)
            params = save_program(static, specs, folder / f"{name}.json")
            translated = sorted(p.name for p in to_static_folder().glob("*.py"))
        program = _without_struct_names(json.loads((folder / f"{name}.json").read_text()))
        out[name] = (program, _weights(static, params), translated)
    return out


def test_plain_trace_builds_the_program_of_the_full_translation(tmp_path):
    """Sheet, pose and the step as the predictor exports it (rgba) and as the ONNX exports do (rgba and messages)."""
    model = tiny_paddle_model(3)
    model.eval()
    full, plain = {}, {}
    for messages in (False, True):
        for kind, layers in (("full", _full_layers(model, messages)),
                             ("plain", graph_layers(model, paddle.nn.Layer, pm, messages=messages,
                                                    step_model=model.with_ops(export_ops(None)),
                                                    as_is=paddle.jit.not_to_static))):
            folder = tmp_path / f"{kind}-{messages}"
            folder.mkdir()
            names = ["sheet", "step", "pose"] if not messages else ["step"]
            traced = _trace({n: layers[n] for n in names}, layers["sheet"], folder)
            (full if kind == "full" else plain).update({(n, messages): t for n, t in traced.items()})
    for key, (program, weights, translated) in plain.items():
        assert program == full[key][0], f"{key}: the plain trace built another program"
        assert weights == full[key][1], f"{key}: the plain trace saved other weights"
        # the mechanism itself: only the forward was translated, where the full translation rewrote every function
        assert len(translated) == 1 and "forward" in translated[0], (key, translated)
        assert len(full[key][2]) > 10, (key, full[key][2])


def test_program_only_save_is_what_jit_save_writes(tmp_path):
    """The predictor saves a graph's program and its parameters apart (`conr_engines.export.program`): the program
    must be the one `paddle.jit.save` writes (struct names aside, as above) and the parameter file its bytes, also
    when written from another model of the same weights whose parameters this process named otherwise (a later
    process filling a shared parameter folder)."""
    model = tiny_paddle_model(3)
    model.eval()
    # the same values under other eager names, as a model built by other code would hold them
    twin = tiny_paddle_model(3)
    for parameter in twin.parameters():
        parameter.name = f"other_{parameter.name}"
    assert [p.name for p in twin.parameters()] != [p.name for p in model.parameters()]
    layers = graph_layers(model, paddle.nn.Layer, pm, messages=False, step_model=model.with_ops(export_ops(None)),
                          as_is=paddle.jit.not_to_static, graphs=("step", "pose"))
    specs_of = _specs(_FullSheet(model))
    for name, layer in layers.items():
        with removing_to_static_files():
            static = paddle.jit.to_static(layer, input_spec=specs_of[name], full_graph=True)
            params = save_program(static, specs_of[name], tmp_path / "apart" / f"{name}.json")
            with paddle.pir_utils.IrGuard():
                paddle.jit.save(static, str(tmp_path / "jit" / name))
        saved = (tmp_path / "jit" / f"{name}.pdiparams").read_bytes()
        assert len(params.names) > 10 and len(saved) > 1_000_000, (name, len(params.names), len(saved))
        program = _without_struct_names(json.loads((tmp_path / "apart" / f"{name}.json").read_text()))
        assert program == _without_struct_names(json.loads((tmp_path / "jit" / f"{name}.json").read_text())), name
        for source in (model, twin):
            save_params(source.state_dict(), params, tmp_path / "apart" / f"{name}.pdiparams")
            assert (tmp_path / "apart" / f"{name}.pdiparams").read_bytes() == saved, (name, source is twin)
