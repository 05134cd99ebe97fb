"""`compare(torch_module, paddle_layer, inputs)`: the whole comparison of a port, in four passes.

torch float32, Paddle float32, torch float64 (the truth) and Paddle float64, each on float64 twins the engine makes
itself (deep copies cast to float64: the models passed in are not changed). Every named layer call is recorded on
each side (`portcheck.record`), the calls paired (`portcheck.pairing`) and each paired output judged twice
(`portcheck.verdicts`): structure (Paddle float64 vs torch float64) and precision (each float32 run's distance to
the truth). Rows follow torch's execution order (a leaf finishes before its parents), so the first row whose
structure fails is where a port bug starts. `truth="none"` skips the float64 passes and judges the float32 outputs
against a fixed tolerance (the result says so).
"""
from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from portcheck.backward import LOSS_NOTE, PROJECTION_SEED, compare_backward
from portcheck.declared import check_unpaired_ok, split_declared
from portcheck.errors import ForwardError, PortInputError
from portcheck.pairing import PAIRINGS, check_rename, pair_calls, pair_modules
from portcheck.params import compare_parameters
from portcheck.record import output_keys
from portcheck.result import Comparison
from portcheck.train import batchnorm_notes, running_stat_rows
from portcheck.runs import Run, dropout_names, paddle_batchnorms, paddle_run, torch_batchnorms, torch_run
from portcheck.verdicts import (FP32_SCALED_NO_TRUTH, STRUCTURE_SCALED_FP64, TRUTH_FLOOR_SCALED, TRUTH_RATIO_LIMIT,
                       judge_outputs, verdict_of)

__all__ = ["TRUTHS", "compare", "Comparison"]

TRUTHS = ("fp64", "none")
# "gate": a less precise layer fails the pair (the default); "informative": it is reported as a finding about the
# pair and the pair passes when everything else does (structure, pairing, weights).
PRECISIONS = ("gate", "informative")


def _output_rows(pairs, runs: dict[str, Run | None]) -> list[dict]:
    """One row per output tensor of each paired call, in torch execution order."""
    t32, p32, t64, p64 = runs["torch32"], runs["paddle32"], runs["torch64"], runs["paddle64"]
    rows = []
    for pair in pairs:
        tname, pname = pair.torch_key.rpartition("#")[0], pair.paddle_key.rpartition("#")[0]
        head = {"rule": pair.rule, "torch_type": t32.types[tname], "paddle_type": p32.types[pname],
                "leaf": t32.leaf[tname]}
        a, b = t32.outputs[pair.torch_key], p32.outputs[pair.paddle_key]
        truth = [r.outputs.get(k) for r, k in ((t64, pair.torch_key), (p64, pair.paddle_key))] if t64 else [None, None]
        counts = {len(a), len(b)} | ({len(x) for x in truth if x is not None} if t64 else set())
        if len(counts) != 1 or (t64 and None in truth):
            rows.append({"torch": pair.torch_key, "paddle": pair.paddle_key, **head, "structure": False,
                         "precision": None, "error": f"{len(a)} output tensor(s) in torch, {len(b)} in Paddle"})
            continue
        for i, (tk, pk) in enumerate(zip(output_keys(pair.torch_key, len(a)), output_keys(pair.paddle_key, len(b)))):
            ref = (truth[0][i], truth[1][i]) if t64 else (None, None)
            rows.append({"torch": tk, "paddle": pk, **head, **judge_outputs(a[i], b[i], *ref)})
    for i, row in enumerate(rows):
        row["index"], row["verdict"] = i, verdict_of(row)
    return rows


def _passes(torch_module, paddle_layer, inputs, truth: str, train: bool, timings: dict) -> dict[str, Run | None]:
    runs: dict[str, Run | None] = {"torch64": None, "paddle64": None}
    plan = [("torch32", torch_run, torch_module, "float32"), ("paddle32", paddle_run, paddle_layer, "float32")]
    if truth == "fp64":
        plan += [("torch64", torch_run, torch_module, "float64"), ("paddle64", paddle_run, paddle_layer, "float64")]
    for key, run, model, dtype in plan:
        t0 = time.perf_counter()
        try:
            runs[key] = run(model, inputs, dtype, train)
        except Exception as exc:  # the model's own code failed on this input: say which side and pass
            raise ForwardError("torch" if key.startswith("torch") else "Paddle", dtype, exc) from exc
        timings[f"{key}_s"] = time.perf_counter() - t0
    return runs


def _check(truth: str, pairing: str, precision: str) -> None:
    if precision not in PRECISIONS:
        raise PortInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if truth not in TRUTHS:
        raise PortInputError(f"truth must be one of {', '.join(TRUTHS)}, got {truth!r}")
    if pairing not in PAIRINGS:
        raise PortInputError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")


def compare(torch_module, paddle_layer, inputs, *, rename: Mapping[str, str] | None = None, pairing: str = "name",
            truth: str = "fp64", train: bool = False, backward: bool = False, unpaired_ok=None,
            precision: str = "gate", projection_seed: int = PROJECTION_SEED) -> Comparison:
    """Compare a torch module with its Paddle port on `inputs` (a numpy array or a tuple of them: the float ones are
    cast to each pass's dtype). Raises ForwardError when either model's own forward raises. `unpaired_ok`: names of
    parameter-free layers whose calls are expected to have no counterpart (`portcheck.declared`); `precision`: one
    of PRECISIONS. backward: also four forward+backward passes of a fixed random projection of the outputs
    (`portcheck.backward`, its seed `projection_seed`): every layer output's, parameter's and input's gradient judged
    with the same two verdicts. See the module docstring; returns a `Comparison`."""
    _check(truth, pairing, precision)
    rename = check_rename(rename)
    declared = check_unpaired_ok(unpaired_ok, torch_module, paddle_layer)
    started, timings = time.perf_counter(), {}
    runs = _passes(torch_module, paddle_layer, inputs, truth, train, timings)
    t32, p32 = runs["torch32"], runs["paddle32"]
    modules = pair_modules(t32.names, p32.names, torch_first_call=t32.first_call, paddle_first_call=p32.first_call,
                           rename=rename, pairing=pairing)
    calls, torch_only, paddle_only = pair_calls(t32.keys, p32.keys, modules)
    (torch_only, declared_t), (paddle_only, declared_p) = (split_declared(torch_only, declared, "torch"),
                                                           split_declared(paddle_only, declared, "paddle"))
    rows = _output_rows(calls, runs)
    params, params_torch_only, params_paddle_only = compare_parameters(torch_module, paddle_layer, modules)
    notes = _notes(torch_module, paddle_layer, truth)
    stats: list[dict] = []
    if train:
        pairs = _batchnorm_pairs(torch_module, paddle_layer, modules)
        stats = running_stat_rows(pairs, runs)
        notes += batchnorm_notes(pairs)
    gradients: dict = {}
    if backward:
        gradients = compare_backward(torch_module, paddle_layer, inputs, modules=modules, truth=truth, train=train,
                                     seed=projection_seed, timings=timings)
        notes.append(LOSS_NOTE.format(seed=projection_seed))
    timings["total_s"] = time.perf_counter() - started
    settings = {"truth": truth, "pairing": pairing, "train": train, "backward": backward, "rename": rename,
                "unpaired_ok": list(declared), "precision": precision,
                "structure_bound": STRUCTURE_SCALED_FP64 if truth == "fp64" else FP32_SCALED_NO_TRUTH,
                "ratio_limit": TRUTH_RATIO_LIMIT, "floor": TRUTH_FLOOR_SCALED}
    return Comparison(rows=rows, unpaired_torch=torch_only, unpaired_paddle=paddle_only, parameters=params,
                      parameters_unpaired_torch=params_torch_only, parameters_unpaired_paddle=params_paddle_only,
                      running_stats=stats, modules=[m.__dict__ for m in modules], notes=notes, settings=settings,
                      timings=timings, gradients=gradients, unpaired_declared=declared_t + declared_p)


def _batchnorm_pairs(torch_module, paddle_layer, modules) -> list[tuple]:
    tb, pb = torch_batchnorms(torch_module), paddle_batchnorms(paddle_layer)
    return [(m.torch, m.paddle, tb[m.torch], pb[m.paddle]) for m in modules if m.torch in tb and m.paddle in pb]


def _notes(torch_module, paddle_layer, truth: str) -> list[str]:
    notes = []
    td = dropout_names(torch_module.named_modules())
    pd = dropout_names(paddle_layer.named_sublayers(include_self=True))
    if td or pd:
        notes.append(f"Dropout inactive on both sides (eval mode: random masks cannot match across frameworks): "
                     f"{len(td)} torch module(s), {len(pd)} Paddle layer(s)")
    if truth == "none":
        notes.append(f"no float64 truth (truth='none'): each output is judged by its float32 scaled error against "
                     f"torch, at most {FP32_SCALED_NO_TRUTH:g}; this cannot tell a port bug from float32 rounding")
    return notes
