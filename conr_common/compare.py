"""Element-wise comparison of two arrays (never means): max abs, max rel, mean abs, and error per unit of scale."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

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


def pixel_agreement(reference_u8: np.ndarray, other_u8: np.ndarray) -> tuple[float, int]:
    """(fraction of identical uint8 values, largest difference in levels)."""
    if reference_u8.shape != other_u8.shape:
        raise ValueError(f"shape mismatch: {reference_u8.shape} vs {other_u8.shape}")
    d = np.abs(reference_u8.astype(np.int16) - other_u8.astype(np.int16))
    return float(np.mean(d == 0)), int(d.max()) if d.size else 0


def psnr_db(reference: np.ndarray, other: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical arrays)."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(other, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(peak * peak / mse))
