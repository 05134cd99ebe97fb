"""Element-wise comparison of two arrays (never means): max abs, max rel, mean abs, and error per unit of scale."""
from __future__ import annotations

import numpy as np

# The element-wise comparison lives in portcheck (framework-neutral, shared with `python -m convert verify-pair`).
from portcheck.metrics import REL_FLOOR, Diff, diff

__all__ = ["REL_FLOOR", "Diff", "diff", "pixel_agreement", "psnr_db"]


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
