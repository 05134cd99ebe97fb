"""Issue 24, items 3-4: what the port holds and what it leaves to the engines, read off the source with `ast`.

- `conr_paddle/ops.py` is a leaf: it imports nothing of the port (not even for type checking), so no module circle
  runs through it, and the modules of `conr_paddle` import each other without a circle;
- the export-only operators and engine helpers are defined in `conr_engines`, not in the port;
- the graphs written once (`conr_engines/export/graphs.py`) import neither torch nor paddle;
- the production `warp` has no parameter whose only use was planting a fault.
"""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

from parity_tests.test_architecture import imported_modules, module_circles, module_graph, package_modules

ROOT = Path(__file__).resolve().parent.parent
# defined in conr_engines (conr_engines.inference.ops, .onnx.ops, .export.sheet_inputs) and nowhere in the port
ENGINE_ONLY = ("export_ops", "interpolate_for_export", "bilinear_matrix", "add_as_subtract", "prelu_without_prelu_op",
               "repeat_views_one_frame", "flat_fusion_weights", "fuse_views_by", "interpolate_by_size", "ONNX_OPS",
               "sheet_graph_inputs", "conv_bias_apart", "BiasApartConv2D", "BiasApartConv2DTranspose")


def _imports(path: Path, module: str) -> set[str]:
    return {name for _, name in imported_modules(ast.parse(path.read_text()), module, path.name == "__init__.py")}


def _defined(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_ops_is_a_leaf_of_the_port():
    found = sorted(n for n in _imports(ROOT / "conr_paddle/ops.py", "conr_paddle.ops") if n.startswith("conr_paddle"))
    assert found == [], f"conr_paddle/ops.py imports {found}"


def test_no_module_circle_inside_the_port():
    circles = module_circles(module_graph(("conr_paddle",)))
    assert not circles, " ; ".join(" -> ".join(c) for c in circles)


def test_engine_only_code_left_the_port():
    leaked = {path.name: sorted(_defined(path) & set(ENGINE_ONLY)) for path, _ in package_modules(("conr_paddle",))}
    assert not {k: v for k, v in leaked.items() if v}
    engines = set().union(*(_defined(p) for p, _ in package_modules(("conr_engines",))))
    assert set(ENGINE_ONLY) <= engines, sorted(set(ENGINE_ONLY) - engines)


def test_graphs_written_once_import_no_framework():
    names = _imports(ROOT / "conr_engines/export/graphs.py", "conr_engines.export.graphs")
    assert not {n for n in names if n.split(".")[0] in ("torch", "paddle")}, names
    assert not (ROOT / "conr_torch_ref" / "onnx_graphs.py").exists()


def test_warp_has_no_fault_planting_parameter():
    from conr_paddle.warp import warp

    assert list(inspect.signature(warp).parameters) == ["x", "flow"]
