"""Atomic file writing: a reader (a video encoder, a resumed run, another process) never sees half a file.

Every writer puts its bytes into a temporary file in the destination's own directory (same file system, so the
final `os.replace` is an atomic rename) and renames it into place only once the data is complete. Temporary
names start with '.' so globs such as `*.png` and natural-order listings never pick them up.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

__all__ = ["atomic_write_bytes", "atomic_path", "atomic_paths", "atomic_folder", "sweep_stale_folders",
           "encode_png", "write_png_atomic", "sweep_stale_temporaries", "is_temporary_name", "FILE_TEMP_EXTRA", "FOLDER_TEMP_EXTRA"]

# How many characters longer than the final name a temporary is (conr_common.platform.outputs checks names against NAME_MAX
# with them): a file's `.<name>.<host 6>.<pid>.<8 hex>.tmp` with a pid of up to 7 digits (Linux's pid_max is at most
# 4194304); a folder's `<name>.tmp-<8>` sibling or `.<name>.old-<pid>` while it is swapped.
FILE_TEMP_EXTRA = len("." + ".xxxxxx." + "1234567" + ".xxxxxxxx.tmp")
FOLDER_TEMP_EXTRA = max(len(".tmp-xxxxxxxx"), len("." + ".old-" + "1234567"))


def _owner_tag() -> str:
    """`<host>.<pid>` of this process: which process a temporary belongs to (host as 6 hex digits of its sha1, so
    that dots in host names keep the temporary names parseable)."""
    host = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
    return f"{host}.{os.getpid()}"


# `.<name>.<host>.<pid>.<8 hex>.tmp[<suffix>]`: what _create_temp writes
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[0-9a-f]{6})\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp(\.[A-Za-z0-9]+)?$")


def is_temporary_name(name: str) -> bool:
    """True for the name of a temporary file this module creates (a writer's, live or killed)."""
    return _TEMP_NAME.match(name) is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that a killed writer left in `folder` (SIGKILL, power loss: no `finally` ran) and
    return them. Only files named by this module, created on this host by a process that no longer exists, are
    touched: a live writer's temporary (another rank of a distributed render) stays."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host = _owner_tag().split(".")[0]
    removed = []
    for entry in folder.iterdir():
        m = _TEMP_NAME.match(entry.name)
        if m and m["host"] == host and not _alive(int(m["pid"])) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _create_temp(directory: Path, prefix: str, suffix: str) -> Path:
    """Create (exclusively) an empty temporary file; `os.open` with 0o666 honours the umask like a plain open."""
    for _ in range(100):
        candidate = directory / f"{prefix}.{_owner_tag()}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"could not create a temporary file next to {directory}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary `.<name>.<host>.<pid>.<random>.tmp` in the same directory, then
    rename).

    The parent directory must exist. On any error the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    tmp = _create_temp(path.parent, "." + path.name, ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` when the block succeeds, delete it otherwise.

    For writers that insist on a file name (`np.savez`, `torch.save`, `paddle.save`, `cv2.imwrite`). The temporary
    name is `.<stem>.<host>.<pid>.<random>.tmp<suffix>`: it keeps the final suffix, because `np.savez` appends `.npz` to a name
    without it and `cv2.imwrite` picks the format from it. The yielded file already exists (empty); writers
    overwrite it. If the block leaves no file behind (the writer wrote elsewhere), FileNotFoundError is raised.
    """
    path = Path(path)
    tmp = _temp_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_paths(paths: Iterable[str | os.PathLike]) -> Iterator[list[Path]]:
    """`atomic_path` for several files written all or nothing (the two videos of a render, the networks and the
    report of a conversion): yields their temporaries, in the order of `paths`; when the block succeeds they are
    renamed into place in that order, otherwise (or when a rename fails) every temporary still there is removed."""
    paths = [Path(p) for p in paths]
    tmps: list[Path] = []
    try:
        for path in paths:
            tmps.append(_temp_for(path))
        yield list(tmps)
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def _temp_for(path: Path) -> Path:
    """The temporary of `atomic_path(path)`: created empty, next to `path`, keeping its suffix."""
    return _create_temp(path.parent, "." + path.stem, ".tmp" + path.suffix)


def encode_png(path: str | os.PathLike, rgba_u8: np.ndarray) -> bytes:
    """The PNG bytes of an RGBA uint8 (H, W, 4) image (stored BGRA, as OpenCV and the official `save_output` write
    it); `path` only names the file in errors."""
    rgba_u8 = np.asarray(rgba_u8)
    if rgba_u8.dtype != np.uint8 or rgba_u8.ndim != 3 or rgba_u8.shape[2] != 4:
        raise ValueError(f"{path}: can only write uint8 (H, W, 4) RGBA, got {rgba_u8.dtype} {rgba_u8.shape}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgba_u8, cv2.COLOR_RGBA2BGRA))
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the PNG")
    return buf.tobytes()


def write_png_atomic(path: str | os.PathLike, rgba_u8: np.ndarray) -> None:
    """`encode_png` written atomically to `path`."""
    atomic_write_bytes(path, encode_png(path, rgba_u8))


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """A folder that appears whole or not at all (exported graphs, ONNX folders): yields an empty temporary sibling
    `<name>.tmp-XXXXXXXX`, renamed onto `folder` when the block ends without an exception and removed otherwise.

    replace: an existing `folder` is moved aside, the new one renamed in, the old one removed; without it the
    rename fails with OSError when `folder` already exists and is not empty (a concurrent writer won)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_folder_temp_prefix(folder), dir=folder.parent))
    try:
        yield tmp
        if replace and folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _folder_temp_prefix(folder: Path) -> str:
    return f"{folder.name}.tmp-"


def sweep_stale_folders(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings `atomic_folder(folder)` left behind (a killed writer: no `finally` ran) and
    return them. Every `<name>.tmp-*` sibling goes, a live writer's too: call it only where no other writer of
    `folder` can be running (under the lock that serialises them)."""
    folder = Path(folder)
    stale = sorted(folder.parent.glob(f"{_folder_temp_prefix(folder)}*"))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale
