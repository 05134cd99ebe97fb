"""Memory: handing freed heap back to the operating system (glibc keeps the memory that tracing, saving or a dropped
model freed in its own pools, so a long-running process stays at its peak: docs/predictor.md, "Memory"), the
memory this machine has available, and what a render needs by engine and size (refused up front when it does not
fit, instead of being killed by the kernel half-way: issue 23)."""
from __future__ import annotations

import ctypes
import gc
from dataclasses import dataclass

from conr_common.platform.errors import ConrInputError

__all__ = ["return_freed_memory", "available_memory_bytes", "PeakModel", "RENDER_PEAKS", "MEASURED_VIEWS",
           "estimate_render_bytes", "check_render_memory"]

GB = float(1 << 30)


def return_freed_memory() -> None:
    """Collect garbage, then `malloc_trim(0)`: return the heap that is now free to the OS (a no-op where the C
    library is not glibc)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def available_memory_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """The kernel's estimate of memory available to a new process without swapping (MemAvailable), in bytes;
    None where it cannot be read (not Linux)."""
    try:
        with open(meminfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass(frozen=True)
class PeakModel:
    """Peak resident memory of one render process = constant + per_pixel * size^2 (bytes)."""

    constant: float  # model weights, framework, export
    per_pixel: float  # activations and graphs that grow with the working size's square


# Fitted to `python -m parity_tests.bench --memory` (parity_tests/bench_memory.py): peak RSS of one `render` child
# (4 views, 1 frame, --batch 1, a fresh export cache, so exporting the graphs is included), measured 2026-12-03 on the
# project's 2-core AMD EPYC (AVX-512, AVX512-BF16), Paddle 3.3.1, while other work shared the machine:
#   eager        128 px 2.14e9 B, 256 px 2.64e9 B, 512 px 6.34e9 B: least squares a = 1.69e9, b = 17613 B/px^2; a
#                raised by the largest residual (+0.16e9) so that the estimate is at or above every measurement;
#   predictor    128 px 1.91e9 B, 256 px 2.75e9 B (512 px not measured for time): the line through both points;
#   onnxruntime  128 px 3.31e9 B, 256 px 3.31e9 B: the export (paddle2onnx, the 430 MB step graph) sets the peak at
#                both sizes, hiding the size term; the predictor's size term is added to it (an upper bound: the
#                frames' activations come after the export's peak).
# 1024 px was measured for no engine: the estimates (about 19 GB) did not fit in this shared machine's memory.
RENDER_PEAKS = {
    "eager": PeakModel(constant=1.846e9, per_pixel=17_613.0),
    "predictor": PeakModel(constant=1.627e9, per_pixel=17_124.0),
    "onnxruntime": PeakModel(constant=3.310e9, per_pixel=17_124.0),
}
MEASURED_VIEWS = 4


def estimate_render_bytes(engine: str, size: int, views: int, workers: int = 1) -> float:
    """The estimated peak memory of a render (every process of it: `workers` ranks each hold a model). More views
    than were measured scale the size-dependent part with the view count (an upper bound: the decoder's activations
    do not grow with views); fewer views are given the measured figure. --batch > 1 adds to it, unmodelled."""
    model = RENDER_PEAKS[engine]
    view_scale = max(1.0, views / MEASURED_VIEWS)
    return workers * (model.constant + model.per_pixel * size * size * view_scale)


def check_render_memory(engine: str, size: int, views: int, workers: int = 1, available: int | None = None) -> None:
    """ConrInputError when the render's estimate exceeds `available` bytes (default: MemAvailable of this machine;
    nothing is checked where that cannot be read)."""
    available = available_memory_bytes() if available is None else available
    if available is None:
        return
    need = estimate_render_bytes(engine, size, views, workers)
    if need > available:
        ranks = f" x {workers} workers" if workers > 1 else ""
        raise ConrInputError(
            f"--size {size}: a render with --engine {engine} and {views} views{ranks} needs about {need / GB:.1f} GB "
            f"of memory (estimated from measurements, conr_common.platform.memory), but this machine has {available / GB:.1f} "
            f"GB available; use a smaller --size, fewer workers or free some memory")
