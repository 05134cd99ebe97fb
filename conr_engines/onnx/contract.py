"""The framework-neutral part of the CoNR ONNX files: format and opset numbers, the settings check, the shapes the
graphs exchange, the checks every written file passes, and the all-or-nothing folder they are written into.

Used by the Paddle graph export (`conr_engines.onnx.export`), the onnxruntime engine (`conr_engines.onnx.runner`) and
the `python -m convert export-onnx` command (which also exports the PyTorch reference). `onnx` is imported only
inside `check_onnx`.
"""
from __future__ import annotations

import json
from pathlib import Path

from conr_common.platform.atomic import atomic_folder
from conr_common.cli.args import one_line
from conr_common.platform.errors import ConrInputError
from conr_common.platform.outputs import check_own_files
from conr_common.platform.versions import dist_versions

__all__ = ["ONNX_FORMAT", "ONNX_CACHE_PREFIX", "ONNX_CACHE_LAYOUT", "OPSET_RANGE", "DEFAULT_OPSET", "STANDARD_DOMAINS",
           "OnnxExportError", "export_versions", "feature_and_message_shapes", "check_settings", "check_onnx",
           "onnx_folder_files", "write_folder"]

# Bump when the exported graphs change (wrapper code, names, op swaps): part of the onnxruntime engine's cache key.
ONNX_FORMAT = 1
# the onnxruntime engine's cache folders: this prefix and their key (`conr_engines.export.cache.cache_entry`)
ONNX_CACHE_PREFIX = "onnx-"
# Bump when the engine's cache folders change layout (2: one folder per graph, each exported when first needed;
# before it, one folder held sheet, step and pose and its meta.json had no "layout"). Part of their key.
ONNX_CACHE_LAYOUT = 2
# GridSample needs opset 16; at 20 and 21 paddle2onnx writes GridSample mode="bilinear" (the opset-20 name is
# "linear"), which onnxruntime rejects. 16-19 were measured to load and agree.
OPSET_RANGE = (16, 19)
DEFAULT_OPSET = 17
STANDARD_DOMAINS = ("", "ai.onnx")
# the packages whose versions a folder of ONNX files records (meta.json)
EXPORT_PACKAGES = ("paddlepaddle", "paddle2onnx", "onnx", "onnxruntime", "torch", "numpy")


class OnnxExportError(RuntimeError):
    """The converter failed or wrote a model that does not pass the checks (not the user's input)."""


def export_versions() -> dict[str, str | None]:
    """Versions of the packages an export depends on (None for one not installed), as meta.json records them."""
    return dist_versions(EXPORT_PACKAGES)


def feature_and_message_shapes(size: int, views: int) -> tuple[list[list[int]], list[list[int]]]:
    """Parser feature shapes (M, C, h, w), deepest first, and the shader's per-level message shapes (C, h, w)."""
    from conr_common.contract.config import ENCODER_STRIDES, OFFICIAL

    feats = OFFICIAL.parser.feature_shapes(views, size)
    shader = OFFICIAL.shader
    sides = [size // s for s in ENCODER_STRIDES[1:]] + [size, size]  # a level ends at the next feature's size, then S
    messages = [[shader.split(lv).messages, side, side] for lv, side in enumerate(sides)]
    return feats, messages


def check_settings(size: int, views: int, batch: int, opset: int) -> None:
    from conr_common.data.checks import check_positive_int
    from conr_common.data.pipeline import check_size

    check_size(size)
    check_positive_int("--views", views)
    check_positive_int("--batch", batch)
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ConrInputError(f"--opset {opset}: supported {OPSET_RANGE[0]}-{OPSET_RANGE[1]} (GridSample needs 16; "
                             "at 20-21 paddle2onnx writes a GridSample mode onnxruntime rejects)")


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


def onnx_folder_files(folder: Path) -> frozenset[str]:
    """The names an export wrote into `folder`, from its meta.json (this toolkit's manifest of an ONNX folder: its
    graphs, meta.json and export.log); nothing when meta.json is absent or not an export's."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != ONNX_FORMAT:
            return frozenset()
        return frozenset({"meta.json", "export.log", *(f"{graph}.onnx" for graph in meta["graphs"])})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return frozenset()


def write_folder(out: Path, force: bool, fill) -> dict:
    """Run fill(tmp_folder) -> meta and move the folder onto `out` atomically, meta.json written last. An existing
    non-empty `out` is replaced only with `force`, and only when all it holds is an earlier export's (issue 23:
    `--force` used to remove whatever folder -o named, the weights' own included). The caller has checked `out`
    with conr_common.platform.outputs.check_output against its inputs."""
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ConrInputError(f"{out}: exists and is not empty (use --force to replace it)")
        check_own_files(out, onnx_folder_files(out), "-o")
    with atomic_folder(out, replace=True) as tmp:
        meta = fill(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta
