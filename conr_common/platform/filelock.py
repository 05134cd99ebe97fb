"""An exclusive advisory lock on a file, shared by processes on one machine (and on file systems with working
`flock`, such as NFSv4 and local disks): the first process in does the work, the others wait and reuse it."""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["exclusive_lock"]


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold `flock(LOCK_EX)` on `path` (created if missing, never deleted: deleting a lock file races with a waiter
    that already opened it) for the duration of the block. The lock dies with the process, so a killed holder
    never leaves it taken."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
