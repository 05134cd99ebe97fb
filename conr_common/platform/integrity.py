"""Checksums of files this toolkit writes and later trusts: the compiled operator library and the exported graphs
in the cache (issue #13: a library planted in the cache used to be loaded, and a damaged graph file crashed every
later run until it was deleted by hand).

The writer records the sha256 of each artifact right after producing it; the reader recomputes them before loading
and treats any difference (a missing record, a missing file, another hash) as "not ours": rebuild it.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["sha256_file", "artifact_hashes", "artifact_problem"]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (hashlib releases the GIL on large updates)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def artifact_hashes(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """{name: sha256} of the files `names` (relative to `folder`): the record a writer keeps."""
    return {name: sha256_file(Path(folder) / name) for name in names}


def artifact_problem(folder: Path, record: object) -> str | None:
    """Why the files of `folder` do not match `record` (a dict name -> sha256), or None when every one matches."""
    if not isinstance(record, dict) or not record:
        return "no checksum record"
    for name, expected in record.items():
        path = Path(folder) / str(name)
        if not path.is_file():
            return f"{name} is missing"
        try:
            actual = sha256_file(path)
        except OSError as e:
            return f"{name} cannot be read ({e.strerror or e})"
        if actual != expected:
            return f"{name} does not match its checksum"
    return None
