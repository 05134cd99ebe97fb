"""Optimizer steps compared: `compare_steps(torch_module, paddle_layer, inputs, spec)` trains copies of both sides
for a few steps with the same optimizer (`portcheck.optim`) and compares every parameter's update against a float64
truth, like the forward verdicts.

The loss is a fixed random projection of the outputs, sum(out * R) with R ~ N(0, 1/n) drawn from `seed`: every
output element feeds it, and its gradient does not vanish at any point. Five runs from the same weights (moved into
the Paddle copy by `portcheck.transfer`): torch float32, torch float64 with the spec (torch's truth), torch float64
with the spec as Paddle computes it (`paddle_effective`: Paddle's truth; the same run when nothing is rounded),
Paddle float32 and Paddle float64. What is compared is each parameter's update, p_after - p_before (the parameters
themselves are dominated by their initial values, which are equal by construction):

- structure: Paddle float64 against Paddle's truth, scaled error at most STEP_STRUCTURE_FP64;
- precision: Paddle float32's distance to Paddle's truth at most TRUTH_RATIO_LIMIT x torch float32's distance to
  torch's truth + TRUTH_FLOOR_SCALED (the forward pass's rule, `portcheck.verdicts.within_truth`) + the error
  Paddle's float32 kernel is expected to add (`portcheck.optim.fp32_allowance`: Adam's float32 bias correction);
- convention: torch's truth against Paddle's truth (Paddle's float32 kernel attributes), reported, not judged;
- settings: each optimizer read back and checked against the spec (`portcheck.optim.settings_rows`), so a wrong
  epsilon or momentum is named, not only seen in the numbers.

`paddle_spec` builds the Paddle side from another spec (a planted fault); the truths always follow `spec`.
Models are run in eval mode (Dropout off, BatchNorm on its running statistics) and are not changed.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np

from portcheck.metrics import scaled_error
from portcheck.optim import OptimizerSpec, fp32_allowance, paddle_effective, paddle_optimizer, settings_rows, torch_optimizer
from portcheck.transfer import transfer_weights
from portcheck.verdicts import TRUTH_FLOOR_SCALED, TRUTH_RATIO_LIMIT, within_structure, within_truth

__all__ = ["STEP_STRUCTURE_FP64", "projection", "compare_steps"]

# Float64 updates of an exact port differ only by float64 rounding: 1e-16..1e-15 scaled on the small pairs of
# parity_tests/test_training.py (measured, every optimizer kind) once Paddle's float32 kernel attributes are taken
# into account (`paddle_effective`). The update of a deep network carries the float64 rounding of its gradients
# too: the forward structure bound STRUCTURE_SCALED_FP64 (1e-8, CoNR's worst layer 4.6e-10) covers it. A float32
# hyper-parameter not accounted for (momentum 0.9 -> 0.89999998) shows at 1.6e-8, an epsilon of 1e-6 for 1e-8 at
# 1e-6 and more: both fail.
STEP_STRUCTURE_FP64 = 1e-8


def projection(shapes: list[tuple[int, ...]], seed: int) -> list[np.ndarray]:
    """The loss's fixed random projections, one per output shape: N(0, 1/n) in float64."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) / np.sqrt(max(1, int(np.prod(s)))) for s in shapes]


def _outputs(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _torch_steps(module, inputs: tuple, spec: OptimizerSpec, steps: int, dtype: str, proj: list[np.ndarray]):
    import torch

    module = copy.deepcopy(module).to(getattr(torch, dtype)).eval()
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch_optimizer(spec, params)
    x = [torch.from_numpy(np.ascontiguousarray(a.astype(dtype))) for a in inputs]
    r = [torch.from_numpy(p.astype(dtype)) for p in proj]
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = sum((o * w).sum() for o, w in zip(_outputs(module(*x)), r))
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    final = {n: p.detach().double().numpy().copy() for n, p in module.named_parameters()}
    return final, losses, opt


def _paddle_steps(layer, inputs: tuple, spec: OptimizerSpec, steps: int, dtype: str, proj: list[np.ndarray]):
    import paddle

    layer = copy.deepcopy(layer)
    layer.to(dtype=dtype)
    layer.eval()
    params = [p for p in layer.parameters() if not p.stop_gradient]
    opt = paddle_optimizer(spec, params)
    x = [paddle.to_tensor(np.ascontiguousarray(a.astype(dtype))) for a in inputs]
    r = [paddle.to_tensor(p.astype(dtype)) for p in proj]
    losses = []
    for _ in range(steps):
        loss = sum((o * w).sum() for o, w in zip(_outputs(layer(*x)), r))
        loss.backward()
        opt.step()
        opt.clear_grad(set_to_zero=False)
        losses.append(float(loss))
    final = {n: p.numpy().astype(np.float64) for n, p in layer.named_parameters()}
    return final, losses, opt


def _runs(torch_module, paddle_layer, inputs, spec, paddle_spec, steps, proj) -> dict:
    runs = {"torch32": _torch_steps(torch_module, inputs, spec, steps, "float32", proj),
            "torch64": _torch_steps(torch_module, inputs, spec, steps, "float64", proj)}
    effective = paddle_effective(spec)
    runs["torch64_paddle_conventions"] = (runs["torch64"] if effective == spec else
                                          _torch_steps(torch_module, inputs, effective, steps, "float64", proj))
    runs["paddle32"] = _paddle_steps(paddle_layer, inputs, paddle_spec, steps, "float32", proj)
    runs["paddle64"] = _paddle_steps(paddle_layer, inputs, paddle_spec, steps, "float64", proj)
    return runs


def _row(move, start: np.ndarray, runs: dict, floor: float) -> dict:
    """One parameter's update in each run (torch layout) and its verdicts."""
    def update(key: str) -> np.ndarray:
        side, name = ("torch", move.torch_name) if key.startswith("torch") else ("paddle", move.paddle_name)
        value = runs[key][0][name]
        return (value.T if side == "paddle" and move.transposed else value) - start

    u = {k: update(k) for k in runs}
    truth_t, truth_p = u["torch64"], u["torch64_paddle_conventions"]
    row = {"torch": move.torch_name, "paddle": move.paddle_name, "shape": list(start.shape),
           "update_max_abs": float(np.abs(truth_t).max()) if truth_t.size else 0.0,
           "fp64_scaled": scaled_error(truth_p, u["paddle64"]),
           "convention_scaled": scaled_error(truth_t, truth_p),
           "torch_fp32_vs_truth": scaled_error(truth_t, u["torch32"]),
           "paddle_fp32_vs_truth": scaled_error(truth_p, u["paddle32"]),
           "fp32_scaled": scaled_error(u["torch32"], u["paddle32"])}
    row["structure"] = within_structure(row["fp64_scaled"], STEP_STRUCTURE_FP64)
    row["precision"] = within_truth(row["paddle_fp32_vs_truth"], row["torch_fp32_vs_truth"], floor=floor)
    return row


def compare_steps(torch_module, paddle_layer, inputs, spec: OptimizerSpec, *, steps: int = 3,
                  paddle_spec: OptimizerSpec | None = None, rename: Mapping[str, str] | None = None,
                  seed: int = 0) -> dict:
    """Train copies of both sides `steps` steps with `spec` (Paddle with `paddle_spec`, default `spec`) and judge
    every trainable parameter's update (module docstring). Returns a JSON-ready dict: rows, settings, summary."""
    import torch

    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    paddle_layer = copy.deepcopy(paddle_layer)
    moves = transfer_weights(torch_module, paddle_layer, rename).moves
    with torch.no_grad():
        shapes = [tuple(o.shape) for o in _outputs(copy.deepcopy(torch_module).eval()(
            *(torch.from_numpy(np.ascontiguousarray(a.astype("float32"))) for a in inputs)))]
    runs = _runs(torch_module, paddle_layer, inputs, spec, paddle_spec or spec, steps, projection(shapes, seed))
    start = {n: p.detach().double().numpy() for n, p in torch_module.named_parameters()}
    floor = TRUTH_FLOOR_SCALED + fp32_allowance(spec)
    rows = [_row(m, start[m.torch_name], runs, floor) for m in moves if m.torch_name in start]
    settings = settings_rows(spec, runs["torch32"][2], runs["paddle32"][2])
    return _summarise(spec, paddle_spec or spec, steps, rows, settings, runs, floor)


def _summarise(spec, paddle_spec, steps, rows, settings, runs, floor: float) -> dict:
    worst = lambda key: max((r[key] for r in rows), default=0.0)  # noqa: E731
    first = next((r for r in rows if not r["structure"]), None)
    bad_settings = [s for s in settings if not s["ok"]]
    return {
        "spec": spec.__dict__ | {"betas": list(spec.betas)}, "paddle_spec_differs": paddle_spec != spec,
        "steps": steps, "rows": rows, "settings": settings,
        "losses": {k: v[1] for k, v in runs.items()},
        "structure": first is None, "precision": all(r["precision"] for r in rows),
        "settings_ok": not bad_settings,
        "passed": first is None and all(r["precision"] for r in rows) and not bad_settings,
        "first_diverging_parameter": first["torch"] if first else None,
        "settings_differing": [f"{s['setting']}: spec {s['spec']}, torch {s['torch']}, Paddle {s['paddle']}"
                               for s in bad_settings],
        "worst": {k: worst(k) for k in ("fp64_scaled", "convention_scaled", "torch_fp32_vs_truth",
                                        "paddle_fp32_vs_truth", "fp32_scaled")},
        "ratio_limit": TRUTH_RATIO_LIMIT, "floor": floor, "structure_bound": STEP_STRUCTURE_FP64,
    }
