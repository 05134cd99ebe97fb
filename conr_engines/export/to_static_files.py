"""The source files `paddle.jit.to_static` writes while it translates a layer, removed once an export is done.

Paddle 3.3 writes each translated function to `~/.cache/paddle/to_static_tmp/<pid>/` (paddle/jit/dy2static/utils.py,
`get_temp_dir`) and never removes the folder: every export (the predictor's graphs, the ONNX export, the demo) left
one folder per process behind (issue 23, finding 19). Only this process's folder is touched; Paddle creates it
again if a later trace needs it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["to_static_folder", "removing_to_static_files"]


def to_static_folder(pid: int | None = None) -> Path:
    """The folder Paddle's to_static writes its translated sources to for process `pid` (default: this one)."""
    return Path(os.path.expanduser("~/.cache")) / "paddle" / "to_static_tmp" / str(os.getpid() if pid is None else pid)


@contextlib.contextmanager
def removing_to_static_files() -> Iterator[None]:
    """Run the body (a trace and save), then remove this process's to_static folder, whether the body succeeded or
    not."""
    try:
        yield
    finally:
        shutil.rmtree(to_static_folder(), ignore_errors=True)
