"""Layer calls declared as expected to have no counterpart: `compare(..., unpaired_ok=("pool2d_avg",))`,
`verify-pair --allow-unpaired pool2d_avg`.

A port may call a parameter-free layer where the original calls a function inside forward() (torchvision's
mobilenet_v2 pools with `F.adaptive_avg_pool2d`; paddle.vision's with an `AdaptiveAvgPool2D` layer, `pool2d_avg`).
That call has nothing to pair with and is no bug, but only the user can say so: nothing is excused by default.
A declared name is a layer's qualified name on either side; its unpaired calls are listed as declared, with the
reason, and do not fail the comparison. Refused (bad input): a name that is no layer of either side, and a layer
that holds parameters or buffers (its weights would go unchecked; pair it with a rename table instead). An
undeclared unpaired call still fails.
"""
from __future__ import annotations

from collections.abc import Iterable

from portcheck.errors import PortInputError

__all__ = ["DECLARED_REASON", "check_unpaired_ok", "split_declared"]

DECLARED_REASON = "declared unpaired: the layer holds no parameters or buffers"
NAMES_SHOWN = 3


def _held(module) -> list[str]:
    """The parameters and buffers of a torch module or a Paddle layer, its sublayers included (both frameworks
    recurse by default)."""
    return [n for n, _ in list(module.named_parameters()) + list(module.named_buffers())]


def check_unpaired_ok(names: Iterable[str] | None, torch_module, paddle_layer,
                      where: str = "unpaired_ok") -> tuple[str, ...]:
    """The declared names, checked against both models (PortInputError naming `where` otherwise)."""
    if names is None:
        return ()
    if isinstance(names, str):
        raise PortInputError(f"{where}: expected a list of layer names, got the string {names!r}")
    names = tuple(names)
    sides = {"torch": dict(torch_module.named_modules()),
             "Paddle": dict(paddle_layer.named_sublayers(include_self=True))}
    for name in names:
        if not isinstance(name, str) or not name:
            raise PortInputError(f"{where}: {name!r} is not a layer name (a non-empty qualified name)")
        found = {side: mods[name] for side, mods in sides.items() if name in mods}
        if not found:
            raise PortInputError(f"{where} {name!r}: no layer of that name in the torch module or the Paddle layer")
        for side, module in found.items():
            held = _held(module)
            if held:
                raise PortInputError(f"{where} {name!r}: the {side} layer holds parameters or buffers "
                                     f"({', '.join(held[:NAMES_SHOWN])}); only a parameter-free layer may be "
                                     "declared unpaired (pair it with a rename table instead)")
    return names


def split_declared(keys: list[str], declared: tuple[str, ...], side: str) -> tuple[list[str], list[dict]]:
    """The unpaired call keys of one side split into (undeclared keys, rows for the declared ones)."""
    rows = [{"side": side, "call": key, "reason": DECLARED_REASON} for key in keys
            if key.rpartition("#")[0] in declared]
    taken = {row["call"] for row in rows}
    return [key for key in keys if key not in taken], rows
