"""The backward half of a port comparison (`compare(..., backward=True)`, `compare_backward`): four forward+backward
passes (`portcheck.grad_runs`: torch float32, Paddle float32, torch float64 = the truth, Paddle float64) of the same
scalar loss, and rows judged with the forward pass's two verdicts (`portcheck.verdicts.judge_outputs`):
- every paired layer call's output gradient, in backward order (the reverse of torch's forward execution order),
  so the first structural row is where the gradients start to differ; its `suspects` are the paired calls that took
  that output as an argument and whose own output gradients agree: one of their backward functions is wrong;
- every trainable parameter's gradient, paired by name through the same module pairing and rename table as the
  forward rows (`portcheck.params.parameter_pairs`); a Linear weight stored transposed is compared transposed;
- every float input's gradient.
A gradient that reaches one side and not the other (a detached path, a stop_gradient parameter) is structural.
A structural layer-output row that a measured kink explains (a max-pool tie rounded differently by the two float64
runs, `portcheck.kinks`) is classified so, with the rows that follow it, and does not fail.
Verdicts: structure per row; precision once, as the median over parameter gradients of Paddle's float32 distance
to the truth over torch's (`GRADIENT_MEDIAN_RATIO_LIMIT`); rows above the per-row limit are listed as information.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from portcheck.grad_runs import GradRun, default_call, paddle_grad_run, torch_grad_run
from portcheck.pairing import pair_calls, pair_modules
from portcheck.kinks import classify_kinks
from portcheck.params import parameter_pairs
from portcheck.record import output_keys
from portcheck.verdicts import GRADIENT_MEDIAN_RATIO_LIMIT
from portcheck.verdicts import STRUCTURE_SCALED_FP64_GRADIENTS as BOUND
from portcheck.verdicts import judge_outputs, verdict_of, within_structure

__all__ = ["PROJECTION_SEED", "compare_backward", "gradient_summary", "gradient_failure_line", "kink_lines",
           "LOSS_NOTE"]

PROJECTION_SEED = 0
LOSS_NOTE = ("backward loss: sum over the outputs of sum(output * P), P standard normal from numpy "
             "default_rng({seed}) in output order, rounded to float32 once (the same numbers in all four passes)")
FOUR = ("torch32", "paddle32", "torch64", "paddle64")

# A gradient that is zero in exact arithmetic (a BatchNorm bias whose shift the next train-mode BatchNorm removes, a
# conv bias before one) comes out of both float64 runs as rounding noise, ~1e-13 of the largest gradient of its
# kind, and its scaled error is noise over noise (measured: 2.25 on mobilenet_v2's `features.*.conv.3.bias` in
# train mode). Such a "vanishing" gradient, whose float64 truth stays under VANISHING_GRADIENT of the largest
# gradient of its kind (parameters, layer outputs, inputs), is judged for structure on that floor as its scale
# (1e-5 x 1e-8 = 1e-13: still far under any port bug that changes a gradient by its own size, above float64 noise),
# and not for precision (its float32 values are rounding noise of a zero on both sides).
VANISHING_GRADIENT = 1e-5


def _grad_passes(torch_module, paddle_layer, inputs, truth: str, train: bool, seed: int, calls, timings: dict):
    plan = [("torch32", torch_grad_run, torch_module, "float32", calls[0]),
            ("paddle32", paddle_grad_run, paddle_layer, "float32", calls[1])]
    if truth == "fp64":
        plan += [("torch64", torch_grad_run, torch_module, "float64", calls[0]),
                 ("paddle64", paddle_grad_run, paddle_layer, "float64", calls[1])]
    runs: dict[str, GradRun | None] = {"torch64": None, "paddle64": None}
    for key, run, model, dtype, call in plan:
        t0 = time.perf_counter()
        runs[key] = run(model, inputs, dtype, train, seed, call)
        timings[f"backward_{key}_s"] = time.perf_counter() - t0
    return runs


def _truth_of(g: list):
    """The float64 truth of a gradient's passes (torch float64), or torch float32 without truth passes."""
    return g[2] if len(g) == 4 and g[2] is not None else g[0]


def _largest(rows_grads: list[list]) -> float:
    """The largest |float64 truth| over the gradients of one kind (`_truth_of`)."""
    return max((float(np.abs(_truth_of(g)).max(initial=0.0)) for g in rows_grads if _truth_of(g) is not None),
               default=0.0)


def _judge(name_t: str, name_p: str, grads: list, head: dict, largest: float) -> dict:
    """One gradient row from the passes' arrays (2 or 4; None: no gradient on that pass); `largest`: `_largest` of
    its kind, for the VANISHING_GRADIENT floor."""
    row = _judge_plain(name_t, name_p, grads, head)
    if len(grads) < 4 or "error" in row or row.get("unused"):
        return row
    t64, p64 = grads[2], grads[3]
    floor = VANISHING_GRADIENT * largest
    if t64 is None or p64 is None or t64.shape != p64.shape or not floor:
        return row
    if max(float(np.abs(t64).max(initial=0.0)), float(np.abs(p64).max(initial=0.0))) >= floor:
        return row
    fp64 = float(np.abs(t64 - p64).max(initial=0.0)) / floor
    return {**row, "vanishing": True, "fp64_scaled": fp64, "structure": within_structure(fp64, BOUND), "precision": None,
            "ratio": None}


def _judge_plain(name_t: str, name_p: str, grads: list, head: dict) -> dict:
    row = {"torch": name_t, "paddle": name_p, **head}
    present = [g is not None for g in grads]
    if not any(present):  # no pass of either side sends a gradient here: the loss does not use it
        return {**row, "structure": True, "precision": None, "unused": True}
    if not all(present):
        some = [g for g in grads if g is not None]
        if any(np.any(g) for g in some):
            sides = ", ".join(k for k, p in zip(FOUR, present) if not p)
            return {**row, "structure": False, "precision": None, "error": f"no gradient in {sides}"}
        grads = [np.zeros_like(some[0]) if g is None else g for g in grads]  # zero where it reached: the same
    full = list(grads) + [None] * (4 - len(grads))
    return {**row, **judge_outputs(*full, structure_bound=BOUND)}


def _four(runs: dict, get: Callable) -> list:
    """The passes that ran (2 or 4), each through `get`."""
    return [get(runs[k]) for k in FOUR if runs[k] is not None]


def _judged(items: list[tuple]) -> list[dict]:
    """Rows from (torch name, Paddle name, four gradients, extra fields) items of one kind, or ready error rows."""
    largest = _largest([it[2] for it in items if isinstance(it, tuple)])
    return [it if isinstance(it, dict) else {**_judge(it[0], it[1], it[2], it[3], largest)} for it in items]


def _layer_rows(runs: dict, modules) -> list[dict]:
    t32, p32 = runs["torch32"], runs["paddle32"]
    calls, _, _ = pair_calls(t32.keys, p32.keys, modules)
    items: list = []
    for pair in reversed(calls):  # backward order
        tk, pk = pair.torch_key, pair.paddle_key
        lists = [runs[k].grads.get(tk if k.startswith("torch") else pk) for k in FOUR if runs[k] is not None]
        head = {"rule": pair.rule, "torch_type": t32.types[tk.rpartition("#")[0]], "call_torch": tk,
                "call_paddle": pk}
        counts = {len(x) for x in lists if x is not None}
        if len(counts) != 1:
            items.append({"torch": tk, "paddle": pk, **head, "structure": False, "precision": None,
                          "error": f"{len(lists[0] or [])} output tensor(s) in torch, {len(lists[1] or [])} in Paddle"})
            continue
        n = counts.pop()
        for i, (k1, k2) in enumerate(zip(output_keys(tk, n), output_keys(pk, n))):
            grads = [x[i] if x is not None else None for x in lists]
            if any(g is not None for g in grads):
                items.append((k1, k2, grads, head))
    return _judged(items)


def _param_rows(runs: dict, names: Sequence[tuple[str, str, bool]]) -> list[dict]:
    items = []
    for tq, pq, linear in names:
        grads = [runs[k].params.get(tq if k.startswith("torch") else pq) for k in FOUR if runs[k] is not None]
        flip = linear and grads[1] is not None and grads[0] is not None and grads[1].shape == grads[0].shape[::-1] \
            and grads[1].ndim == 2 and grads[0].shape != grads[1].shape
        if flip:
            grads = [g.T if g is not None and k.startswith("paddle") else g for g, k in zip(grads, FOUR)]
        items.append((tq, pq, grads, {"transposed": bool(flip)}))
    return _judged(items)


def _input_rows(runs: dict) -> list[dict]:
    items = []
    for i in range(len(runs["torch32"].inputs)):
        grads = _four(runs, lambda r: r.inputs[i] if i < len(r.inputs) else None)
        if any(g is not None for g in grads):
            items.append((f"input {i}", f"input {i}", grads, {}))
    return _judged(items)


def _suspects(layers: list[dict], runs: dict) -> None:
    """On the first structural layer row: the paired consumers of its output whose gradients agree."""
    first = next((r for r in layers if _fails_structure(r)), None)
    if first is None:
        return
    ok = {r["call_paddle"] for r in layers if not _fails_structure(r)}
    by_paddle = {r["call_paddle"]: r["call_torch"] for r in layers}
    consumers = runs["paddle32"].consumers.get(first["call_paddle"], [])
    first["suspects"] = [{"torch": by_paddle[c], "paddle": c} for c in consumers if c in ok]


def compare_backward(torch_module, paddle_layer, inputs, *, modules=None, rename: Mapping[str, str] | None = None,
                     pairing: str = "name", truth: str = "fp64", train: bool = False, seed: int = PROJECTION_SEED,
                     calls: tuple[Callable, Callable] | None = None, timings: dict | None = None) -> dict:
    """The gradient rows of a port (module docstring). `calls`: (torch_fn, paddle_fn), each fn(model, *inputs)
    returning the outputs (default: the model called on the inputs). `modules`: the module pairing of the forward
    comparison, when it ran; else made here from the backward passes."""
    timings = {} if timings is None else timings
    runs = _grad_passes(torch_module, paddle_layer, inputs, truth, train, seed,
                        calls or (default_call, default_call), timings)
    t32, p32 = runs["torch32"], runs["paddle32"]
    if modules is None:
        modules = pair_modules(t32.names, p32.names, torch_first_call=t32.first_call,
                               paddle_first_call=p32.first_call, rename=rename or {}, pairing=pairing)
    layers = _layer_rows(runs, modules)
    for i, row in enumerate(layers):
        row["index"] = i
    params = _param_rows(runs, parameter_pairs(torch_module, paddle_layer, modules))
    inputs_rows = _input_rows(runs)
    kinks = classify_kinks(layers, inputs_rows, runs, torch_module, BOUND)
    _suspects(layers, runs)
    for row in layers + params + inputs_rows:
        row["verdict"] = "unused by the loss" if row.get("unused") else verdict_of(row)
    losses = {k: runs[k].loss for k in FOUR if runs[k] is not None}
    paired_t = {t for t, _, _ in parameter_pairs(torch_module, paddle_layer, modules)}
    return {"layers": layers, "parameters": params, "inputs": inputs_rows, "losses": losses,
            "parameters_unpaired_torch": [n for n in t32.params if n not in paired_t],
            "projection_seed": seed, "loss": LOSS_NOTE.format(seed=seed), "structure_bound": BOUND,
            "vanishing_floor": VANISHING_GRADIENT, "kinks": kinks,
            "median_ratio_limit": GRADIENT_MEDIAN_RATIO_LIMIT}


def _fails_structure(row: dict) -> bool:
    """Structural and not explained by a measured kink (`portcheck.kinks`)."""
    return not row["structure"] and not row.get("kink") and not row.get("follows_kink")


def gradient_summary(g: dict) -> dict:
    """Counts, the first diverging layer in backward order, and the precision figures of the parameter gradients.
    passed: no row fails structure (kinks aside) and the median parameter ratio is within its limit (None without a
    truth: not judged)."""
    rows = g["layers"] + g["parameters"] + g["inputs"]
    first = next((r for r in g["layers"] if _fails_structure(r)), None)
    ratios = [r["ratio"] for r in g["parameters"] if r.get("ratio") is not None and np.isfinite(r["ratio"])]
    fp64 = [r["fp64_scaled"] for r in rows if "fp64_scaled" in r]
    median = statistics.median(ratios) if ratios else None
    limit = g.get("median_ratio_limit", GRADIENT_MEDIAN_RATIO_LIMIT)
    precision = None if median is None else bool(median <= limit)
    return {
        "passed": not any(_fails_structure(r) for r in rows) and precision is not False,
        "precision_passed": precision, "median_ratio_limit": limit,
        "layer_gradients": len(g["layers"]), "parameter_gradients": len(g["parameters"]),
        "input_gradients": len(g["inputs"]),
        "structure_failing": sum(_fails_structure(r) for r in rows),
        "kinks": g.get("kinks", []),
        "rows_following_kinks": sum(bool(r.get("follows_kink")) for r in rows),
        "rows_above_ratio_limit": [r["paddle"] for r in rows if r["precision"] is False],
        "first_diverging": ({"torch": first["torch"], "paddle": first["paddle"],
                             "suspects": first.get("suspects", [])} if first else None),
        "parameters_structure_failing": [r["paddle"] for r in g["parameters"] if _fails_structure(r)],
        "worst_fp64_scaled": max(fp64, default=None),
        "median_parameter_ratio": median,
        "worst_parameter_ratio": max(ratios, default=None),
        "input_ratios": [r.get("ratio") for r in g["inputs"]],
    }


def _figures(row: dict, bound: float) -> str:
    if "error" in row:
        return row["error"]
    if "fp64_scaled" in row and not row["structure"] and not _fails_structure(row):
        return f"float64 gradients differ by {row['fp64_scaled']:.2e} scaled: {row['verdict']}"
    if "fp64_scaled" in row and not row["structure"]:
        return f"float64 gradients differ by {row['fp64_scaled']:.2e} scaled > {bound:.2e}"
    if "fp64_scaled" in row:
        return (f"structurally exact but less precise: Paddle fp32 {row['paddle_fp32_vs_truth']:.2e} vs torch fp32 "
                f"{row['torch_fp32_vs_truth']:.2e} from the float64 truth, ratio {row['ratio']:.2f}")
    return f"float32 gradients differ by {row['scaled']:.2e} scaled"


def gradient_failure_line(g: dict, bound: float) -> str | None:
    """One line naming what fails: the first structural gradient (a layer output in backward order, with its
    suspects, else a parameter, else an input; kinks aside), else the median parameter ratio over its limit."""
    kinds = (("layer output", g["layers"]), ("parameter", g["parameters"]), ("input", g["inputs"]))
    found = [(k, r) for k, rows in kinds for r in rows if _fails_structure(r)]
    for kind, bad in found[:1]:
        where = "first diverging gradient in backward order" if kind == "layer output" else f"{kind} gradient"
        line = f"{where}: torch `{bad['torch']}` / Paddle `{bad['paddle']}` ({_figures(bad, bound)})"
        if bad.get("suspects"):
            names = ", ".join(f"`{s['paddle']}`" for s in bad["suspects"])
            line += f"; its consumers whose own gradients agree, one of whose backward is wrong: {names}"
        return line
    s = gradient_summary(g)
    if s["precision_passed"] is False:
        return (f"gradient precision: the median over {s['parameter_gradients']} parameter gradients of Paddle's "
                f"float32 distance to the float64 truth over torch's is {s['median_parameter_ratio']:.2f} > "
                f"{s['median_ratio_limit']}")
    return None


def kink_lines(g: dict) -> list[str]:
    """One line per measured kink (`portcheck.kinks`) with its figures."""
    return [f"{k['row']}: {k['note']} (torch `{k['torch']}`; float64 gradients {k['fp64_scaled']:.1e} scaled apart, "
            f"{k['rerouted_fp64_scaled']:.1e} once torch's {k['op']} derivative is taken at Paddle's forward point, "
            f"{k['elements_moved']} element(s) moved, forward inputs at most {k['forward_gap_fp64']:.1e} apart)"
            for k in g.get("kinks", [])]
