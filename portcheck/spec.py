"""A model SPEC on the command line: `package.module:callable` with optional literal arguments, e.g.
`torchvision.models:resnet18`, `paddle.vision.models:vgg11(batch_norm=True)`, `mypkg.nets:Net(3, width=64)`.

The arguments are parsed with `ast` and must be Python literals (numbers, strings, booleans, None, tuples, lists,
dicts): nothing in a spec is executed. A module starting with `torchvision` is imported after
`portcheck.torchvision_compat.prepare_torchvision()` (the CUDA build of torchvision beside a CPU torch).
"""
from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass, field

from portcheck.errors import PortInputError

__all__ = ["Spec", "parse_spec", "build"]


@dataclass(frozen=True)
class Spec:
    module: str
    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def __str__(self) -> str:
        inner = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.module}:{self.name}" + (f"({', '.join(inner)})" if inner else "")


def _literal(node: ast.AST, text: str, what: str):
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise PortInputError(f"{what} {text!r}: arguments must be Python literals, got "
                             f"{ast.unparse(node)!r}") from None


def parse_spec(text: str, what: str = "SPEC") -> Spec:
    """`package.module:callable[(literal args)]` -> Spec (PortInputError, one line, otherwise)."""
    module, sep, call = text.partition(":")
    if not sep or not module or not call:
        raise PortInputError(f"{what} {text!r}: expected package.module:callable, e.g. torchvision.models:resnet18")
    if not all(part.isidentifier() for part in module.split(".")):
        raise PortInputError(f"{what} {text!r}: {module!r} is not a module path")
    try:
        node = ast.parse(call.strip(), mode="eval").body
    except SyntaxError:
        raise PortInputError(f"{what} {text!r}: cannot parse {call!r}") from None
    if isinstance(node, ast.Name):
        return Spec(module, node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not any(
            isinstance(a, ast.Starred) for a in node.args) and all(k.arg for k in node.keywords):
        args = tuple(_literal(a, text, what) for a in node.args)
        return Spec(module, node.func.id, args, {k.arg: _literal(k.value, text, what) for k in node.keywords})
    raise PortInputError(f"{what} {text!r}: expected a callable name, optionally called with literal arguments")


def build(spec: Spec, what: str = "SPEC"):
    """Import the spec's module and call it; import errors and failing constructors are bad input (one line)."""
    if spec.module == "torchvision" or spec.module.startswith("torchvision."):
        from portcheck.torchvision_compat import prepare_torchvision

        prepare_torchvision()
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise PortInputError(f"{what} {spec}: cannot import {spec.module!r} ({exc})") from None
    factory = getattr(module, spec.name, None)
    if not callable(factory):
        raise PortInputError(f"{what} {spec}: {spec.module!r} has no callable {spec.name!r}")
    try:
        return factory(*spec.args, **spec.kwargs)
    except (TypeError, ValueError) as exc:
        raise PortInputError(f"{what} {spec}: the call failed ({type(exc).__name__}: {exc})") from None
