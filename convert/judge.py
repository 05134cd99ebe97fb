"""The verdicts of the parity report (`python -m convert verify`): the tolerances per dtype and stage, a layer
output or the final RGBA against them, the float64 referee's verdict (`within_truth`, from portcheck.verdicts) and the report's verdicts
(`verdicts`). Pure functions of numbers.
"""
from __future__ import annotations

import numpy as np

from conr_common.verification.compare import diff
from conr_common.verification.tolerances import stage_of
from portcheck.metrics import truth_distances
from portcheck.verdicts import within_truth

__all__ = ["tolerances_for", "within_truth", "accuracy_row", "diff_row", "within", "judge", "numerics_ok",
           "truth_errors", "verdicts"]


def tolerances_for(dtype: str) -> dict:
    """The tolerances of a report, per dtype: the suite's numbers (conr_common/verification/tolerances.py, reasons there).

    layer: per stage (udpparsernet, target_pose_encoder, shader, rgbadecodernet), the scaled error (max abs /
      max |reference|) allowed for any of its layer outputs, error carried from upstream included;
    local: the same bounds for one leaf layer run alone on the reference's input (--single-step). A local error over
      it is a port error in that very layer; small local errors under a failing layer mean error carried in;
    rgba: max abs error of the final premultiplied RGBA in [0, 1] (the suite's RGBA_ATOL);
    parameter: max abs difference of a weight tensor after rename (the conversion is bit-exact);
    truth_ratio, truth_floor: the float64 referee's verdict (`within_truth`), which replaces layer and rgba
      whenever the referee runs.
    """
    from conr_common.verification import tolerances as t

    truth = {"truth_ratio": t.TRUTH_RATIO_LIMIT, "truth_floor": t.TRUTH_FLOOR_SCALED}
    if dtype == "float64":
        stages = {stage: t.FEATURE_SCALED_FP64 for stage in t.STAGE_SCALED_FP32}
        return {"layer": stages, "local": dict(stages), "rgba": t.RGBA_ATOL_FP64, "parameter": 0.0, **truth}
    return {"layer": dict(t.STAGE_SCALED_FP32), "local": dict(t.STAGE_SCALED_FP32), "rgba": t.RGBA_ATOL_FP32,
            "parameter": 0.0, **truth}


def accuracy_row(truth: np.ndarray, torch_out: np.ndarray, paddle_out: np.ndarray) -> dict:
    """Max abs errors of torch fp32 and Paddle against the float64 truth, and their ratio (Paddle's excess)."""
    et = diff(truth, torch_out).max_abs
    ep = diff(truth, paddle_out).max_abs
    return {"torch_fp32_vs_fp64": et, "paddle_fp32_vs_fp64": ep, "ratio": ep / et if et > 0 else float("inf")}


def diff_row(ref: np.ndarray, other: np.ndarray) -> dict:
    if ref.shape != other.shape:
        return {"shape": list(ref.shape), "paddle_shape": list(other.shape), "error": "shape mismatch"}
    return diff(ref, other).as_dict()


def within(row: dict | None, metric: str, tol: float) -> bool:
    if row is None or "error" in row:
        return False
    value = row[metric]
    return bool(np.isfinite(value) and value <= tol)


def judge(rows: list[dict], ref_rgba: np.ndarray, pd_rgba: np.ndarray, tol: dict) -> dict:
    """Set each row's verdict (against the truth when the row has one, else its stage's fixed bound) and return the
    final RGBA's row judged by the fixed RGBA bound."""
    for row in rows:
        stage = stage_of(row["key"])
        row["tolerance"] = tol["layer"][stage]
        row["metric"] = "scaled"
        if "truth" in row:
            tr = row["truth"]
            row["ok"] = row["paired"] and within_truth(tr["paddle"], tr["torch"], tol["truth_ratio"], tol["truth_floor"])
        else:
            row["ok"] = row["paired"] and within(row, "scaled", row["tolerance"])
        if "local" in row:
            row["local"]["tolerance"] = tol["local"][stage]
            row["local"]["ok"] = within(row["local"], "scaled", row["local"]["tolerance"])
    render = diff_row(ref_rgba, pd_rgba)
    render.update({"key": "render", "metric": "max_abs", "tolerance": tol["rgba"]})
    render["ok"] = within(render, "max_abs", tol["rgba"])
    return render


def numerics_ok(rows: list[dict], render: dict) -> bool:
    """Every paired layer output and the final RGBA within their bounds (unpaired layers are not a numeric matter)."""
    return render["ok"] and all(r["ok"] for r in rows if r["paired"])


def truth_errors(truth, torch_out: np.ndarray, paddle_out: np.ndarray) -> dict:
    """Scaled errors of torch fp32 and Paddle against the float64 truth of one layer output, and their ratio."""
    from portcheck.record import torch_to_numpy

    return truth_distances(torch_to_numpy(truth), torch_out, paddle_out)


def verdicts(rows: list[dict], params: list[dict], tol: dict, ref_rgba: np.ndarray, pd_rgba: np.ndarray, *,
             truth_rgba: np.ndarray | None = None, predictors: dict | None = None,
             unpaired: list | tuple = ()) -> dict:
    """Every verdict of a report, in torch execution order: against the float64 truth when there is one
    (`truth_rgba`), else fixed tolerances; each weight tensor within `tol["parameter"]` and of the same dtype on both
    sides. `predictors` (the predictor's accuracy figures) join the accuracy row; any `unpaired` Paddle layer fails
    the report. Returns render, accuracy, first (failing layer), first_local, bad_params and passed."""
    render = judge(rows, ref_rgba, pd_rgba, tol)
    accuracy = None
    if truth_rgba is not None:
        accuracy = accuracy_row(truth_rgba, ref_rgba, pd_rgba)
        accuracy.update(predictors or {})
        # with a referee, the final RGBA is judged like every layer: against torch's own float32 error
        render["ok"] = within_truth(accuracy["paddle_fp32_vs_fp64"], accuracy["torch_fp32_vs_fp64"],
                                    tol["truth_ratio"], tol["truth_floor"])
        render["judged_by"] = "float64 truth"
    for p in params:
        p["ok"] = p["max_abs"] <= tol["parameter"] and p["torch_dtype"] == p["paddle_dtype"]
    first = next((r for r in rows if not r["ok"]), None)
    first_local = next((r for r in rows if "local" in r and not r["local"]["ok"]), None)
    bad_params = [p for p in params if not p["ok"]]
    passed = not bad_params and first is None and first_local is None and render["ok"] and not unpaired
    return {"render": render, "accuracy": accuracy, "first": first, "first_local": first_local,
            "bad_params": bad_params, "passed": passed}
