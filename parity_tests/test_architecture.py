"""Structural checks of issue 12's "Done when", read off the source with `ast` (not grep, so comments, strings and
names that merely contain "convert" do not count, and relative imports are resolved):

(a) no module of conr_paddle, conr_torch_ref or conr_common imports the `convert` package;
(b) no function of the packages is longer than MAX_FUNCTION_LINES;
(d) no module of portcheck imports another package of the project;
(c) no package module assigns to an attribute of an imported module or object, or of a class, at run time
    (`paddle.nn.functional.interpolate = ...`, `setattr(warp_module, "warp", ...)`, `nn.PReLU.forward = ...`,
    `SomeClass.attr = ...` outside its class body), including through a framework handed in as a parameter
    (`def pin(torch): torch.backends.cudnn.allow_tf32 = False`), `object.__setattr__`, `vars(m)[...]` and
    `m.__dict__[...]`.

Each checker is a pure function over one module's source; the tests of planted violations below prove each one
detects what it claims (and leaves lookalikes alone) before the tree-wide tests apply them to every package module.
The tree-wide tests list every offender (file:line and what) in their failure message.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Issue 12: "no function in the package is longer than about 60 lines". A function that does not fit on one screen
# (def line to last line, docstring and comments included: ast end_lineno - lineno + 1) almost always does more than
# one job; the number is the issue's, fixed here once so the bound cannot drift between checks.
MAX_FUNCTION_LINES = 60

# The packages the project ships (pyproject's [tool.setuptools] packages, minus the tests, which may monkeypatch);
PACKAGES = ("portcheck", "conr_common", "conr_paddle", "conr_torch_ref", "conr_engines", "convert", "conr_app")
# The packages that must not depend on the converter (the issue's grep: conr_paddle conr_torch_ref conr_common).
CONVERTER_FREE = ("conr_paddle", "conr_torch_ref", "conr_common", "conr_engines")
# The project's own packages: portcheck (the framework-neutral port verifier, issue 21) may import none of them.
PROJECT_PACKAGES = ("conr_common", "conr_torch_ref", "conr_paddle", "conr_engines", "convert", "conr_app", "parity_tests")


@dataclass(frozen=True)
class Finding:
    """One offence: where (module path, line) and what."""

    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


# ------------------------------------------------------------------------------------------------------ helpers
def package_modules(packages: tuple[str, ...]) -> list[tuple[Path, str]]:
    """(file, dotted module name) of every .py module under the given top-level packages."""
    out = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out.append((path, ".".join(parts)))
    return out


def _package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def imported_modules(tree: ast.AST, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of everything a module imports: `import a.b` gives a.b, `from a import b` gives
    a.b (b may be a module), relative imports resolved against `module`, plus importlib.import_module("...") and
    __import__("...") calls with a literal name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = _package_of(module, is_package).split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join(p for p in anchor + ([node.module] if node.module else []) if p)
            found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name) for alias in node.names]
            if base:
                found.append((node.lineno, base))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = ast.unparse(node.func)
            if func in ("importlib.import_module", "import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def convert_imports(source: str, module: str, path: str = "<string>", is_package: bool = False) -> list[Finding]:
    """Check (a): every import of the top-level `convert` package or one of its modules."""
    by_line: dict[int, set[str]] = {}
    for line, name in imported_modules(ast.parse(source), module, is_package):
        if name == "convert" or name.startswith("convert."):
            by_line.setdefault(line, set()).add(name)
    return [Finding(path, line, "imports " + ", ".join(sorted(names))) for line, names in sorted(by_line.items())]


def project_imports(source: str, module: str, path: str = "<string>", is_package: bool = False) -> list[Finding]:
    """Check (d): every import of another package of this project (PROJECT_PACKAGES) from a portcheck module."""
    found = []
    for line, name in imported_modules(ast.parse(source), module, is_package):
        top = name.split(".")[0]
        if top in PROJECT_PACKAGES:
            found.append(Finding(path, line, f"imports {name}"))
    return sorted(found, key=lambda f: f.line)


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES, path: str = "<string>") -> list[Finding]:
    """Check (b): every function or method (nested ones too, by qualified name) longer than `limit` lines."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                length = child.end_lineno - child.lineno + 1
                if length > limit:
                    found.append(Finding(path, child.lineno, f"{name}() is {length} lines (limit {limit})"))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def _import_bound_names(tree: ast.Module) -> set[str]:
    """Names an import binds anywhere in the module (`import a.b` binds a; `import a.b as c` and `from x import c`
    bind c): assigning to an attribute through one of them changes another module or what it exported."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {alias.asname or alias.name for alias in node.names if alias.name != "*"}
    return names


def _flat_targets(target: ast.expr) -> list[ast.expr]:
    if isinstance(target, (ast.Tuple, ast.List)):
        return [t for element in target.elts for t in _flat_targets(element)]
    if isinstance(target, ast.Starred):
        return _flat_targets(target.value)
    return [target]


def _assigned_targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return [t for target in node.targets for t in _flat_targets(target)]
    if isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor)):
        return _flat_targets(node.target)
    if isinstance(node, ast.withitem) and node.optional_vars is not None:
        return _flat_targets(node.optional_vars)
    return []


def _base_name(expr: ast.expr) -> str | None:
    """`a` for a, a.b, a.b.c, a[0].b, a().b; None when the chain does not start at a plain name."""
    while isinstance(expr, (ast.Attribute, ast.Subscript, ast.Call)):
        expr = expr.func if isinstance(expr, ast.Call) else expr.value
    return expr.id if isinstance(expr, ast.Name) else None


# The project hands frameworks to functions under their import names (`def environment(torch, paddle, ...)`, so that
# the module imports neither until it runs): a parameter with one of these names is that module, not a local.
MODULE_PARAMETERS = frozenset({"torch", "paddle", "np", "numpy", "cv2", "F", "nn", "core", "os", "sys", "warnings"})


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[ast.arg]:
    args = function.args
    return args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a is not None]


def _module_parameters(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda, guarded: set[str]) -> set[str]:
    """Parameters that hold a module or class: named like a framework module (MODULE_PARAMETERS), or defaulting to a
    guarded object (`def f(m=paddle)`)."""
    args = function.args
    positional = args.posonlyargs + args.args
    defaults = dict(zip([a.arg for a in positional[len(positional) - len(args.defaults):]], args.defaults))
    defaults |= {a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None}
    names = {a.arg for a in _parameters(function) if a.arg in MODULE_PARAMETERS}
    return names | {name for name, d in defaults.items() if _is_plain_chain(d) and _base_name(d) in guarded}


def _local_names(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """Parameters and names assigned inside a function (minus `global` ones): they shadow module-level names."""
    names = {a.arg for a in _parameters(function)}
    declared_global = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Global):
            declared_global |= set(node.names)
    # a function-level import still binds another module's object: it stays guarded
    return names - declared_global - _import_bound_names(function)


def _is_plain_chain(expr: ast.expr) -> bool:
    """a, a.b, a.b.c: a name or attribute lookups only (no call, no subscript), i.e. the very object, not a result."""
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return isinstance(expr, ast.Name)


def _aliases(scope: ast.AST, guarded: set[str]) -> set[str]:
    """Names a scope binds to a guarded object itself (`functional = paddle.nn.functional`, `cls = nn.PReLU`):
    assigning through them is assigning to the guarded object. Followed to a fixed point (aliases of aliases)."""
    aliases: set[str] = set()
    assigns = [n for n in ast.walk(scope) if isinstance(n, ast.Assign) and _is_plain_chain(n.value)]
    while True:
        new = {t.id for n in assigns if _base_name(n.value) in guarded | aliases
               for t in n.targets if isinstance(t, ast.Name)} - aliases
        if not new:
            return aliases
        aliases |= new


def runtime_attribute_assignments(source: str, path: str = "<string>") -> list[Finding]:
    """Check (c): assignments (=, +=, annotated, for/with targets) and setattr/delattr calls whose object is reached
    from a name bound by an import, or from a class defined in the module (`Cls.attr = ...`; assignments in the
    class body itself are plain names, not attributes, and are not flagged), or from an alias of either
    (`functional = paddle.nn.functional; functional.interpolate = ...`). Names that a function binds otherwise
    (parameters, locals) shadow the module's and are left alone: `self.x = ...` is never an offence, nor is
    `t = paddle.to_tensor(x); t.stop_gradient = True` (a new object, not the module's)."""
    tree = ast.parse(source)
    guarded = _import_bound_names(tree) | {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    guarded |= _aliases(tree, guarded)
    found: list[Finding] = []

    def offence(expr: ast.expr, shadowed: set[str]) -> bool:
        base = _base_name(expr)
        return base is not None and base in guarded and base not in shadowed

    def _namespace_of(expr: ast.expr, shadowed: set[str]) -> bool:
        """`X.__dict__` or `vars(X)` of a guarded X: item assignment there is attribute assignment."""
        if isinstance(expr, ast.Attribute) and expr.attr == "__dict__":
            return offence(expr.value, shadowed)
        return (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "vars"
                and len(expr.args) == 1 and offence(expr.args[0], shadowed))

    def _setattr_on_guarded(call: ast.Call, shadowed: set[str]) -> bool:
        """setattr/delattr(X, ...) or object.__setattr__/__delattr__(X, ...) on a guarded X."""
        func = call.func
        plain = isinstance(func, ast.Name) and func.id in ("setattr", "delattr") and func.id not in shadowed
        dunder = (isinstance(func, ast.Attribute) and func.attr in ("__setattr__", "__delattr__")
                  and isinstance(func.value, ast.Name) and func.value.id == "object")
        return (plain or dunder) and bool(call.args) and offence(call.args[0], shadowed)

    def visit(node: ast.AST, shadowed: set[str]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            modules = _module_parameters(node, guarded)
            guarded.update(modules)  # names are per module: a framework parameter stays a module everywhere
            shadowed = (shadowed | (_local_names(node) - _aliases(node, guarded))) - modules
        for target in _assigned_targets(node):
            if isinstance(target, ast.Attribute) and offence(target, shadowed):
                found.append(Finding(path, target.lineno, f"assigns {ast.unparse(target)}"))
            elif isinstance(target, ast.Subscript) and _namespace_of(target.value, shadowed):
                found.append(Finding(path, target.lineno, f"assigns {ast.unparse(target)}"))
        if isinstance(node, ast.Call) and _setattr_on_guarded(node, shadowed):
            found.append(Finding(path, node.lineno, f"calls {ast.unparse(node)[:80]}"))
        for child in ast.iter_child_nodes(node):
            visit(child, shadowed)

    visit(tree, set())
    return sorted(found, key=lambda f: f.line)


def _tree_wide(check, packages: tuple[str, ...]) -> list[Finding]:
    found = []
    for path, module in package_modules(packages):
        rel = str(path.relative_to(ROOT))
        found += check(path.read_text(), module=module, path=rel, is_package=path.name == "__init__.py")
    return found


def _report(found: list[Finding], rule: str) -> str:
    return f"{len(found)} offence(s) of issue 12's rule: {rule}\n" + "\n".join(f"  {f}" for f in found)


# -------------------------------------------------------------------------------------- checkers on planted code
def test_convert_imports_detects_every_spelling():
    planted = (
        "import convert\n"
        "import convert.io as cio\n"
        "from convert.mapping import unwrap\n"
        "from convert import cli\n"
        "def f():\n"
        "    from convert.run import convert_checkpoints\n"
        "    return importlib.import_module('convert.verify')\n"
        "from .. import convert\n"
    )
    lines = [f.line for f in convert_imports(planted, module="conr_paddle.demo")]
    assert lines == [1, 2, 3, 4, 6, 7, 8], lines


def test_convert_imports_ignores_lookalikes():
    clean = (
        "import converter\n"
        "from conr_common.convert_utils import x\n"
        "from .convert import y\n"  # conr_paddle.convert, not the top-level package
        "from . import mapping\n"
        "# import convert\n"
        "s = 'from convert import cli'\n"
        "def convert(): pass\n"
    )
    assert convert_imports(clean, module="conr_paddle.demo") == []
    # inside the convert package, its own relative imports resolve to convert.* (and would be reported elsewhere)
    assert [f.what for f in convert_imports("from .io import load\n", module="convert.run")] == [
        "imports convert.io, convert.io.load"]


def _function(name: str, lines: int, indent: str = "") -> str:
    """Source of a function exactly `lines` long (def line included)."""
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(lines - 1))
    return f"{indent}def {name}(self):\n{body}"


def test_long_functions_counts_def_to_last_line():
    assert long_functions(_function("fits", MAX_FUNCTION_LINES)) == []
    found = long_functions("class C:\n" + _function("method", MAX_FUNCTION_LINES + 1, indent="    "))
    assert [(f.line, f.what) for f in found] == [
        (2, f"C.method() is {MAX_FUNCTION_LINES + 1} lines (limit {MAX_FUNCTION_LINES})")]
    nested = "def outer():\n" + _function("inner", 70, indent="    ")
    assert [f.what.split("(")[0] for f in long_functions(nested)] == ["outer", "outer.inner"]


def test_runtime_attribute_assignments_detects_monkeypatching():
    planted = (
        "import paddle\n"
        "import paddle.nn as nn\n"
        "from . import warp as warp_module\n"
        "from .shader import fuse_views\n"
        "class Layer:\n"
        "    count = 0\n"
        "def swap(op):\n"
        "    paddle.nn.functional.interpolate = op\n"            # 8: another module's function
        "    warp_module.warp = warp_module.warp_grouped = op\n"  # 9: two targets
        "    nn.PReLU.forward = op\n"                             # 10: a class of another module
        "    setattr(warp_module, 'warp', op)\n"                  # 11
        "    Layer.count += 1\n"                                  # 12: a class of this module, outside its body
        "    fuse_views.cache = {}\n"                             # 13: an imported function object
        "    (nn.a, x) = (1, 2)\n"                                # 14: inside an unpacking
        "    delattr(paddle, 'x')\n"                              # 15
        "Layer.extra = 1\n"                                       # 16: module level
        "def through_aliases(op):\n"
        "    functional = paddle.nn.functional\n"
        "    functional.interpolate = op\n"                       # 19: a local alias of a module
        "    cls = nn.PReLU\n"
        "    same = cls\n"
        "    same.forward = op\n"                                 # 22: an alias of an alias of a class
    )
    lines = [f.line for f in runtime_attribute_assignments(planted)]
    assert lines == [8, 9, 9, 10, 11, 12, 13, 14, 15, 16, 19, 22], lines


def test_runtime_attribute_assignments_sees_modules_passed_in_and_namespaces():
    planted = (
        "import paddle\n"
        "def pin(torch, paddle_mod):\n"
        "    torch.backends.cudnn.allow_tf32 = False\n"         # 3: a framework handed in under its import name
        "def f(m=paddle):\n"
        "    m.x = 1\n"                                          # 5: a parameter defaulting to a module
        "def g():\n"
        "    object.__setattr__(paddle, 'x', 1)\n"              # 7
        "    vars(paddle)['x'] = 1\n"                            # 8
        "    paddle.__dict__['x'] = 1\n"                         # 9
        "    object.__setattr__(self_like, 'x', 1)\n"           # a frozen dataclass's own __post_init__ idiom
        "    d = {}\n"
        "    d['x'] = 1\n"
    )
    lines = [f.line for f in runtime_attribute_assignments(planted)]
    assert lines == [3, 5, 7, 8, 9], lines


def test_runtime_attribute_assignments_ignores_instances_and_locals():
    clean = (
        "import paddle\n"
        "from dataclasses import dataclass\n"
        "class Runner:\n"
        "    kind = 'eager'\n"                                    # class body: a plain name
        "    def __init__(self, paddle_mod):\n"
        "        self.warp = None\n"
        "        self.meta = {}\n"
        "        object.__setattr__(self, 'x', 1)\n"
        "        paddle_mod.flag = 1\n"                           # a parameter, not the import
        "def f():\n"
        "    paddle = make()\n"                                   # a local shadows the import
        "    paddle.x = 1\n"
        "    setattr(obj, 'a', 1)\n"
        "    d = {}\n"
        "    d['k'] = paddle\n"
        "    Runner_instance = Runner()\n"
        "    Runner_instance.kind = 'x'\n"
        "x = paddle.to_tensor(1)\n"
        "x.stop_gradient = True\n"                               # a new object made by the module, not the module
        "def g():\n"
        "    t = paddle.nn.Conv2D(1, 1, 1)\n"
        "    t.weight = None\n"
        "    functional = other()\n"
        "    functional.interpolate = 1\n"
    )
    assert runtime_attribute_assignments(clean) == []


# ------------------------------------------------------------------------------------------------ the whole tree
def test_no_converter_imports_in_model_packages():
    """Done when: `grep -rn "import convert\\|from convert" conr_paddle conr_torch_ref conr_common` prints nothing."""
    found = _tree_wide(lambda src, **kw: convert_imports(src, kw["module"], kw["path"], kw["is_package"]), CONVERTER_FREE)
    assert not found, _report(found, "conr_paddle, conr_torch_ref and conr_common must not import convert")


def test_project_imports_detects_every_spelling():
    planted = ("import conr_common\nfrom conr_common.platform.atomic import atomic_path\nfrom convert import cli\n"
               "def f():\n    import conr_paddle.model\nimport numpy\nfrom . import metrics\nfrom .. import convert\n")
    lines = [f.line for f in project_imports(planted, module="portcheck.demo")]
    assert lines == [1, 2, 2, 3, 3, 5, 8], lines


def test_portcheck_imports_no_other_project_package():
    """Issue 21: portcheck is framework-neutral and stands alone (conr_common and convert may import it)."""
    found = _tree_wide(lambda src, **kw: project_imports(src, kw["module"], kw["path"], kw["is_package"]),
                       ("portcheck",))
    assert not found, _report(found, "portcheck imports no other package of the project")


def test_no_function_longer_than_the_limit():
    """Done when: no function in the package is longer than about 60 lines."""
    found = _tree_wide(lambda src, **kw: long_functions(src, MAX_FUNCTION_LINES, kw["path"]), PACKAGES)
    assert not found, _report(found, f"no function longer than {MAX_FUNCTION_LINES} lines ({', '.join(PACKAGES)})")


def test_no_runtime_assignment_to_other_modules_or_classes():
    """Done when: no module assigns to an attribute of another module or class at run time."""
    found = _tree_wide(lambda src, **kw: runtime_attribute_assignments(src, kw["path"]), PACKAGES)
    assert not found, _report(found, f"no assignment to an imported module's or a class's attribute ({', '.join(PACKAGES)})")


@pytest.mark.parametrize("package", CONVERTER_FREE + ("convert", "portcheck"))
def test_the_tree_checks_see_the_packages(package):
    """The tree-wide checks read real modules: each package has some, and each parses."""
    modules = package_modules((package,))
    assert len(modules) >= 3, package
    for path, _ in modules:
        ast.parse(path.read_text())


# ---------------------------------------------------------------------------------- layers: the README's diagram
# Issue 24: the README draws the packages as rows, top to bottom; a module may import (at import time, lazily inside
# a function, under TYPE_CHECKING or through importlib, all read by `imported_modules`) only its own package and the
# packages drawn on rows below its own. Rows are read from the README's fenced block that follows LAYERS_MARKER: a
# row is a line "<package> [<package> ...]  │ <what it holds>"; a line with nothing left of "│" continues the row
# above, and lines without "│" (the header, arrows, rules) are drawing only.
LAYERS_MARKER = "<!-- layers: read by parity_tests/test_architecture.py -->"
# The suite sits above everything (it may import any package) and is not drawn as a row.
TESTS_PACKAGE = "parity_tests"


def diagram_rows(readme: str) -> list[list[str]]:
    """The rows of packages of the README's layer diagram, top row first."""
    start = readme.index(LAYERS_MARKER)
    block = readme[readme.index("```", start):]
    block = block[3: block.index("```", 3)]
    rows = []
    for line in block.splitlines()[1:]:
        if "│" not in line:
            continue
        names = line.split("│", 1)[0].split()
        if not names:
            continue
        bad = [n for n in names if not all(part.isidentifier() for part in n.split("."))]
        if bad:
            raise ValueError(f"layer diagram row {line.strip()!r}: expected package names left of │")
        rows.append(names)
    return rows


def unit_of(module: str, units: set[str]) -> str | None:
    """The drawn package a dotted module name belongs to: the longest drawn name that is it or contains it."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in units:
            return ".".join(parts[:n])
    return None


def _known_module(name: str, modules: set[str]) -> str | None:
    """`name` or its longest prefix that is a module of the project (`from a.b import c` reads a.b.c: c may be a
    function of module a.b)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def module_graph(packages: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """module -> {imported project module: first line}, every import spelling included."""
    modules = dict((name, path) for path, name in package_modules(packages))
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text())
        for line, imported in imported_modules(tree, name, path.name == "__init__.py"):
            target = _known_module(imported, set(modules))
            if target is not None and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def layer_offences(graph: dict[str, dict[str, int]], rows: list[list[str]]) -> list[str]:
    """Every import of a package on the same row (another package) or on a row above, and every module of no drawn
    package. Parent packages' __init__ modules (`conr_common`, `conr_engines`) belong to no row and may be imported
    by nothing."""
    level = {unit: len(rows) - i for i, row in enumerate(rows) for unit in row}  # bottom row = 1
    found = []
    for module, edges in sorted(graph.items()):
        own = unit_of(module, set(level))
        if own is None:
            if module.split(".")[0] != TESTS_PACKAGE and (edges or any(module in e for e in graph.values())):
                found.append(f"{module}: in no package of the diagram")
            continue
        for target, line in sorted(edges.items()):
            other = unit_of(target, set(level))
            if other == own:
                continue
            if other is None or level[other] >= level[own]:
                where = "not drawn" if other is None else f"row {len(rows) - level[other] + 1}"
                found.append(f"{module}:{line}: imports {target} ({where}; {own} is on row {len(rows) - level[own] + 1})")
    return found


def module_circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (a circle of imports, lazy ones included), by Tarjan's
    algorithm, each group sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(circles)


def _readme_rows() -> list[list[str]]:
    return diagram_rows((ROOT / "README.md").read_text())


def test_diagram_rows_read_from_planted_readme():
    readme = ("intro\n" + LAYERS_MARKER + "\n```text\n top\n a.web   │ web\n         │ more of a.web\n   ▲\n"
              " b  c    │ two\n"
              " ─────\n d       │ bottom\n```\nafter │ not read\n")
    assert diagram_rows(readme) == [["a.web"], ["b", "c"], ["d"]]
    with pytest.raises(ValueError, match="package names"):
        diagram_rows(LAYERS_MARKER + "\n```text\nhead\n not-a-name │ x\n```\n")


def test_layer_offences_on_planted_graph():
    rows = [["app"], ["app.web"], ["eng", "ref"], ["base"]]
    graph = {
        "app.cli": {"app.web.serve": 3, "base.x": 4},           # down: fine
        "app.web.serve": {"app.cli": 7},                         # up (a lazy import is an import): offence
        "eng.run": {"ref.model": 9, "eng.ops": 10},              # same row, other package: offence; own: fine
        "eng.ops": {},
        "ref.model": {"base.x": 2},
        "base.x": {"stray.y": 5},                                # a package not drawn: offence
        "stray.y": {},
        "parity_tests.test_a": {"app.cli": 1},                   # the tests may import anything
    }
    found = layer_offences(graph, rows)
    assert [f.split(":")[0] for f in found] == ["app.web.serve", "base.x", "eng.run", "stray.y"], found


def test_module_circles_on_planted_graph():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}, "e": {"e": 1}, "f": {"g": 1}, "g": {}}
    assert module_circles(graph) == [["a", "b", "c"]]


def test_the_diagram_draws_every_package_and_only_existing_ones():
    rows = _readme_rows()
    drawn = [unit for row in rows for unit in row]
    assert len(drawn) == len(set(drawn)), f"a package drawn twice: {drawn}"
    missing = [u for u in drawn if not (ROOT / Path(*u.split("."))).is_dir()]
    assert not missing, f"the README draws packages that do not exist: {missing}"
    packages = {".".join(p.parent.relative_to(ROOT).parts) for top in PACKAGES for p in (ROOT / top).rglob("__init__.py")}
    # a package is drawn, or it is a parent that holds nothing but its docstring (its subpackages are drawn)
    undrawn = sorted(p for p in packages if p not in drawn and not all(
        unit_of(m, set(drawn)) for _, m in package_modules((p,)) if m != p))
    assert not undrawn, f"packages of the project missing from the README's layer diagram: {undrawn}"


def test_every_import_goes_down_the_readme_diagram():
    """Issue 24, Done when: the README's diagram matches what this test enforces; no package imports one drawn above
    it (or beside it), lazy imports included."""
    found = layer_offences(module_graph(PACKAGES + (TESTS_PACKAGE,)), _readme_rows())
    assert not found, f"{len(found)} import(s) against the README's layer diagram:\n  " + "\n  ".join(found)


def test_no_module_circle():
    """Issue 24, Done when: no module circle, inside a package or across packages, lazy imports included."""
    circles = module_circles(module_graph(PACKAGES))
    assert not circles, "module circles:\n  " + "\n  ".join(" -> ".join(c) for c in circles)
