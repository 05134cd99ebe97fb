"""Generic weight transfer torch -> Paddle for a module pair: strict, declarative, never a guess.

Every tensor of the torch module's state dict (parameters and persistent buffers alike: a buffer on one side may be
a parameter on the other, as BatchNorm's statistics are) is matched to exactly one tensor of the Paddle layer's
state dict, in two passes:

1. **by name**: the torch name after the rename table (longest torch prefix at a dot boundary -> Paddle prefix),
   then the frameworks' own spellings of a tensor name (`running_mean` -> `_mean`, `running_var` -> `_variance`,
   PReLU `weight` -> `_weight`). A name match whose shape differs is refused, never bent to fit.
2. **by shape**, within what is left: a torch tensor moves to the Paddle tensor with the same tensor name (after the
   spellings above) and shape when each is the only leftover of that kind on its side. Two or more leftovers of one
   kind cannot be told apart by anything but their order, which is a guess: they are refused, all names listed.

A Linear weight is transposed (torch stores (out, in), Paddle (in, out)) when both owners are Linear layers, decided
from the layer types, never from the shapes (a square Linear would fit either way). torch's BatchNorm
`num_batches_tracked` has no Paddle counterpart and is dropped (listed in the report). Nothing is written unless the
whole plan holds: on any unmatched, ambiguous, shape or dtype problem `TransferError` lists every offending name.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from portcheck.layout import is_paddle_linear, is_torch_linear, linear_transposed
from portcheck.pairing import apply_rename, check_rename

# The frameworks' own spellings of one tensor (torch local name -> Paddle local names): BatchNorm's statistics and
# PReLU's slope. Tried after the identical name, never instead of it.
PADDLE_SPELLINGS: dict[str, tuple[str, ...]] = {
    "running_mean": ("_mean",),
    "running_var": ("_variance",),
    "weight": ("_weight",),
}
# torch BatchNorm's step counter: Paddle keeps none (its momentum is fixed), so it is dropped, not moved.
DROPPED_LOCAL_NAMES = ("num_batches_tracked",)


# A message names at most this many tensors per clause (a network with nothing in common would otherwise print
# hundreds of names on one line); `TransferError.problems` keeps every name.
NAMES_SHOWN = 8


class TransferError(ValueError):
    """The weights cannot be moved without a guess: one line, the unmatched tensors of each side gathered into one
    clause each (the first NAMES_SHOWN names and a count), then every other problem; `problems` lists all."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("cannot move the weights: " + "; ".join(_summarised(problems)))
        self.problems = problems


_UNMATCHED = ("torch tensor(s) with no Paddle counterpart: ", "Paddle tensor(s) with no torch counterpart: ")


def _summarised(problems: tuple[str, ...]) -> list[str]:
    out = []
    for head in _UNMATCHED:
        names = [n for p in problems if p.startswith(head) for n in p[len(head):].split(", ")]
        if names:
            more = f" (+{len(names) - NAMES_SHOWN} more)" if len(names) > NAMES_SHOWN else ""
            out.append(f"{len(names)} {head}{', '.join(names[:NAMES_SHOWN])}{more}")
    others = [p for p in problems if not p.startswith(_UNMATCHED)]
    more = [f"{len(others) - NAMES_SHOWN} more problem(s)"] if len(others) > NAMES_SHOWN else []
    return out + others[:NAMES_SHOWN] + more


@dataclass(frozen=True)
class Move:
    """One tensor moved: where from, where to, its Paddle shape, the rule that paired it and whether transposed."""

    torch_name: str
    paddle_name: str
    shape: tuple[int, ...]
    rule: str  # "name", "rename" (the rename table), "spelling" (running_var -> _variance, ...) or "shape"
    transposed: bool


@dataclass(frozen=True)
class TransferReport:
    """What `transfer_weights` did: every move in torch definition order, and the torch tensors dropped."""

    moves: tuple[Move, ...]
    dropped: tuple[str, ...]

    def count(self, rule: str) -> int:
        return sum(move.rule == rule for move in self.moves)

    def lines(self) -> list[str]:
        """`torch name -> paddle name [shape] rule (transposed)`, one line per move, then the dropped tensors."""
        out = [f"{m.torch_name} -> {m.paddle_name} {list(m.shape)} {m.rule}" + (" (transposed)" if m.transposed else "")
               for m in self.moves]
        return out + [f"{name} dropped (no Paddle counterpart)" for name in self.dropped]


@dataclass(frozen=True)
class _Entry:
    """One state-dict tensor of either side: qualified name, local name, whether its owner is a Linear layer."""

    name: str
    local: str
    is_linear: bool
    shape: tuple[int, ...]
    dtype: str


def transfer_weights(torch_module, paddle_layer, rename: Mapping[str, str] | None = None) -> TransferReport:
    """Move every weight of `torch_module` into `paddle_layer` (in place) and report how each was paired.

    `rename` maps torch qualified-name prefixes (module paths or whole tensor names) to Paddle ones. Raises
    TransferError, writing nothing, when anything is left unmatched, ambiguous, or of another shape or dtype."""
    rename = check_rename(rename)
    torch_entries, arrays, dropped = _torch_entries(torch_module)
    paddle_entries = _paddle_entries(paddle_layer)
    problems = [f"rename table entry {key!r} matches no torch tensor" for key in rename
                if not any(_under(e.name, key) for e in torch_entries)]
    pairs, name_problems = _match_by_name(torch_entries, paddle_entries, rename)
    paired_torch, paired_paddle = {t.name for t, _, _ in pairs}, {p.name for _, p, _ in pairs}
    shape_pairs, shape_problems = _match_by_shape([e for e in torch_entries if e.name not in paired_torch],
                                                  [e for e in paddle_entries.values() if e.name not in paired_paddle])
    planned = [_plan_move(t, p, rule) for t, p, rule in pairs + shape_pairs]
    problems += name_problems + shape_problems + [problem for _, problem in planned if problem]
    if problems:
        raise TransferError(tuple(problems))
    order = {e.name: i for i, e in enumerate(torch_entries)}
    moves = sorted((move for move, _ in planned), key=lambda move: order[move.torch_name])
    targets = paddle_layer.state_dict()  # the layer's own tensors, not copies
    for move in moves:
        tensor = arrays[move.torch_name]
        # torch's blocked transpose: 4x faster than numpy's on vgg's 25088 x 4096 classifier weight
        targets[move.paddle_name].set_value((tensor.t().contiguous() if move.transposed else tensor).numpy())
    return TransferReport(moves=tuple(moves), dropped=tuple(dropped))


def _torch_entries(torch_module) -> tuple[list[_Entry], dict, list[str]]:
    """The entries in definition order, their detached CPU tensors by name, and the dropped names."""
    kept = set(torch_module.state_dict().keys())  # parameters and persistent buffers only
    entries, arrays, dropped = [], {}, []
    for path, module in torch_module.named_modules():
        tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        for local, tensor in tensors:
            name = f"{path}.{local}" if path else local
            if name not in kept:
                continue
            if local in DROPPED_LOCAL_NAMES:
                dropped.append(name)
                continue
            arrays[name] = tensor.detach().cpu()
            entries.append(_Entry(name, local, is_torch_linear(module), tuple(tensor.shape),
                                  str(tensor.dtype).removeprefix("torch.")))
    return entries, arrays, dropped


def _paddle_entries(paddle_layer) -> dict[str, _Entry]:
    kept = set(paddle_layer.state_dict().keys())
    entries = {}
    for path, layer in paddle_layer.named_sublayers(include_self=True):
        tensors = list(layer.named_parameters(include_sublayers=False)) + list(layer.named_buffers(include_sublayers=False))
        for local, tensor in tensors:
            name = f"{path}.{local}" if path else local
            if name in kept:
                dtype = str(tensor.dtype).removeprefix("paddle.")
                entries[name] = _Entry(name, local, is_paddle_linear(layer), tuple(tensor.shape), dtype)
    return entries


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _paddle_names(target: str) -> list[tuple[str, bool]]:
    """The Paddle names a (renamed) torch name may have: itself, then the frameworks' spellings (flagged True)."""
    owner, _, local = target.rpartition(".")
    return [(f"{owner}.{spelling}" if owner else spelling, spelling != local)
            for spelling in (local, *PADDLE_SPELLINGS.get(local, ()))]


def _match_by_name(torch_entries: list[_Entry], paddle_entries: dict[str, _Entry], rename: Mapping[str, str]):
    pairs, problems, taken = [], [], set()
    for entry in torch_entries:
        target = apply_rename(entry.name, rename)
        found = [(name, spelled) for name, spelled in _paddle_names(target) if name in paddle_entries]
        if len(found) > 1:
            problems.append(f"torch {entry.name} has several Paddle names: {', '.join(name for name, _ in found)}")
        elif found and found[0][0] in taken:
            problems.append(f"Paddle {found[0][0]} is named by more than one torch tensor (last: {entry.name})")
        elif found:
            name, spelled = found[0]
            taken.add(name)
            rule = "spelling" if spelled else ("rename" if target != entry.name else "name")
            pairs.append((entry, paddle_entries[name], rule))
    return pairs, problems


def _kind(entry: _Entry) -> tuple[str, tuple[int, ...]]:
    """What both sides agree on for a leftover: its tensor name in torch's spelling, and its shape in Paddle's
    layout (a Linear weight's (out, in) read as (in, out))."""
    torch_spelling = {spelling: local for local, spellings in PADDLE_SPELLINGS.items() for spelling in spellings}
    local = torch_spelling.get(entry.local, entry.local)
    return local, entry.shape


def _match_by_shape(left_torch: list[_Entry], left_paddle: list[_Entry]):
    """Pair the leftovers whose (tensor name, shape) is unique on both sides; refuse the others, naming them all."""
    groups: dict[tuple, tuple[list[_Entry], list[_Entry]]] = defaultdict(lambda: ([], []))
    for entry in left_torch:
        local, shape = _kind(entry)
        groups[(local, shape[::-1] if entry.is_linear and local == "weight" else shape)][0].append(entry)
    for entry in left_paddle:
        groups[_kind(entry)][1].append(entry)
    pairs, problems = [], []
    for (local, shape), (torch_side, paddle_side) in groups.items():
        names = (", ".join(e.name for e in torch_side), ", ".join(e.name for e in paddle_side))
        if len(torch_side) == 1 and len(paddle_side) == 1:
            pairs.append((torch_side[0], paddle_side[0], "shape"))
        elif not paddle_side:
            problems.append(f"torch tensor(s) with no Paddle counterpart: {names[0]}")
        elif not torch_side:
            problems.append(f"Paddle tensor(s) with no torch counterpart: {names[1]}")
        else:
            problems.append(f"ambiguous, several '{local}' tensors of shape {list(shape)}: torch {names[0]} / "
                            f"Paddle {names[1]} (name them in the rename table)")
    return pairs, problems


def _plan_move(torch_entry: _Entry, paddle_entry: _Entry, rule: str) -> tuple[Move, str]:
    """The move, and what is wrong with it ("" when nothing): Linear on one side only, shape or dtype."""
    linear_weight = torch_entry.local == "weight" and (torch_entry.is_linear or paddle_entry.is_linear)
    transposed = linear_transposed(torch_entry.local, torch_entry.is_linear, paddle_entry.is_linear)
    move = Move(torch_entry.name, paddle_entry.name, paddle_entry.shape, rule, transposed)
    pair = f"torch {torch_entry.name} {list(torch_entry.shape)} vs Paddle {paddle_entry.name} {list(paddle_entry.shape)}"
    if linear_weight and not transposed:
        return move, f"a Linear weight on one side only, its layout unknown: {pair}"
    if (torch_entry.shape[::-1] if transposed else torch_entry.shape) != paddle_entry.shape:
        return move, f"shape differs: {pair}" + (" (Linear: transposed)" if transposed else "")
    if torch_entry.dtype != paddle_entry.dtype:
        return move, f"dtype differs: torch {torch_entry.name} {torch_entry.dtype} vs Paddle {paddle_entry.name} {paddle_entry.dtype}"
    return move, ""
