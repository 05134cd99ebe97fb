"""Gradients that differ only because the forward sits on a kink (`compare_backward`'s structure rows).

A max-pool is not differentiable where two values of a window tie: any element of the tie is a valid one-sided
derivative's choice, and both frameworks' CPU kernels route the window's gradient to the first maximum in row-major
order. Two float64 runs that agree to float64 precision can still round a tie differently (measured on CoNR's target
pose encoder, narrow draw, 128 px: torch's stem ReLU output holds a window 1.1614032168465882, ...882, ...886 where
Paddle's holds three equal values: 2 ulps apart), and then the window's gradient lands one pixel apart: a float64
gradient difference of the gradient's own size, which no port bug causes.

The check is measured, never assumed: at a structurally failing layer-output row whose call feeds a max-pool call
(`KINK_TYPES`) whose own output gradient agrees, torch's max-pool backward is run again at Paddle's float64 forward
input with torch's float64 output gradient. If moving only that pool's derivative to Paddle's forward point turns
torch's float64 gradient into Paddle's (within the gradient structure bound), the row is a kink: both one-sided
derivatives are valid. Rows further in backward order that fail structure and lie upstream of the kink (the kink's
call is reachable from theirs through the consumers graph), the same tensor returned by a container, and the
inputs' gradients then follow the kink. Parameter gradients are never explained away: they keep their verdicts.
Limit: a second fault upstream of a kink is not localised by the layer rows (they follow the kink); the parameter
gradients still fail on it (parity_tests/test_backward.py, the control beside the kink).
"""
from __future__ import annotations

import numpy as np

from portcheck.grad_runs import KINK_TYPES

__all__ = ["classify_kinks", "KINK_NOTE"]

KINK_NOTE = ("gradients differ only where the forward sits on a kink of {op} (a tie in a window, rounded differently "
             "by the two float64 runs): both one-sided derivatives valid")


def _reroute(torch_pool, x_torch: np.ndarray, x_paddle: np.ndarray, g_out: np.ndarray) -> tuple[np.ndarray, int]:
    """The change of the pool's input gradient when its derivative is taken at Paddle's forward point instead of
    torch's (same output gradient, torch's kernel), and how many input elements it moves."""
    import torch

    def grad_at(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
        torch_pool.double()(t).backward(torch.from_numpy(g_out.astype(np.float64)))
        return t.grad.numpy()

    delta = grad_at(x_paddle) - grad_at(x_torch)
    return delta, int(np.count_nonzero(delta))


def _arrays(row: dict, runs: dict) -> tuple[np.ndarray, np.ndarray]:
    """The float64 gradients (torch, Paddle) of a layer-output row."""
    i = int(row["torch"].rpartition("[")[2].rstrip("]")) if row["torch"].endswith("]") else 0
    return runs["torch64"].grads[row["call_torch"]][i], runs["paddle64"].grads[row["call_paddle"]][i]


def _same_tensor(a: dict, b: dict, runs: dict) -> bool:
    """Whether two rows carry bit-identical float64 gradients on both sides (a container returning a child's
    output: one tensor, two calls)."""
    (ta, pa), (tb, pb) = _arrays(a, runs), _arrays(b, runs)
    return ta.shape == tb.shape and np.array_equal(ta, tb) and np.array_equal(pa, pb)


def _reaches(start: str, goal: str, consumers: dict) -> bool:
    """Whether `goal` is a (transitive) consumer of call `start`."""
    seen, todo = set(), [start]
    while todo:
        key = todo.pop()
        for c in consumers.get(key, ()):
            if c == goal:
                return True
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return False


def _kink_at(row: dict, runs: dict, torch_module, pairs: dict, bound: float) -> dict | None:
    """The kink explaining `row` (a structurally failing layer-output row), measured, or None."""
    t64, p64 = runs["torch64"], runs["paddle64"]
    modules = dict(torch_module.named_modules())
    for pk in runs["paddle32"].consumers.get(row["call_paddle"], []):
        tk = pairs.get(pk)
        if tk is None or pk not in p64.kink_inputs or tk not in t64.kink_inputs:
            continue
        pool = modules.get(tk.rpartition("#")[0])
        g_out = t64.grads.get(tk, [None])[0]
        if pool is None or g_out is None or type(pool).__name__ not in KINK_TYPES:
            continue
        delta, moved = _reroute(pool, t64.kink_inputs[tk], p64.kink_inputs[pk], g_out)
        g_t, g_p = _arrays(row, runs)
        scale = max(float(np.abs(g_t).max()), 1e-300)
        rerouted = float(np.abs(g_t + delta - g_p).max()) / scale
        if moved and rerouted <= bound:
            gap = float(np.abs(t64.kink_inputs[tk] - p64.kink_inputs[pk]).max())
            return {"op": type(pool).__name__, "torch": tk, "paddle": pk, "elements_moved": moved,
                    "rerouted_fp64_scaled": rerouted, "fp64_scaled": row["fp64_scaled"],
                    "forward_gap_fp64": gap, "note": KINK_NOTE.format(op=type(pool).__name__)}
    return None


def classify_kinks(layers: list[dict], inputs_rows: list[dict], runs: dict, torch_module, bound: float) -> list[dict]:
    """Mark the structurally failing rows a measured kink explains (module docstring): the kink row gets `kink`,
    the rows that follow it `follows_kink`; both keep their figures. Returns the kinks found."""
    if runs.get("torch64") is None or runs.get("paddle64") is None:
        return []
    pairs = {r["call_paddle"]: r["call_torch"] for r in layers}
    kinks: list[dict] = []
    for row in [r for r in layers if not r["structure"] and "error" not in r]:
        kink = _kink_at(row, runs, torch_module, pairs, bound)
        if kink is not None:
            row["kink"] = {**kink, "row": row["paddle"]}
            kinks.append(row["kink"])
    for row in [r for r in layers if not r["structure"] and "error" not in r and "kink" not in r]:
        for kink in kinks:
            kink_row = next(r for r in layers if r.get("kink") is kink)
            upstream = _reaches(row["call_paddle"], kink_row["call_paddle"], runs["paddle32"].consumers)
            if (upstream and row["index"] > kink_row["index"]) or _same_tensor(row, kink_row, runs):
                row["follows_kink"] = kink["row"]
                break
    for row in inputs_rows if kinks else ():
        if not row["structure"] and "error" not in row:
            row["follows_kink"] = kinks[0]["row"]
    return kinks
