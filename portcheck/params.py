"""Every parameter and buffer compared tensor by tensor after the weight move, both names on each row.

Tensors are paired inside each pair of modules (`portcheck.pairing`): by local name, then the frameworks' known
renames (BatchNorm `running_mean` -> `_mean`, `running_var` -> `_variance`), then in registration order when both
sides have the same number left. torch's `num_batches_tracked` has no Paddle counterpart and is left out. A
Linear weight is stored transposed in Paddle ((in, out) against torch's (out, in)): compared transposed, decided
from the layer types by the rule the weight move uses (`portcheck.layout`), and the row says so. After a weight move the values must be identical (max abs 0).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from portcheck.layout import is_paddle_linear, is_torch_linear, linear_transposed
from portcheck.pairing import ModulePair

__all__ = ["FRAMEWORK_RENAMES", "compare_parameters", "parameter_pairs"]

FRAMEWORK_RENAMES = {"running_mean": "_mean", "running_var": "_variance"}
TORCH_ONLY = ("num_batches_tracked",)


def _torch_tensors(module) -> list[tuple[str, np.ndarray]]:
    items = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
    return [(n, t.detach().cpu().numpy()) for n, t in items if t is not None and n not in TORCH_ONLY]


def _paddle_tensors(layer) -> list[tuple[str, np.ndarray]]:
    items = list(layer.named_parameters(include_sublayers=False)) + list(layer.named_buffers(include_sublayers=False))
    return [(n, t.numpy()) for n, t in items if t is not None]


def _pair_local(tt: list, pt: list) -> tuple[list[tuple], list[str], list[str]]:
    """((torch name, array), (Paddle name, array), rule) pairs and the names left on each side."""
    p_by = dict(pt)
    pairs, used = [], set()
    for n, a in tt:
        other = n if n in p_by and n not in used else FRAMEWORK_RENAMES.get(n)
        if other in p_by and other not in used:
            pairs.append(((n, a), (other, p_by[other]), "name" if other == n else "framework rename"))
            used.add(other)
    t_left = [(n, a) for n, a in tt if n not in {p[0][0] for p in pairs}]
    p_left = [(n, a) for n, a in pt if n not in used]
    if t_left and len(t_left) == len(p_left):
        pairs += [(t, p, "order") for t, p in zip(t_left, p_left)]
        t_left, p_left = [], []
    return pairs, [n for n, _ in t_left], [n for n, _ in p_left]


def _row(tq: str, pq: str, a: np.ndarray, b: np.ndarray, rule: str, transposed: bool) -> dict:
    row = {"torch": tq, "paddle": pq, "rule": rule, "shape": list(a.shape), "paddle_shape": list(b.shape),
           "transposed": bool(transposed), "torch_dtype": str(a.dtype), "paddle_dtype": str(b.dtype)}
    b = b.T if transposed else b
    if a.shape != b.shape:
        return {**row, "error": "shape mismatch", "ok": False}
    max_abs, differing = _differences(a, b)
    return {**row, "max_abs": max_abs, "differing": differing, "ok": max_abs == 0.0}


# Elements per float64 block in `_differences` (32 MB per operand): a whole large tensor in float64 cost four copies
# of it at once (vgg11_bn's 25088 x 4096 Linear: 3.3 GB, which set the peak of a whole compare).
BLOCK_ELEMENTS = 1 << 22


def _differences(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """(max abs difference, number of differing elements) of two arrays of one shape, computed in float64 block by
    block along the first axis; a NaN difference makes the max NaN, as one whole-array max would."""
    if a.size == 0:
        return 0.0, 0
    if a.ndim == 0:
        a, b = a.reshape(1), b.reshape(1)
    rows = max(1, BLOCK_ELEMENTS // max(1, a[0].size))
    max_abs, differing = 0.0, 0
    for start in range(0, a.shape[0], rows):
        d = np.abs(a[start:start + rows].astype(np.float64) - b[start:start + rows].astype(np.float64))
        max_abs = float(np.max([max_abs, d.max()]))
        differing += int((d > 0).sum())
    return max_abs, differing


def _qualified(module: str, name: str) -> str:
    return f"{module}.{name}" if module else name


def compare_parameters(torch_module, paddle_layer, modules: Sequence[ModulePair]) -> tuple[list[dict], list[str], list[str]]:
    """Rows for every paired tensor (in torch order), and the unpaired tensors of each side (qualified names)."""
    t_mods, p_mods = dict(torch_module.named_modules()), dict(paddle_layer.named_sublayers(include_self=True))
    rows, t_only, p_only = [], [], []
    paired_t, paired_p = set(), set()
    for m in modules:
        paired_t.add(m.torch)
        paired_p.add(m.paddle)
        tm, pm = t_mods[m.torch], p_mods[m.paddle]
        pairs, tl, pl = _pair_local(_torch_tensors(tm), _paddle_tensors(pm))
        linear = (is_torch_linear(tm), is_paddle_linear(pm))
        rows += [_row(_qualified(m.torch, t[0]), _qualified(m.paddle, p[0]), t[1], p[1], rule,
                      linear_transposed(t[0], *linear)) for t, p, rule in pairs]
        t_only += [_qualified(m.torch, n) for n in tl]
        p_only += [_qualified(m.paddle, n) for n in pl]
    for n, mod in t_mods.items():
        if n not in paired_t:
            t_only += [_qualified(n, k) for k, _ in _torch_tensors(mod)]
    for n, lay in p_mods.items():
        if n not in paired_p:
            p_only += [_qualified(n, k) for k, _ in _paddle_tensors(lay)]
    return rows, t_only, p_only


def parameter_pairs(torch_module, paddle_layer, modules: Sequence[ModulePair]) -> list[tuple[str, str, bool]]:
    """(torch name, Paddle name, Linear) of every paired trainable parameter, qualified, in torch order: the same
    pairing as `compare_parameters` (buffers left out). Linear: a torch Linear's tensor, which Paddle may store
    transposed (its gradient too)."""
    t_mods, p_mods = dict(torch_module.named_modules()), dict(paddle_layer.named_sublayers(include_self=True))
    out = []
    for m in modules:
        tm, pm = t_mods[m.torch], p_mods[m.paddle]
        tt = [(n, None) for n, _ in tm.named_parameters(recurse=False)]
        pt = [(n, None) for n, _ in pm.named_parameters(include_sublayers=False)]
        pairs, _, _ = _pair_local(tt, pt)
        linear = type(tm).__name__ == "Linear"
        out += [(_qualified(m.torch, t[0]), _qualified(m.paddle, p[0]), linear) for t, p, _ in pairs]
    return out
