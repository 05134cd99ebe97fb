"""`python -m convert export-onnx`: the CoNR graphs as ONNX files, from the Paddle port or the PyTorch reference.

    python -m convert export-onnx --paddle WEIGHTS -o DIR [--size 256] [--views 4] [--batch 1] [--opset 17]
                                  [--graphs sheet,step,pose] [--no-measure] [--force] [--cache-dir DIR]
    python -m convert export-onnx --torch WEIGHTS -o DIR ...

Graphs: `conr_engines.export.graphs`, written once for both frameworks; names and shapes:
`conr_engines.onnx.graphs` (fixed shapes; one file per graph, DIR/<graph>.onnx); the
format and opset numbers, the checks and the atomic folder: `conr_engines.onnx.contract`.
Paddle path: a graph the graph cache (`--cache-dir`) holds from the onnxruntime engine (same weights and settings)
is hard-linked (`_engine_graphs`, sha256 checked: measured byte-identical to this export's own at 128 px / 2 views;
a later in-place change of either file fails the cache's check, which then exports anew). The others
(`conr_engines.onnx.export`): `paddle.jit.to_static`, each program saved alone (PIR `.json`,
`conr_engines.export.program`) in a temporary folder beside its parameters, or with the parameter file the
predictor's cache already holds for these weights (`--cache-dir`), then paddle2onnx's converter called directly
(its C++ entry point): paddle2onnx's Python `export` logs conversion errors instead of raising, and its default
optimiser ("polygraphy") sets POLYGRAPHY_AUTOINSTALL_DEPS=1 and pip-installs packages during export. Here nothing
is installed or downloaded, and any conversion error raises `OnnxExportError`.
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
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from conr_common.weights.checkpoints import check_weights_dir, network_files, weights_hash
from conr_common.cli.args import one_line
from conr_common.contract.config import NETWORK_NAMES
from conr_common.platform.errors import ConrInputError
from conr_engines.onnx.contract import (
    DEFAULT_OPSET,
    ONNX_FORMAT,
    OPSET_RANGE,
    OnnxExportError,
    check_onnx,
    check_settings,
    export_versions,
    write_folder,
)
from conr_common.platform.outputs import SWAP, check_output

__all__ = ["export_onnx", "export_torch_graphs", "add_export_onnx_parser", "FRAMEWORKS"]

FRAMEWORKS = ("paddle", "torch")


# ------------------------------------------------------------------------------------------------------ helpers


def _torch_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ConrInputError(f"{folder}: --torch must be a folder with the four official .pth files")
    return network_files(folder, "torch", needs="--torch folder needs all four networks")


# --------------------------------------------------------------------------------------------------- torch side


def export_torch_graphs(model, folder: Path, size: int, views: int, batch: int, opset: int,
                        graphs: list[str], log: Path) -> dict[str, int]:
    """The PyTorch reference's graphs with the TorchScript exporter, same names and shapes as the Paddle ones."""
    import onnx
    import torch

    from conr_common.platform.quiet import output_to
    from conr_engines.onnx.export import io_contract

    contract = io_contract(size, views, batch)
    from convert.onnx_verify import torch_onnx_graphs

    layers = torch_onnx_graphs(model)
    sizes = {}
    for graph in graphs:
        io = contract[graph]
        args = tuple(torch.zeros(shape) for shape in io["inputs"].values())
        path = folder / f"{graph}.onnx"
        try:
            with output_to(log), torch.no_grad():
                torch.onnx.export(layers[graph], args, str(path), opset_version=opset,
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
    from convert.verify import load_inputs

    with tempfile.TemporaryDirectory(prefix="conr-onnx-sample-") as work:
        sheet, xyz, alpha, _ = load_inputs(size, views, None, None, 0, Path(work))
    reps = -(-views // sheet.shape[0])
    sheet = np.concatenate([sheet] * reps)[:views]
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return {"sheet": f32(sheet), "xyz": f32(xyz), "alpha": f32(alpha), "rgb": f32(xyz * alpha)}


def _named(contract: dict, graph: str, tensors) -> dict[str, np.ndarray]:
    """A graph's outputs (tensors of either framework, in the contract's order) by their contract names."""
    return dict(zip(contract[graph]["outputs"], [t.numpy() for t in tensors], strict=True))


def _paddle_outputs(pm, x: dict[str, np.ndarray], sheet_features: list[np.ndarray], contract: dict) -> dict[str, dict]:
    import paddle

    from conr_engines.onnx.graphs import paddle_onnx_graphs

    T = paddle.to_tensor
    graphs = paddle_onnx_graphs(pm)
    with paddle.no_grad():
        sheet = pm.parse_sheet(T(x["sheet"]))  # the project's eager parse (float64 features)
        step = graphs["step"](T(x["xyz"]), T(x["alpha"]), *[T(f) for f in sheet_features], T(x["reference"]))
        pose = graphs["pose"](T(x["rgb"]))
        sheet32 = graphs["sheet"](T(x["sheet"]))  # float32 parse, as the ONNX graph
    return {
        "sheet": _named(contract, "sheet", [*sheet.features, sheet.reference]),
        "sheet_float32": _named(contract, "sheet", sheet32),
        "step": _named(contract, "step", step),
        "pose": _named(contract, "pose", [pose]),
    }


def _torch_outputs(tm, x: dict[str, np.ndarray], sheet_features: list[np.ndarray], contract: dict) -> dict[str, dict]:
    import torch

    T = torch.from_numpy
    from convert.onnx_verify import torch_onnx_graphs

    graphs = torch_onnx_graphs(tm)
    with torch.no_grad():
        sheet = graphs["sheet"](T(x["sheet"]))
        step = graphs["step"](T(x["xyz"]), T(x["alpha"]), *[T(f) for f in sheet_features], T(x["reference"]))
        pose = graphs["pose"](T(x["rgb"]))
    return {
        "sheet": _named(contract, "sheet", sheet),
        "step": _named(contract, "step", step),
        "pose": _named(contract, "pose", [pose]),
    }


def measure(folder: Path, graphs: list[str], pm, tm, size: int, views: int, batch: int) -> dict:
    """Max abs of every exported output against eager Paddle and torch on the sample. The step graph is fed the
    eager Paddle sheet features on every side, so its figures are the step's own."""
    from conr_engines.onnx.export import io_contract
    from conr_engines.onnx.runner import make_session

    x = sample_inputs(size, views)
    x = {k: np.concatenate([v] * batch) if k in ("xyz", "alpha", "rgb") else v for k, v in x.items()}
    x["reference"] = np.concatenate([x["sheet"][:, 3:4] * x["sheet"][:, :3], x["sheet"][:, 3:4]], axis=1)
    import paddle

    with paddle.no_grad():
        features = [f.numpy() for f in pm.parse_sheet(paddle.to_tensor(x["sheet"])).features]
    contract = io_contract(size, views, batch)
    paddle_out = _paddle_outputs(pm, x, features, contract)
    torch_out = _torch_outputs(tm, x, features, contract)
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


def _load_model(framework: str, weights: Path):
    """The model of `framework` (eval mode) from its own files in `weights` (strict, safe loaders)."""
    if framework == "paddle":
        from conr_paddle.model import load_pdparams, unloaded

        return load_pdparams(unloaded(), weights)
    from conr_torch_ref.model import load_official, unloaded as torch_unloaded

    return load_official(torch_unloaded(), weights).eval()


def _other_side(framework: str, model, weights: Path):
    """The other framework's model holding the same tensors as `model` (of `framework`), through the converter's
    table: what the measurement compares the exported graphs against."""
    from conr_common.contract.manifest import paddle_to_torch, torch_to_paddle

    if framework == "paddle":
        from conr_torch_ref.model import load_networks, unloaded

        rename, numpy = paddle_to_torch, lambda v: v.numpy()
    else:
        from conr_paddle.model import load_networks, unloaded

        rename, numpy = torch_to_paddle, lambda v: v.detach().numpy()
    other = load_networks(unloaded(), {
        name: rename(name, {k: numpy(v) for k, v in getattr(model, name).state_dict().items()}, source=str(weights))
        for name in NETWORK_NAMES})
    # eval mode: a torch twin is put in it, a Paddle CoNR starts in it
    return other.eval() if framework == "paddle" else other


def parse_graphs(text: str) -> list[str]:
    from conr_engines.onnx.graphs import GRAPHS

    graphs = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in graphs if g not in GRAPHS]
    if not graphs or unknown:
        raise ConrInputError(f"--graphs {text!r}: choose from {', '.join(GRAPHS)} (comma-separated)")
    return list(dict.fromkeys(graphs))


def _require_onnx_extra(framework: str) -> None:
    """ConrInputError unless the [onnx] extra's packages that `framework`'s export needs import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        if framework == "paddle":
            import paddle2onnx  # noqa: F401
    except ImportError as e:
        raise ConrInputError(f"the ONNX extra is not installed ({e}); pip install -e '.[onnx]'") from e


def _export_graphs(framework: str, model, folder: Path, shape: tuple[int, int, int, int], graphs: list[str],
                   cache: tuple[str | Path | None, str]) -> dict[str, int]:
    """One framework's graphs into `folder` (byte sizes). shape: (size, views, batch, opset); cache: (cache_dir,
    weights hash). The Paddle side links the onnxruntime engine's graphs of the same weights and settings that
    cache holds (`_engine_graphs`) and exports the others, reading a graph's parameters from the file the
    predictor keeps in that cache for these weights when it holds one (`conr_engines.export.cache.found_params`,
    checked by its sha256) instead of writing them again (0.4 GB for the step graph). Nothing is written into the
    cache; a damaged export or parameter folder is removed from it, as the engines do."""
    log = folder / "export.log"
    if framework == "torch":
        return export_torch_graphs(model, folder, *shape, graphs, log)
    from conr_engines.export.cache import cache_root, found_params
    from conr_engines.onnx.export import export_paddle_graphs

    root, label = cache_root(cache[0]), cache[1]
    sizes = _engine_graphs(root, label, shape, graphs, folder)
    rest = [graph for graph in graphs if graph not in sizes]
    if rest:
        sizes.update(export_paddle_graphs(model, folder, *shape, rest, log,
                                          lambda params: found_params(root, label, params)))
    return {graph: sizes[graph] for graph in graphs}


def _engine_graphs(root: Path, label: str, shape: tuple[int, int, int, int], graphs: list[str],
                   folder: Path) -> dict[str, int]:
    """{graph: byte size} of the graphs `render --engine onnxruntime` exported from the same weights with the same
    settings, those the cache `root` holds complete and unchanged (`verified_meta`: the file's sha256), hard-linked
    into `folder` (copied where the cache is on another file system or links fail); nothing is traced, converted
    or written again for them (0.4 GB for the step at 128 px). The engine exports each graph with this export's own
    function (`export_paddle_graphs`, same identity: weights, shapes, opset, Paddle and paddle2onnx versions), so
    they are the files this export would write. A graph the cache lacks (or that went away meanwhile) is left out."""
    from conr_common.platform.links import link_or_copy
    from conr_engines.export.cache import verified_meta
    from conr_engines.onnx.runner import onnx_cache_entry

    sizes = {}
    for graph in graphs:
        source, _ = onnx_cache_entry(root, label, *shape, graph)
        try:
            if verified_meta(source) is None:
                continue
        except ConrInputError:  # damaged in a read-only cache: this export writes its own, as with `found_params`
            continue
        dst = folder / f"{graph}.onnx"
        try:
            link_or_copy(source / f"{graph}.onnx", dst)
        except FileNotFoundError:  # the cache entry was removed since it was checked (`conr cache --clear`)
            dst.unlink(missing_ok=True)
            continue
        sizes[graph] = dst.stat().st_size
        with open(folder / "export.log", "a") as f:
            f.write(f"{graph}: linked from {source} (the onnxruntime engine's export, sha256 checked)\n")
    return sizes


def export_onnx(framework: str, weights: str | Path, out: str | Path, *, size: int = 256, views: int = 4,
                batch: int = 1, opset: int = DEFAULT_OPSET, graphs: str | list[str] = "sheet,step,pose",
                measure_sample: bool = True, force: bool = False, cache_dir: str | Path | None = None,
                stdout=None) -> dict:
    """Export one framework's graphs of the checkpoint in `weights` into `out`; returns meta.json's content.
    cache_dir: the render engines' graph cache (None: $CONR_PADDLE_CACHE or ~/.cache/conr_paddle), whose predictor
    parameter files the Paddle side reads instead of writing its own (`_export_graphs`)."""
    from conr_common.platform.quiet import import_paddle

    import_paddle()  # first (the graphs' modules and paddle2onnx import it): its ccache warning stays off stderr
    stdout = stdout or sys.stdout
    if framework not in FRAMEWORKS:
        raise ConrInputError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    graphs = parse_graphs(graphs) if isinstance(graphs, str) else parse_graphs(",".join(graphs))
    check_settings(size, views, batch, opset)
    weights, out = Path(weights), Path(out)
    files = check_weights_dir(weights) if framework == "paddle" else _torch_files(weights)
    # before any model loads: -o may not be, hold or lie in the weights (--force used to delete them), and its
    # parent must take the temporary folder (a read-only one used to fail naming the temporary path)
    check_output(out, {f"--{framework}": weights}, "-o", kind=SWAP)
    _require_onnx_extra(framework)

    def say(msg: str) -> None:
        print(f"export-onnx: {msg}", file=stdout, flush=True)

    def fill(tmp: Path) -> dict:
        started = time.perf_counter()
        say(f"reading {framework} weights from {weights}")
        model = _load_model(framework, weights)
        say(f"exporting {', '.join(graphs)} at {size} px, {views} views, batch {batch}, opset {opset}")
        from conr_common.platform.memory import return_freed_memory
        from conr_engines.onnx.export import io_contract

        digest = weights_hash(files)
        sizes = _export_graphs(framework, model, tmp, (size, views, batch, opset), graphs, (cache_dir, digest))
        # the other side's model only now, with the export's memory handed back: the two were never needed together
        # with the tracing and conversion (0.7 GB less at the export's peak)
        return_freed_memory()
        meta = {
            "format": ONNX_FORMAT,
            "framework": framework,
            "weights": str(weights),
            "weights_sha256": digest,
            "size": size, "views": views, "batch": batch, "opset": opset,
            "graphs": {g: {**io_contract(size, views, batch)[g], "bytes": sizes[g]} for g in graphs},
            "norm_statistics": "float32" if framework == "paddle" else "torch",
            "versions": export_versions(),
            "export_seconds": round(time.perf_counter() - started, 2),
        }
        if measure_sample:
            say("measuring every output against eager Paddle and torch on the built-in sample")
            other = _other_side(framework, model, weights)
            pm, tm = (model, other) if framework == "paddle" else (other, model)
            meta["measured"] = measure(tmp, graphs, pm, tm, size, views, batch)
        return meta

    return write_folder(out, force, fill)


def _run_export_onnx(args: argparse.Namespace) -> int:
    framework, weights = ("paddle", args.paddle) if args.paddle else ("torch", args.torch)
    try:
        meta = export_onnx(framework, weights, args.out, size=args.size, views=args.views, batch=args.batch,
                           opset=args.opset, graphs=args.graphs, measure_sample=not args.no_measure,
                           force=args.force, cache_dir=args.cache_dir)
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
    p.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                   help="render engines' graph cache: --paddle links the onnxruntime engine's graphs of the same "
                   "weights and settings from it, or reads the predictor's parameter files instead of writing its "
                   "own (default $CONR_PADDLE_CACHE or ~/.cache/conr_paddle; nothing is written there)")
    p.set_defaults(func=_run_export_onnx)
