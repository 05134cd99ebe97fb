"""Element-wise comparison of two arrays (never means): max abs, max rel, mean abs, and the scaled error (max abs /
max |reference|, comparable across layers of any scale); and the distances of two float32 results to a float64
truth. Pure numpy; `conr_common.verification.compare` re-exports `Diff` and `diff`."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["REL_FLOOR", "Diff", "diff", "scaled_error", "ratio", "truth_distances"]

# Relative error is taken against max(|ref|, REL_FLOOR) so that near-zero references do not make it meaningless.
REL_FLOOR = 1e-6


@dataclass(frozen=True)
class Diff:
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    mean_abs: float
    scale: float  # max |reference|

    @property
    def scaled(self) -> float:
        """max abs error divided by the reference's max magnitude: comparable across layers of any scale."""
        return self.max_abs / self.scale if self.scale > 0 else self.max_abs

    def as_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape), "scaled": self.scaled}

    def __str__(self) -> str:
        return (f"shape {list(self.shape)} max_abs {self.max_abs:.3e} max_rel {self.max_rel:.3e} "
                f"mean_abs {self.mean_abs:.3e} scaled {self.scaled:.3e}")


def diff(reference: np.ndarray, other: np.ndarray) -> Diff:
    """Compare two arrays of the same shape element by element (float64 arithmetic); shapes must match exactly."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: reference {a.shape} vs other {b.shape}")
    if a.size == 0:
        return Diff(a.shape, 0.0, 0.0, 0.0, 0.0)
    d = np.abs(a - b)
    rel = d / np.maximum(np.abs(a), REL_FLOOR)
    return Diff(a.shape, float(d.max()), float(rel.max()), float(d.mean()), float(np.abs(a).max()))


def scaled_error(reference: np.ndarray, other: np.ndarray) -> float:
    """`diff(reference, other).scaled`: max abs error / max |reference|."""
    return diff(reference, other).scaled


def ratio(paddle_err: float, torch_err: float) -> float:
    """Paddle's error over torch's; 0 when both are exact, infinite when only torch is."""
    if torch_err > 0:
        return paddle_err / torch_err
    return 0.0 if paddle_err == 0 else float("inf")


def truth_distances(truth: np.ndarray, torch_out: np.ndarray, paddle_out: np.ndarray) -> dict:
    """Scaled errors of torch fp32 and Paddle fp32 against the float64 truth of one output, and their ratio
    (Paddle's excess error): {"torch", "paddle", "ratio"}, or {"error": "shape mismatch"}."""
    t = np.asarray(truth)
    if t.shape != np.shape(paddle_out) or t.shape != np.shape(torch_out):
        return {"error": "shape mismatch"}
    et, ep = scaled_error(t, torch_out), scaled_error(t, paddle_out)
    return {"torch": et, "paddle": ep, "ratio": ratio(ep, et)}
