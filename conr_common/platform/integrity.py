"""Checksums of files this toolkit writes and later trusts: the compiled operator library and the exported graphs
in the cache (issue #13: a library planted in the cache used to be loaded, and a damaged graph file crashed every
later run until it was deleted by hand).

The writer records the sha256 of each artifact right after producing it; the reader checks them before loading (each
file read once per version in a process, `sha256_file_remembered`) and treats any difference (a missing record, a
missing file, another hash) as "not ours": rebuild it.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["sha256_file", "sha256_file_remembered", "artifact_hashes", "artifact_problem"]

# A file changed less than this long ago is hashed anew on every call (`sha256_file_remembered`): file systems stamp
# times from a coarse clock (ext4: one kernel tick, 1-10 ms), so a file rewritten within the tick it was hashed in
# keeps its stamps. Two seconds is the coarsest common stamp (FAT's mtime).
UNSETTLED_NS = 2_000_000_000


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (hashlib releases the GIL on large updates)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _version(st: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file's content may have: device, inode, size, mtime and ctime (ctime is set by the
    kernel on every write, rename or `utime`; user space cannot set it back)."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


# sha256 by file version (`_version`) for `sha256_file_remembered`: this process's memory of what it read, the
# REMEMBERED_FILES most recent versions (a weight set is four files), changed under _DIGESTS_LOCK (the web app
# renders in worker threads).
_DIGESTS: dict[tuple[int, ...], str] = {}
_DIGESTS_LOCK = threading.Lock()
REMEMBERED_FILES = 64


def sha256_file_remembered(path: str | os.PathLike, unsettled_ns: int = UNSETTLED_NS) -> str:
    """`sha256_file`, read once per version of the file (`_version`, whatever path leads to it: a symbolic or hard
    link to a weight file is the same file) in this process: a weight set's identity is asked for by every render
    (the graph cache's key, the resume record), and hashing the four official files (720 MB) took 0.45 s each time
    (2-core AMD EPYC, Zen 5). A file changed within `unsettled_ns` (UNSETTLED_NS; 0 in tests of this function), or
    while it was read, is never remembered."""
    before = os.stat(path)
    version = _version(before)
    remembered = _DIGESTS.get(version)
    if remembered is not None:
        return remembered
    digest = sha256_file(path)
    settled = time.time_ns() - max(before.st_mtime_ns, before.st_ctime_ns) >= unsettled_ns
    if settled and _version(os.stat(path)) == version:  # not changed while it was read
        with _DIGESTS_LOCK:
            while len(_DIGESTS) >= REMEMBERED_FILES:
                _DIGESTS.pop(next(iter(_DIGESTS)))
            _DIGESTS[version] = digest
    return digest


def artifact_hashes(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """{name: sha256} of the files `names` (relative to `folder`): the record a writer keeps."""
    return {name: sha256_file(Path(folder) / name) for name in names}


def artifact_problem(folder: Path, record: object) -> str | None:
    """Why the files of `folder` do not match `record` (a dict name -> sha256), or None when every one matches.
    Each file is read once per version in this process (`sha256_file_remembered`): a predictor's shared parameter
    file (0.4 GB) is checked by every runner built on it, and any write to the file, a flipped byte included, is a
    new version."""
    if not isinstance(record, dict) or not record:
        return "no checksum record"
    for name, expected in record.items():
        path = Path(folder) / str(name)
        if not path.is_file():
            return f"{name} is missing"
        try:
            actual = sha256_file_remembered(path)
        except OSError as e:
            return f"{name} cannot be read ({e.strerror or e})"
        if actual != expected:
            return f"{name} does not match its checksum"
    return None
