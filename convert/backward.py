"""CoNR's backward comparison (`python -m convert verify --backward`): portcheck's generic gradient comparison
(`portcheck.backward.compare_backward`) run on the four networks through one differentiable inference step.

The step is the renderer's, with gradients: parse the sheet, encode the target pose, shade, premultiply (the
`render` methods are `no_grad`, so `shade(parse_sheet(...), encode_target(...))` is called directly). On the
Paddle side the sheet is parsed by the model's own parser in the model's dtype (`precision="float32"`): the float64
parser copy the renderer uses for inference is a copy, and its parameters would not receive the gradients.
"""
from __future__ import annotations

from conr_common.contract.config import NETWORK_NAMES

__all__ = ["torch_step", "paddle_step", "conr_backward", "backward_lines"]


def torch_step(model, sheet, xyz, alpha):
    """Premultiplied RGBA of the torch reference, differentiable."""
    return model.shade(model.parse_sheet(sheet), model.encode_target(xyz, alpha))


def paddle_step(model, sheet, xyz, alpha):
    """Premultiplied RGBA of the Paddle port, differentiable (the sheet parsed by the model's own parser)."""
    return model.shade(model.parse_sheet(sheet, precision="float32"), model.encode_target(xyz, alpha))


def conr_backward(tm, pm, inputs: tuple, *, truth: str = "fp64", seed: int = 0, timings: dict | None = None) -> dict:
    """Gradient rows of CoNR (sheet, xyz, alpha as float numpy arrays), with the per-network figures."""
    from portcheck.backward import compare_backward, gradient_summary

    g = compare_backward(tm, pm, inputs, truth=truth, seed=seed, calls=(torch_step, paddle_step), timings=timings)
    g["summary"] = gradient_summary(g)
    g["networks"] = {}
    for net in NETWORK_NAMES:
        rows = [r for r in g["parameters"] if r["torch"].startswith(net + ".")]
        sub = gradient_summary({"layers": [], "parameters": rows, "inputs": []})
        g["networks"][net] = {"parameters": len(rows), "structure_failing": sub["structure_failing"],
                              "rows_above_ratio_limit": len(sub["rows_above_ratio_limit"]),
                              "median_parameter_ratio": sub["median_parameter_ratio"],
                              "worst_fp64_scaled": sub["worst_fp64_scaled"]}
    return g


def backward_lines(g: dict) -> list[str]:
    """The verdict lines `convert verify --backward` prints."""
    from portcheck.backward import gradient_failure_line, kink_lines

    s = g["summary"]
    median = "-" if s["median_parameter_ratio"] is None else f"{s['median_parameter_ratio']:.3f}"
    lines = [f"backward {'PASS' if s['passed'] else 'FAIL'}: {s['layer_gradients']} layer-output, "
             f"{s['parameter_gradients']} parameter, {s['input_gradients']} input gradients; structure failing "
             f"{s['structure_failing']} (kinks {len(s['kinks'])}, rows following them {s['rows_following_kinks']}); "
             f"precision: median over parameters of Paddle's fp32 gradient distance to the float64 truth over "
             f"torch's {median} (limit {s['median_ratio_limit']}); rows above the per-row limit (information) "
             f"{len(s['rows_above_ratio_limit'])}"]
    lines += [f"kink: {line}" for line in kink_lines(g)]
    if not s["passed"]:
        lines.append(gradient_failure_line(g, g["structure_bound"]))
    return lines
