"""Atomic writes for portcheck's reports (portcheck imports no other package of the project, so it has its own
two helpers; the project's full version, with stale-temporary sweeping, is conr_common.platform.atomic): bytes go to a
temporary file in the destination folder and are renamed into place; a report folder is built as a temporary
sibling and its files renamed in only once all of them are complete."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["write_atomic", "write_folder_atomic"]


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary `.<name>.*.tmp` in the same folder (removed on any error)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_folder_atomic(folder: str | os.PathLike, files: Mapping[str, bytes]) -> None:
    """Write every file of `files` (name -> bytes) into `folder`: all are written into a temporary sibling first,
    then the folder is renamed into place (when new) or each file renamed into it (when it exists), so a reader
    never sees a half-written file and a failure leaves nothing new behind."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if not folder.exists():
            os.replace(tmp, folder)
            return
        for name in files:
            os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
