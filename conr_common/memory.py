"""Handing freed heap back to the operating system: glibc keeps the memory that tracing, saving or a dropped model
freed in its own pools, so a long-running process stays at its peak (docs/predictor.md, "Memory")."""
from __future__ import annotations

import ctypes
import gc

__all__ = ["return_freed_memory"]


def return_freed_memory() -> None:
    """Collect garbage, then `malloc_trim(0)`: return the heap that is now free to the OS (a no-op where the C
    library is not glibc)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass
