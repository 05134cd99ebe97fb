"""`python -m convert export-onnx`: the CoNR graphs as ONNX files, from the Paddle port or the PyTorch reference.

    python -m convert export-onnx --paddle WEIGHTS -o DIR [--size 256] [--views 4] [--batch 1] [--opset 17]
                                  [--graphs sheet,step,pose] [--no-measure] [--force]
    python -m convert export-onnx --torch WEIGHTS -o DIR ...

Graphs, names and shapes: `conr_paddle.onnx_graphs` (fixed shapes; one file per graph, DIR/<graph>.onnx).
Paddle path: `paddle.jit.to_static` + `paddle.jit.save` (PIR `.json`) in a temporary folder, then paddle2onnx's
converter called directly (its C++ entry point): paddle2onnx's Python `export` logs conversion errors instead of
raising, and its default optimiser ("polygraphy") sets POLYGRAPHY_AUTOINSTALL_DEPS=1 and pip-installs packages
during export. Here nothing is installed or downloaded, and any conversion error raises `OnnxExportError`.
Paddle's float64 instance-norm statistics (`conr_paddle.layers`) are turned off while tracing: onnxruntime has
no float64 InstanceNormalization kernel (session creation fails with NOT_IMPLEMENTED), so the ONNX graphs use
float32 statistics throughout. That is not what limits the ONNX sheet graph's accuracy: measured at 128 px /
2 views, its deepest feature is 8.8e-4 scaled from the float64 truth (torch fp32: 8.1e-5) whether the norm is
onnxruntime's InstanceNormalization or written out with float64 statistics (Cast/ReduceMean/Sub/Mul/Sqrt/Div),
with or without onnxruntime's graph optimisations, and for torch's ONNX file as for Paddle's: the error comes
from onnxruntime's float32 convolutions on the parser's deep, small maps.
Torch path: torch.onnx.export with the TorchScript exporter (dynamo=False), fixed shapes too.

Every file is checked: `onnx.checker.check_model`, only standard ONNX operators (no custom domain), exactly the
named inputs and outputs of `graph_io` with their shapes. The folder is written atomically (a temporary sibling
renamed at the end) with `meta.json` last: weights sha256, shapes, opset, versions and, unless --no-measure, the
max abs difference of every output against eager Paddle and the torch reference on the built-in sample.
Exit status: 0 written, 1 an internal conversion error (one line), 2 bad input (one line naming it).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Iterator

import numpy as np

from conr_common.cli import one_line
from conr_common.config import NETWORK_NAMES
from conr_common.errors import ConrInputError

__all__ = ["OnnxExportError", "export_onnx", "export_paddle_graphs", "export_torch_graphs", "check_onnx",
           "add_export_onnx_parser", "ONNX_FORMAT", "OPSET_RANGE", "DEFAULT_OPSET", "FRAMEWORKS"]

# Bump when the exported graphs change (wrapper code, names, op swaps): part of the onnxruntime engine's cache key.
ONNX_FORMAT = 1
# GridSample needs opset 16; at 20 and 21 paddle2onnx writes GridSample mode="bilinear" (the opset-20 name is
# "linear"), which onnxruntime rejects. 16-19 were measured to load and agree.
OPSET_RANGE = (16, 19)
DEFAULT_OPSET = 17
FRAMEWORKS = ("paddle", "torch")
STANDARD_DOMAINS = ("", "ai.onnx")


class OnnxExportError(RuntimeError):
    """The converter failed or wrote a model that does not pass the checks (not the user's input)."""


# ------------------------------------------------------------------------------------------------------ helpers


def versions() -> dict[str, str | None]:
    out = {}
    for dist in ("paddlepaddle", "paddle2onnx", "onnx", "onnxruntime", "torch", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _sha256_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        f_hash = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                f_hash.update(chunk)
        h.update(f"{path.name}:{f_hash.hexdigest()}\n".encode())
    return h.hexdigest()


def _torch_files(folder: Path) -> list[Path]:
    from conr_common.manifest import official_manifest

    if not folder.is_dir():
        raise ConrInputError(f"{folder}: --torch must be a folder with the four official .pth files")
    paths = [folder / official_manifest()[name].file for name in NETWORK_NAMES]
    for p in paths:
        if not p.is_file():
            raise ConrInputError(f"{p}: missing (--torch folder needs all four networks)")
    return paths


def feature_and_message_shapes(size: int, views: int) -> tuple[list[list[int]], list[list[int]]]:
    """Parser feature shapes (M, C, h, w), deepest first, and the shader's per-level message shapes (C, h, w)."""
    from conr_common.config import OFFICIAL

    channels = list(reversed(OFFICIAL.parser.skip_channels))
    strides = [32, 16, 8, 4, 2]
    feats = [[views, c, size // s, size // s] for c, s in zip(channels, strides)]
    shader = OFFICIAL.shader
    sides = [size // s for s in strides[1:]] + [size, size]  # a level ends at the next feature's size, then at S
    messages = [[shader.split(lv).messages, side, side] for lv, side in enumerate(sides)]
    return feats, messages


def io_contract(size: int, views: int, batch: int) -> dict:
    from conr_paddle.onnx_graphs import graph_io

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


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


def check_onnx(model, graph: str, contract: dict, opset: int) -> None:
    """onnx.checker, standard operators only, the contract's names and shapes; OnnxExportError otherwise."""
    import onnx

    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise OnnxExportError(f"{graph}: onnx.checker rejected the model: {one_line(e)}") from e
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in STANDARD_DOMAINS})
    if custom:
        raise OnnxExportError(f"{graph}: non-standard operators {', '.join(custom)}")
    imports = {o.domain: o.version for o in model.opset_import}
    if imports.get("", imports.get("ai.onnx")) != opset:
        raise OnnxExportError(f"{graph}: written at opset {imports}, asked for {opset}")
    for kind in ("inputs", "outputs"):
        want = contract[kind]
        values = model.graph.input if kind == "inputs" else model.graph.output
        initializers = {i.name for i in model.graph.initializer}
        got = {v.name: _dims(v) for v in values if v.name not in initializers}
        if list(got) != list(want):
            raise OnnxExportError(f"{graph}: {kind} {list(got)}, expected {list(want)}")
        for name, shape in want.items():
            if got[name] != shape:
                raise OnnxExportError(f"{graph}: {kind[:-1]} {name} has shape {got[name]}, expected {shape}")


# -------------------------------------------------------------------------------------------------- Paddle side


@contextlib.contextmanager
def _native_norm(model) -> Iterator[None]:
    """float32 instance-norm statistics while tracing (module docstring), restored on exit."""
    from conr_paddle.layers import norm_statistics, set_norm_statistics

    before = norm_statistics(model)
    set_norm_statistics(model, "native")
    try:
        yield
    finally:
        if before in ("float64", "native"):
            set_norm_statistics(model, before)


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
                         graphs: list[str], log: Path) -> dict[str, int]:
    """Trace, convert and check the Paddle port's graphs into `folder`/<graph>.onnx; returns their byte sizes."""
    import onnx
    import paddle

    from conr_common.quiet import output_to
    from conr_paddle.onnx_graphs import PoseGraph, SheetGraph, StepGraph

    contract = io_contract(size, views, batch)
    layers = {"sheet": SheetGraph, "step": StepGraph, "pose": PoseGraph}
    spec = paddle.static.InputSpec
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="conr-onnx-pir-") as work, _native_norm(model):
        for graph in graphs:
            io = contract[graph]
            specs = [spec(shape, "float32", name) for name, shape in io["inputs"].items()]
            layer = layers[graph](model)
            layer.eval()
            base = Path(work) / graph
            with output_to(log):
                static = paddle.jit.to_static(layer, input_spec=specs, full_graph=True)
                with paddle.pir_utils.IrGuard():
                    paddle.jit.save(static, str(base))
                data = _paddle_to_onnx_bytes(base.with_suffix(".json"), base.with_suffix(".pdiparams"), opset)
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


# --------------------------------------------------------------------------------------------------- torch side


@contextlib.contextmanager
def _constant_scale_factors() -> Iterator[None]:
    """While the TorchScript exporter traces, shapes are tensors, so the reference's `width / flow.shape[-1]`
    scale factor reaches F.interpolate as a tensor, which upsample_bilinear2d refuses: pass it as the Python
    float it is (shapes are fixed)."""
    import torch
    import torch.nn.functional as F

    original = F.interpolate

    def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                    recompute_scale_factor=None, antialias=False):
        if isinstance(scale_factor, torch.Tensor):
            scale_factor = float(scale_factor)
        return original(input, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners,
                        recompute_scale_factor=recompute_scale_factor, antialias=antialias)

    F.interpolate = interpolate
    try:
        yield
    finally:
        F.interpolate = original


def export_torch_graphs(model, folder: Path, size: int, views: int, batch: int, opset: int,
                        graphs: list[str], log: Path) -> dict[str, int]:
    """The PyTorch reference's graphs with the TorchScript exporter, same names and shapes as the Paddle ones."""
    import onnx
    import torch

    from conr_common.quiet import output_to
    from conr_torch_ref.onnx_graphs import PoseGraph, SheetGraph, StepGraph

    contract = io_contract(size, views, batch)
    layers = {"sheet": SheetGraph, "step": StepGraph, "pose": PoseGraph}
    sizes = {}
    for graph in graphs:
        io = contract[graph]
        args = tuple(torch.zeros(shape) for shape in io["inputs"].values())
        path = folder / f"{graph}.onnx"
        try:
            with output_to(log), torch.no_grad(), _constant_scale_factors():
                torch.onnx.export(layers[graph](model).eval(), args, str(path), opset_version=opset,
                                  input_names=list(io["inputs"]), output_names=list(io["outputs"]),
                                  dynamo=False, do_constant_folding=True, export_params=True)
        except Exception as e:
            raise OnnxExportError(f"torch.onnx.export failed on {graph}: {one_line(e)}") from e
        proto = onnx.load(str(path))
        check_onnx(proto, graph, io, opset)
        sizes[graph] = path.stat().st_size
        del proto
    return sizes


# ------------------------------------------------------------------------------------------------- measurement


def sample_inputs(size: int, views: int) -> dict[str, np.ndarray]:
    """The built-in sample (float32): sheet (M, 4, S, S) with its views repeated up to M, one UDP frame, and a
    pose image (the UDP preview's premultiplied RGB stands in for one)."""
    from .verify import load_inputs

    with tempfile.TemporaryDirectory(prefix="conr-onnx-sample-") as work:
        sheet, xyz, alpha, _ = load_inputs(size, views, None, None, 0, Path(work))
    reps = -(-views // sheet.shape[0])
    sheet = np.concatenate([sheet] * reps)[:views]
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return {"sheet": f32(sheet), "xyz": f32(xyz), "alpha": f32(alpha), "rgb": f32(xyz * alpha)}


def _paddle_outputs(pm, x: dict[str, np.ndarray], sheet_features: list[np.ndarray]) -> dict[str, dict]:
    import paddle

    from conr_paddle.onnx_graphs import PoseGraph, SheetGraph, StepGraph

    T = paddle.to_tensor
    with paddle.no_grad():
        sheet = pm.parse_sheet(T(x["sheet"]))  # the project's eager parse (float64 features)
        step = StepGraph(pm)(T(x["xyz"]), T(x["alpha"]), *[T(f) for f in sheet_features], T(x["reference"]))
        pose = PoseGraph(pm)(T(x["rgb"]))
        sheet32 = SheetGraph(pm)(T(x["sheet"]))  # float32 parse, as the ONNX graph
    names = [f"feat{i}" for i in range(5)] + ["reference"]
    return {
        "sheet": dict(zip(names, [f.numpy() for f in sheet.features] + [sheet.reference.numpy()])),
        "sheet_float32": dict(zip(names, [t.numpy() for t in sheet32])),
        "step": dict(zip(["rgba"] + [f"message{k}" for k in range(6)], [t.numpy() for t in step])),
        "pose": {"udp": pose.numpy()},
    }


def _torch_outputs(tm, x: dict[str, np.ndarray], sheet_features: list[np.ndarray]) -> dict[str, dict]:
    import torch

    from conr_torch_ref.onnx_graphs import PoseGraph, SheetGraph, StepGraph

    T = torch.from_numpy
    with torch.no_grad():
        sheet = SheetGraph(tm)(T(x["sheet"]))
        step = StepGraph(tm)(T(x["xyz"]), T(x["alpha"]), *[T(f) for f in sheet_features], T(x["reference"]))
        pose = PoseGraph(tm)(T(x["rgb"]))
    names = [f"feat{i}" for i in range(5)] + ["reference"]
    return {
        "sheet": dict(zip(names, [t.numpy() for t in sheet])),
        "step": dict(zip(["rgba"] + [f"message{k}" for k in range(6)], [t.numpy() for t in step])),
        "pose": {"udp": pose.numpy()},
    }


def measure(folder: Path, graphs: list[str], pm, tm, size: int, views: int, batch: int) -> dict:
    """Max abs of every exported output against eager Paddle and torch on the sample. The step graph is fed the
    eager Paddle sheet features on every side, so its figures are the step's own."""
    from conr_paddle.onnx_runner import make_session

    x = sample_inputs(size, views)
    x = {k: np.concatenate([v] * batch) if k in ("xyz", "alpha", "rgb") else v for k, v in x.items()}
    x["reference"] = np.concatenate([x["sheet"][:, 3:4] * x["sheet"][:, :3], x["sheet"][:, 3:4]], axis=1)
    import paddle

    with paddle.no_grad():
        features = [f.numpy() for f in pm.parse_sheet(paddle.to_tensor(x["sheet"])).features]
    paddle_out = _paddle_outputs(pm, x, features)
    torch_out = _torch_outputs(tm, x, features)
    feeds = {"sheet": {"sheet": x["sheet"]},
             "step": {"xyz": x["xyz"], "alpha": x["alpha"], **{f"feat{i}": f for i, f in enumerate(features)},
                      "reference": x["reference"]},
             "pose": {"rgb": x["rgb"]}}
    result = {}
    for graph in graphs:
        session = make_session(folder / f"{graph}.onnx")
        names = [o.name for o in session.get_outputs()]
        outs = dict(zip(names, session.run(names, feeds[graph])))
        del session
        rows = {}
        for name, value in outs.items():
            row = {"max_abs_vs_paddle_eager": float(np.abs(value - paddle_out[graph][name]).max()),
                   "max_abs_vs_torch": float(np.abs(value - torch_out[graph][name]).max()),
                   "max_abs_value": float(np.abs(value).max())}
            if graph == "sheet":
                row["max_abs_vs_paddle_eager_float32_parse"] = float(
                    np.abs(value - paddle_out["sheet_float32"][name]).max())
            rows[name] = row
        result[graph] = rows
    return result


# ------------------------------------------------------------------------------------------------------ command


def _load_models(framework: str, weights: Path):
    """(Paddle model, torch model) of one checkpoint: the other side is built through the converter's table."""
    import torch

    from conr_paddle.model import CoNR as PaddleCoNR
    from conr_paddle.model import load_networks, load_pdparams
    from conr_torch_ref.model import CoNR as TorchCoNR
    from conr_torch_ref.model import load_official

    from .mapping import paddle_to_torch, torch_to_paddle

    if framework == "paddle":
        pm = load_pdparams(PaddleCoNR(), weights)
        tm = TorchCoNR()
        for name in NETWORK_NAMES:
            state = {k: v.numpy() for k, v in getattr(pm, name).state_dict().items()}
            torch_state = paddle_to_torch(name, state, source=str(weights))
            getattr(tm, name).load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                                               for k, v in torch_state.items()}, strict=True)
    else:
        tm = load_official(TorchCoNR(), weights)
        pm = load_networks(PaddleCoNR(), {
            name: torch_to_paddle(name, {k: v.numpy() for k, v in getattr(tm, name).state_dict().items()},
                                  source=str(weights))
            for name in NETWORK_NAMES})
    return pm, tm.eval()


def parse_graphs(text: str) -> list[str]:
    from conr_paddle.onnx_graphs import GRAPHS

    graphs = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in graphs if g not in GRAPHS]
    if not graphs or unknown:
        raise ConrInputError(f"--graphs {text!r}: choose from {', '.join(GRAPHS)} (comma-separated)")
    return list(dict.fromkeys(graphs))


def check_settings(size: int, views: int, batch: int, opset: int) -> None:
    from conr_common.pipeline import check_size

    check_size(size)
    for name, value in (("--views", views), ("--batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConrInputError(f"{name} must be a positive integer, got {value!r}")
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ConrInputError(f"--opset {opset}: supported {OPSET_RANGE[0]}-{OPSET_RANGE[1]} (GridSample needs 16; "
                             "at 20-21 paddle2onnx writes a GridSample mode onnxruntime rejects)")


def write_folder(out: Path, force: bool, fill) -> dict:
    """Run fill(tmp_folder) -> meta and move the folder onto `out` atomically, meta.json written last."""
    if out.exists() and not out.is_dir():
        raise ConrInputError(f"{out}: -o must be a folder (it exists and is a file)")
    if out.exists() and any(out.iterdir()) and not force:
        raise ConrInputError(f"{out}: exists and is not empty (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        meta = fill(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return meta


def export_onnx(framework: str, weights: str | Path, out: str | Path, *, size: int = 256, views: int = 4,
                batch: int = 1, opset: int = DEFAULT_OPSET, graphs: str | list[str] = "sheet,step,pose",
                measure_sample: bool = True, force: bool = False, stdout=None) -> dict:
    """Export one framework's graphs of the checkpoint in `weights` into `out`; returns meta.json's content."""
    stdout = stdout or sys.stdout
    if framework not in FRAMEWORKS:
        raise ConrInputError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    graphs = parse_graphs(graphs) if isinstance(graphs, str) else parse_graphs(",".join(graphs))
    check_settings(size, views, batch, opset)
    weights, out = Path(weights), Path(out)
    if framework == "paddle":
        from conr_paddle.render import check_weights_dir

        files = check_weights_dir(weights)
    else:
        files = _torch_files(weights)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        if framework == "paddle":
            import paddle2onnx  # noqa: F401
    except ImportError as e:
        raise ConrInputError(f"the ONNX extra is not installed ({e}); pip install -e '.[onnx]'") from e

    def say(msg: str) -> None:
        print(f"export-onnx: {msg}", file=stdout, flush=True)

    def fill(tmp: Path) -> dict:
        started = time.perf_counter()
        say(f"reading {framework} weights from {weights}")
        pm, tm = _load_models(framework, weights)
        say(f"exporting {', '.join(graphs)} at {size} px, {views} views, batch {batch}, opset {opset}")
        exporter = export_paddle_graphs if framework == "paddle" else export_torch_graphs
        model = pm if framework == "paddle" else tm
        sizes = exporter(model, tmp, size, views, batch, opset, graphs, tmp / "export.log")
        meta = {
            "format": ONNX_FORMAT,
            "framework": framework,
            "weights": str(weights),
            "weights_sha256": _sha256_files(files),
            "size": size, "views": views, "batch": batch, "opset": opset,
            "graphs": {g: {**io_contract(size, views, batch)[g], "bytes": sizes[g]} for g in graphs},
            "norm_statistics": "float32" if framework == "paddle" else "torch",
            "versions": versions(),
            "export_seconds": round(time.perf_counter() - started, 2),
        }
        if measure_sample:
            say("measuring every output against eager Paddle and torch on the built-in sample")
            meta["measured"] = measure(tmp, graphs, pm, tm, size, views, batch)
        return meta

    return write_folder(out, force, fill)


def _run_export_onnx(args: argparse.Namespace) -> int:
    framework, weights = ("paddle", args.paddle) if args.paddle else ("torch", args.torch)
    try:
        meta = export_onnx(framework, weights, args.out, size=args.size, views=args.views, batch=args.batch,
                           opset=args.opset, graphs=args.graphs, measure_sample=not args.no_measure,
                           force=args.force)
    except OnnxExportError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    for graph, info in meta["graphs"].items():
        line = f"{args.out}/{graph}.onnx: {info['bytes'] / 1e6:.0f} MB, outputs {', '.join(info['outputs'])}"
        measured = (meta.get("measured") or {}).get(graph)
        if measured:
            worst = max(measured.values(), key=lambda r: r["max_abs_vs_torch"])
            line += (f"; worst max abs vs torch {worst['max_abs_vs_torch']:.2e}, vs eager Paddle "
                     f"{max(r['max_abs_vs_paddle_eager'] for r in measured.values()):.2e}")
        print(line)
    return 0


def add_export_onnx_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export-onnx",
        help="export the Paddle port's (or the PyTorch reference's) graphs as standard ONNX files",
        description="Export the sheet, step and pose graphs at fixed shapes with only standard ONNX operators, "
        "checked with onnx.checker, into DIR/<graph>.onnx and DIR/meta.json (written atomically). Exit status: "
        "0 written, 1 conversion error, 2 bad input.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--paddle", type=Path, metavar="WEIGHTS", help="folder with the four <network>.pdparams")
    src.add_argument("--torch", type=Path, metavar="WEIGHTS", help="folder with the four official .pth files")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--size", type=int, default=256, help="working size S, a multiple of 128 (default 256)")
    p.add_argument("--views", type=int, default=4, help="character sheet views M (default 4)")
    p.add_argument("--batch", type=int, default=1, help="frames per step/pose call (default 1)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {OPSET_RANGE[0]}-{OPSET_RANGE[1]} (default {DEFAULT_OPSET})")
    p.add_argument("--graphs", default="sheet,step,pose", help="comma-separated subset of sheet,step,pose")
    p.add_argument("--no-measure", action="store_true",
                   help="skip the sample run against eager Paddle and torch (meta.json then has no 'measured')")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=_run_export_onnx)
