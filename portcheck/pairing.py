"""Which torch module is which Paddle layer, and so which call is which call.

Modules are paired first, then their calls (call k of a torch module with call k of its Paddle layer):
1. "root": the two top modules;
2. "name" / "rename": a torch module whose qualified name, after the rename table, is a Paddle layer's name ("rename"
   when the table changed it). Skipped with `pairing="order"`;
3. "order": inside a paired parent, the children still unpaired on both sides, in execution order (first call;
   never-called ones after, in definition order), one to one, only when both sides have the same number left.
   Newly paired children are parents in turn, so a whole subtree whose names differ pairs level by level.
Nothing else is guessed: different counts leave the children unpaired, and the result lists them.

A rename table maps torch name prefixes to Paddle ones at dot boundaries, longest prefix first:
{"fc": "classifier", "features.0": "stem"} renames "features.0.conv" to "stem.conv"; {"model": ""} strips a prefix.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from portcheck.errors import PortInputError

__all__ = ["PAIRINGS", "ModulePair", "CallPair", "check_rename", "apply_rename", "pair_modules", "pair_calls",
           "parent_of"]

PAIRINGS = ("name", "order")


@dataclass(frozen=True)
class ModulePair:
    torch: str
    paddle: str
    rule: str  # "root", "name", "rename" or "order"


@dataclass(frozen=True)
class CallPair:
    torch_key: str  # "<torch name>#<call>"
    paddle_key: str
    rule: str  # the rule that paired the two modules


def check_rename(rename: Mapping | None, where: str = "rename table") -> dict[str, str]:
    """The rename table as a dict of str -> str (PortInputError naming `where` otherwise)."""
    if rename is None:
        return {}
    if not isinstance(rename, Mapping):
        raise PortInputError(f"{where}: must be a JSON object mapping torch name prefixes to Paddle ones, "
                             f"got {type(rename).__name__}")
    for k, v in rename.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k:
            raise PortInputError(f"{where}: every entry must map a non-empty torch prefix to a Paddle prefix "
                                 f"(strings), got {k!r}: {v!r}")
    return dict(rename)


def apply_rename(name: str, rename: Mapping[str, str]) -> str:
    """`name` with its longest matching prefix (at a dot boundary) replaced; the root "" is never renamed."""
    if not name:
        return name
    for prefix in sorted(rename, key=len, reverse=True):
        if name == prefix:
            return rename[prefix]
        if name.startswith(prefix + "."):
            new = rename[prefix]
            return f"{new}{name[len(prefix):]}" if new else name[len(prefix) + 1:]
    return name


def parent_of(name: str) -> str | None:
    """"a.b.c" -> "a.b", "a" -> "" (the root), "" -> None."""
    return name.rpartition(".")[0] if name else None


def _children(names: Sequence[str], parent: str, taken: set[str], first_call: Mapping[str, int]) -> list[str]:
    """The unpaired children of `parent`, in execution order (never-called ones last, in definition order)."""
    kids = [(first_call.get(n, len(first_call) + i), n) for i, n in enumerate(names)
            if n and n not in taken and parent_of(n) == parent]
    return [n for _, n in sorted(kids)]


def pair_modules(torch_names: Sequence[str], paddle_names: Sequence[str], *, torch_first_call: Mapping[str, int],
                 paddle_first_call: Mapping[str, int], rename: Mapping[str, str] | None = None,
                 pairing: str = "name") -> list[ModulePair]:
    """Pair the modules of both sides (qualified names in definition order, the root "" included; first call index
    of each called module). Returns the pairs in torch definition order."""
    if pairing not in PAIRINGS:
        raise PortInputError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    rename = rename or {}
    paddle_set = set(paddle_names)
    pairs = {"": ModulePair("", "", "root")}
    if pairing == "name":
        for n in torch_names:
            new = apply_rename(n, rename)
            if n and new in paddle_set:
                pairs[n] = ModulePair(n, new, "rename" if new != n else "name")
    taken_p = {p.paddle for p in pairs.values()}
    queue = [pairs[""]] + [p for n, p in pairs.items() if n]
    while queue:
        parent = queue.pop(0)
        tk = _children(torch_names, parent.torch, set(pairs), torch_first_call)
        pk = _children(paddle_names, parent.paddle, taken_p, paddle_first_call)
        if tk and len(tk) == len(pk):
            for t, p in zip(tk, pk):
                pairs[t] = ModulePair(t, p, "order")
                taken_p.add(p)
                queue.append(pairs[t])
    order = {n: i for i, n in enumerate(torch_names)}
    return sorted(pairs.values(), key=lambda p: order.get(p.torch, -1))


def pair_calls(torch_keys: Sequence[str], paddle_keys: Sequence[str],
               modules: Sequence[ModulePair]) -> tuple[list[CallPair], list[str], list[str]]:
    """Call k of a torch module with call k of its paired Paddle layer. Returns the pairs in torch execution order
    and the unpaired call keys of each side (in their execution order)."""
    by_torch = {m.torch: m for m in modules}
    paddle_set = set(paddle_keys)
    pairs, used = [], set()
    for key in torch_keys:
        name, _, call = key.rpartition("#")
        m = by_torch.get(name)
        other = f"{m.paddle}#{call}" if m is not None else None
        if other in paddle_set:
            pairs.append(CallPair(key, other, m.rule))
            used.add(other)
    paired_torch = {p.torch_key for p in pairs}
    return (pairs, [k for k in torch_keys if k not in paired_torch], [k for k in paddle_keys if k not in used])
