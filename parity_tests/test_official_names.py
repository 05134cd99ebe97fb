"""The official-name maps in the module docstrings of the shader and warp twins cannot drift.

Each map line reads "- `official name` -> `our name` (file:line)": the test reads every map with `ast` and checks
that the named line of the named file defines (def, class) or assigns (plain, annotated or tuple assignment, `self.`
attribute, for-loop target) our name; a dotted name (`CINN.run_levels`) must be defined inside that class. A map
that points at a moved or renamed symbol fails with the entry's text.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPPED = ("conr_paddle/shader.py", "conr_paddle/warp.py", "conr_torch_ref/shader.py", "conr_torch_ref/warp.py")
ENTRY = re.compile(r"^- `(?P<official>[^`]+)` -> `(?P<ours>[\w.]+)` \((?P<path>[\w/]+\.py):(?P<line>\d+)\)", re.M)
# the smallest map written (warplayer.py has 11 entries, shader.py 25): a map emptied by accident fails
MIN_ENTRIES = 10


def map_entries(module_path: str) -> list[re.Match]:
    doc = ast.get_docstring(ast.parse((ROOT / module_path).read_text())) or ""
    return list(ENTRY.finditer(doc))


def _target_names(target: ast.expr) -> set[str]:
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Attribute):
        return {target.attr}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_target_names(t) for t in target.elts))
    return set()


def names_bound_at(tree: ast.Module, line: int) -> set[str]:
    """Every name defined or assigned by a statement starting at `line`, dotted with its enclosing classes."""
    found: set[str] = set()

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope + (child.name,) if isinstance(child, ast.ClassDef) else scope
            if getattr(child, "lineno", None) == line:
                if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                    found.update({child.name, ".".join(scope + (child.name,))})
                elif isinstance(child, ast.Assign):
                    found.update(*(_target_names(t) for t in child.targets))
                elif isinstance(child, (ast.AnnAssign, ast.For)):
                    found.update(_target_names(child.target))
            visit(child, inner)

    visit(tree, ())
    return found


def test_entry_pattern_reads_a_map_line():
    m = ENTRY.search("- `CINN.forward` -> `CINN.run_levels` (conr_paddle/shader.py:142): every level")
    assert m and (m["official"], m["ours"], m["path"], int(m["line"])) == (
        "CINN.forward", "CINN.run_levels", "conr_paddle/shader.py", 142)


def test_names_bound_at_finds_defs_assignments_and_loop_targets():
    src = ("class A:\n    def f(self):\n        self.x = 1\n        a, (b, c) = 1, (2, 3)\n"
           "        for i, j in []:\n            k: int = 0\n")
    tree = ast.parse(src)
    assert names_bound_at(tree, 2) == {"f", "A.f"}
    assert names_bound_at(tree, 3) == {"x"}
    assert names_bound_at(tree, 4) == {"a", "b", "c"}
    assert names_bound_at(tree, 5) == {"i", "j"}
    assert names_bound_at(tree, 6) == {"k"}
    assert names_bound_at(tree, 1) == {"A"}
    assert "f" not in names_bound_at(tree, 3)  # a wrong line number is caught


@pytest.mark.parametrize("module_path", MAPPED)
def test_official_name_map_points_at_our_definitions(module_path):
    entries = map_entries(module_path)
    assert len(entries) >= MIN_ENTRIES, f"{module_path}: official-name map missing or cut short"
    trees: dict[str, ast.Module] = {}
    wrong = []
    for e in entries:
        path = ROOT / e["path"]
        if not path.is_file():
            wrong.append(f"{e[0]}: no file {e['path']}")
            continue
        tree = trees.setdefault(e["path"], ast.parse(path.read_text()))
        if e["ours"] not in names_bound_at(tree, int(e["line"])):
            wrong.append(f"{e[0]}: {e['ours']} is not defined or assigned at {e['path']}:{e['line']}")
    assert not wrong, f"{module_path}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("kind", ("shader", "warp"))
def test_both_twins_map_the_same_official_names(kind):
    """The two sides of a twin map the same official names to the same names of ours (only the files differ)."""
    paddle_side = [(e["official"], e["ours"]) for e in map_entries(f"conr_paddle/{kind}.py")]
    torch_side = [(e["official"], e["ours"]) for e in map_entries(f"conr_torch_ref/{kind}.py")]
    assert paddle_side == torch_side
