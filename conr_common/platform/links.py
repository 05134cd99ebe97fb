"""A file placed under a second name without writing its bytes again: a hard link, or a copy where a link cannot be
made. Used where large files that are only ever read (exported graphs, weight files) are needed in another folder:
the toolkit replaces such a file by renaming a finished temporary over it (`conr_common.platform.atomic`), never by
writing into it, so the files sharing it never change under each other.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["link_or_copy"]


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """`dst` as a hard link to `src` (no bytes written), or a copy of it (with its times and mode, as a link has them)
    where the two are on different file systems or the file system has no hard links. FileNotFoundError when `src`
    does not exist (the caller decides: a cache entry removed meanwhile, say)."""
    try:
        os.link(src, dst)
    except FileNotFoundError:
        raise
    except OSError:
        shutil.copy2(src, Path(dst))
