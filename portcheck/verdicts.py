"""The two verdicts of a port comparison, and every tolerance they use, written once with its reason.

structure: the float64 runs of both sides agree to float64 precision (`within_structure`). Anything more is a port
  bug (a wrong epsilon, activation, padding or weight), whatever float32 does.
precision: Paddle's float32 distance to the float64 truth is at most TRUTH_RATIO_LIMIT times torch's own plus
  TRUTH_FLOOR_SCALED (`within_truth`). A pair can be structurally exact and still less precise (a kernel that
  rounds more in float32, a formula with cancellation): the result says which.
Without a truth (`truth="none"`), one fallback verdict: the float32 outputs within FP32_SCALED_NO_TRUTH.
Pure functions of numbers and numpy arrays.
"""
from __future__ import annotations

import math

import numpy as np

from portcheck.metrics import diff, scaled_error, truth_distances

__all__ = ["TRUTH_RATIO_LIMIT", "TRUTH_FLOOR_SCALED", "STRUCTURE_SCALED_FP64", "STRUCTURE_SCALED_FP64_GRADIENTS", "GRADIENT_MEDIAN_RATIO_LIMIT",
           "FP32_SCALED_NO_TRUTH",
           "within_truth", "within_structure", "within_fp32", "judge_outputs", "verdict_of"]

# The float64 referee (the precision verdict; CoNR's `convert verify --truth fp64` and its multi-world tests): a
# layer output fails when Paddle's error against the float64 truth exceeds TRUTH_RATIO_LIMIT times torch fp32's own
# error plus TRUTH_FLOOR_SCALED (scaled). Two float32 runs that round in different orders scatter around each
# other: torch alone, 1 thread against 2 threads, moves its own CoNR RGBA error by 1.2x (7.1e-5 vs 6.1e-5, He-normal
# draw, 128 px / 3 views); single Paddle leaf layers range 0.6-1.5x of torch's rms error. 2x keeps the verdict out
# of that scatter and still fails every planted CoNR fault (misplaced resampling: 1e5x; a weight moved by 1e-2:
# 1e3x; an instance-norm epsilon of 1e-3: 1e2x). The floor is about ten float32 roundings of a value at the
# layer's scale, so layers that torch computes exactly (ReLU, slicing) do not fail on one rounding.
TRUTH_RATIO_LIMIT = 2.0
TRUTH_FLOOR_SCALED = 1e-6

# The structure verdict: both sides in float64, scaled error. An exact port leaves only float64 rounding in a
# different summation order: unit roundoff 1.1e-16 grown by the fan-in and the depth; CoNR's four networks measure
# at most 4.6e-10 (its deepest parser block, float64 instance norms over 1e5 pixels) and torchvision's resnet18 at
# 224 px against paddle.vision's 1.8e-12 (layer4.1.bn1, seed 0). 1e-8 is 20x over the worst of them and 1e4x under
# float32's own unit roundoff (6e-8 relative: one float32 op inside a float64 run shows), let alone a port bug
# (the smallest planted one, a weight moved by 1e-2, gives 1e-4 scaled and more at its layer).
STRUCTURE_SCALED_FP64 = 1e-8

# The structure verdict of gradients (`compare(..., backward=True)`): the same test with a wider bound, because a
# backward pass through train-mode BatchNorm at few values per channel is worse conditioned than any forward pass:
# float64 gradients of mobilenet_v2 (52 train-mode BatchNorms, 3x3 pixels per channel at the end, 2x3x96x96)
# differ by up to 1.8e-8 scaled between the frameworks (BatchNorm scales of features.15/16), resnet18's by 1.0e-11.
# 1e-7 is 5x over the worst of them and still 1e3x under the smallest planted port bug (1e-4 scaled).
STRUCTURE_SCALED_FP64_GRADIENTS = 1e-7

# The precision verdict of gradients (issue 22's rule): the median over the parameter gradients of Paddle's float32
# distance to the float64 truth divided by torch's, at most 1.5. Why a median and not every row: a parameter's
# gradient is one reduction over every pixel of the batch, summed in a kernel-specific order (torch's and Paddle's
# conv backward-weight kernels block differently), so the two float32 errors of one row are two draws of rounding
# noise whose ratio scatters widely on a correct port (measured on CoNR, 128 px, 1 view: single parameter rows from
# 0.3 to 3.0 while the medians are 0.70-1.14). A port that rounds worse in a systematic way moves the median: the
# per-row ratios stay in the report as information (`TRUTH_RATIO_LIMIT` per row), and structure stays per row.
GRADIENT_MEDIAN_RATIO_LIMIT = 1.5

# No truth (`truth="none"`): the float32 outputs of the two sides, scaled, compared directly. Float32 rounding
# differences grow with depth and conditioning: CoNR's stages reach 1.07e-4 on a correct port (conr_common/
# tolerances.py), a 2048-channel Conv2d 1.9e-4 (Paddle's reproduction guide); 1e-3 stays above those and under a
# weight moved by 1e-2 (1e-2 scaled at its layer). This verdict cannot tell a port bug from rounding: the report
# says so and recommends the float64 truth.
FP32_SCALED_NO_TRUTH = 1e-3


def within_truth(paddle_err: float, torch_err: float, ratio_limit: float = TRUTH_RATIO_LIMIT,
                 floor: float = TRUTH_FLOOR_SCALED) -> bool:
    """The referee's verdict: Paddle's error against the float64 truth is at most `ratio_limit` times torch's own
    float32 error plus `floor` (both scaled), so the bound follows the network's conditioning."""
    return bool(math.isfinite(paddle_err) and paddle_err <= ratio_limit * torch_err + floor)


def within_structure(fp64_scaled: float, bound: float = STRUCTURE_SCALED_FP64) -> bool:
    """The structure verdict: the two float64 runs agree to float64 precision (scaled error within `bound`)."""
    return bool(math.isfinite(fp64_scaled) and fp64_scaled <= bound)


def within_fp32(fp32_scaled: float, bound: float = FP32_SCALED_NO_TRUTH) -> bool:
    """The verdict without a truth: the float32 outputs agree within `bound` (scaled)."""
    return bool(math.isfinite(fp32_scaled) and fp32_scaled <= bound)


def judge_outputs(t32: np.ndarray, p32: np.ndarray, t64: np.ndarray | None, p64: np.ndarray | None,
                  structure_bound: float = STRUCTURE_SCALED_FP64) -> dict:
    """The figures and both verdicts of one output (or one running statistic, or one gradient with
    `structure_bound=STRUCTURE_SCALED_FP64_GRADIENTS`)."""
    row = {"shape": list(t32.shape), "paddle_shape": list(p32.shape)}
    if t32.shape != p32.shape or (t64 is not None and (t64.shape != t32.shape or p64.shape != t32.shape)):
        return {**row, "error": "shape mismatch", "structure": False, "precision": None}
    d = diff(t32, p32)
    row.update({"max_abs": d.max_abs, "scaled": d.scaled})
    if t64 is None:
        return {**row, "structure": within_fp32(d.scaled), "precision": None}
    tr = truth_distances(t64, t32, p32)
    fp64 = scaled_error(t64, p64)
    row.update({"torch_fp32_vs_truth": tr["torch"], "paddle_fp32_vs_truth": tr["paddle"], "ratio": tr["ratio"],
                "fp64_scaled": fp64, "structure": within_structure(fp64, structure_bound),
                "precision": within_truth(tr["paddle"], tr["torch"])})
    return row


def verdict_of(row: dict) -> str:
    """"structural" (the float64 runs differ), "less precise" (structurally exact, Paddle's float32 further from
    the truth than allowed) or "exact"."""
    if row.get("kink"):
        return f"kink of {row['kink']['op']}"
    if row.get("follows_kink"):
        return "follows a kink"
    if not row["structure"]:
        return "structural"
    return "less precise" if row["precision"] is False else "exact"
