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
def exclusive_lock(path: str | os.PathLike, wait: bool = True) -> Iterator[bool]:
    """Hold `flock(LOCK_EX)` on `path` (created if missing, never deleted: deleting a lock file races with a waiter
    that already opened it) for the duration of the block, and yield True. The lock dies with the process, so a
    killed holder never leaves it taken. wait=False: when another holder has it, yield False at once (the block
    runs without the lock)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
