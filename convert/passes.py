"""The model passes of the parity report (`python -m convert verify`): both models built from the same weights, the
torch pass, the float64 truth pass, the Paddle pass (eager, or the predictor), each recording every named layer's
output through `portcheck.record`, and `--single-step`'s leaf layers run alone on the reference's inputs.
"""
from __future__ import annotations

import contextlib
import tempfile
import time

import numpy as np

from conr_common.verification.compare import diff

from convert.judge import diff_row, truth_errors

__all__ = ["build_models", "paddle_place", "torch_pass", "truth_pass", "paddle_pass", "predictor_accuracy",
           "single_step"]


def build_models(torch, paddle, torch_states, paddle_states, dtype: str, device: str):
    from conr_paddle.model import load_networks, unloaded
    from conr_torch_ref.model import load_networks as load_torch_networks
    from conr_torch_ref.model import unloaded as torch_unloaded

    tm = load_torch_networks(torch_unloaded(), torch_states)
    pm = load_networks(unloaded(), paddle_states)
    if dtype == "float64":
        tm = tm.double()
        pm.to(dtype="float64")
    if device == "gpu":
        tm = tm.to("cuda")
    tm.eval()
    pm.eval()
    return tm, pm


@contextlib.contextmanager
def paddle_place(paddle, device: str):
    before = paddle.get_device()
    paddle.set_device("gpu:0" if device == "gpu" else "cpu")
    try:
        yield
    finally:
        paddle.set_device(before)


def torch_pass(torch, tm, sheet, xyz, alpha, device: str, *, keep_inputs: bool):
    from portcheck.record import TorchRecorder

    dev = "cuda" if device == "gpu" else "cpu"
    T = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)  # noqa: E731
    rec = TorchRecorder(tm, keep_leaf_inputs=keep_inputs)
    try:
        with torch.no_grad():
            rgba = tm.render(tm.parse_sheet(T(sheet)), T(xyz), T(alpha))
    finally:
        rec.remove()
    return rec.calls, rgba.detach().cpu().numpy()


def truth_pass(torch, tm, sheet, xyz, alpha, device: str, say, timings: dict):
    """The referee: the torch reference run in float64 on the same (widened) inputs; its layer calls and RGBA."""
    from conr_torch_ref.model import float64_copy

    say("float64 truth pass (torch reference in float64, the referee)")
    t0 = time.perf_counter()
    tm64 = float64_copy(tm)
    out = torch_pass(torch, tm64, *(a.astype("float64") for a in (sheet, xyz, alpha)), device, keep_inputs=False)
    del tm64
    timings["truth_pass_s"] = time.perf_counter() - t0
    return out


def paddle_pass(paddle, pm, calls, sheet, xyz, alpha, truth_calls=None):
    """Run Paddle with hooks comparing each output to the reference (and to the float64 truth, when given) as it
    appears; rows in torch order. The sheet is parsed as the renderer parses it (CoNR.parse_sheet: in float64 on a
    copy of the parser), with the copy's layers hooked under the parser's names."""
    from conr_paddle.model import sheet_parser

    from portcheck.record import PaddleRecorder, output_keys, torch_to_numpy

    by_key = {c.key: c for c in calls}
    truth_by_key = {c.key: c for c in truth_calls} if truth_calls is not None else {}
    results: dict[str, dict] = {}
    paddle_only: list[str] = []

    def on_call(name: str, call: int, tensors: list) -> None:
        key = f"{name}#{call}"
        ref = by_key.get(key)
        if ref is None:
            paddle_only.append(key)
            return
        if len(tensors) != len(ref.outputs):
            results[key] = {"error": f"{len(ref.outputs)} output tensor(s) in torch, {len(tensors)} in Paddle"}
            return
        truth = truth_by_key.get(key)
        for i, (k, r, p) in enumerate(zip(output_keys(key, len(tensors)), ref.outputs, tensors)):
            theirs = torch_to_numpy(r)
            ours = p.numpy().astype(theirs.dtype, copy=False)  # the float64 sheet parse, at the reference's dtype
            results[k] = diff_row(theirs, ours)
            if truth is not None and "error" not in results[k]:
                results[k]["truth"] = truth_errors(truth.outputs[i], theirs, ours)

    P = paddle.to_tensor
    sheet_t = P(sheet)
    parser = sheet_parser(pm.udpparsernet, "float64", sheet_t.dtype)  # what parse_sheet would parse with
    recorders = [PaddleRecorder(pm, on_call)]
    if parser is not pm.udpparsernet:  # a transient copy: hooked under the parser's names
        holder = paddle.nn.Layer()
        holder.add_sublayer("udpparsernet", parser)
        recorders.append(PaddleRecorder(holder, on_call))
    try:
        with paddle.no_grad():
            rgba = pm.render(pm.parse_sheet(sheet_t, parser=parser), P(xyz), P(alpha))
    finally:
        for rec in recorders:
            rec.remove()

    rows = []
    for index, c in enumerate(calls):
        keys = output_keys(c.key, len(c.outputs)) if c.outputs else []
        for k, t in zip(keys, c.outputs):
            found = results.get(k) or results.get(c.key)
            row = {"key": k, "layer": c.name, "call": c.call, "type": c.type, "leaf": c.leaf,
                   "network": c.network, "call_order": index, "paired": found is not None}
            row.update(found if found is not None else {"shape": list(t.shape), "error": "no Paddle output for this call"})
            rows.append(row)
    for i, row in enumerate(rows):
        row["index"] = i
    return rows, paddle_only, rgba.numpy()


def predictor_accuracy(pm, sheet, xyz, alpha, truth_rgba) -> dict:
    """Final RGBA of the Paddle Inference predictor against the float64 truth: fp32, and bf16 where supported."""
    from conr_common.verification.compare import psnr_db
    from conr_common.platform.cpu import bf16_support
    from conr_engines.inference.predictor import PredictorRunner

    out = {}
    precisions = ["fp32"] + (["bf16"] if bf16_support()[0] else [])
    with tempfile.TemporaryDirectory(prefix="conr-verify-cache-") as cache:
        for precision in precisions:
            # the export cache is this temporary folder: no other weights can share it, so a fixed key will do
            runner = PredictorRunner(pm, "verify", size=sheet.shape[-1], views=sheet.shape[0],
                                     precision=precision, cache_dir=cache)
            rgba = runner.render(runner.parse_sheet(sheet), xyz, alpha)
            out[f"predictor_{precision}_vs_fp64"] = diff(truth_rgba, rgba).max_abs
            out[f"predictor_{precision}_psnr_db"] = psnr_db(truth_rgba, rgba)
            del runner
    if "predictor_bf16_vs_fp64" not in out:
        out["predictor_bf16"] = "not run: " + bf16_support()[1]
    return out


def _to_paddle(obj, torch, paddle):
    if isinstance(obj, torch.Tensor):
        return paddle.to_tensor(obj.detach().cpu().numpy())
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_paddle(o, torch, paddle) for o in obj)
    return obj


def single_step(torch, paddle, pm, calls, rows) -> None:
    """Each Paddle leaf layer alone on the reference's recorded arguments: its local error (row["local"])."""
    from portcheck.record import flatten_tensors, output_keys, torch_to_numpy

    layers = dict(pm.named_sublayers())
    row_by_key = {r["key"]: r for r in rows}
    with paddle.no_grad():
        for c in calls:
            if not c.leaf or c.args is None or not c.outputs:
                continue
            layer = layers.get(c.name)
            if layer is None:
                continue
            out = layer(*_to_paddle(c.args, torch, paddle), **_to_paddle(c.kwargs, torch, paddle))
            tensors = flatten_tensors(out, lambda x: isinstance(x, paddle.Tensor))
            for k, r, p in zip(output_keys(c.key, len(c.outputs)), c.outputs, tensors):
                if k in row_by_key:
                    row_by_key[k]["local"] = diff_row(torch_to_numpy(r), p.numpy())
