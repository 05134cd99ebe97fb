"""Where a command may write: the one guard every output path of every command goes through (issue 23).

`check_output(path, inputs, what, kind)` is called before anything loads or is written, with every input path of
the command (folders and files); it refuses, with one line naming the option the user gave:
* an output that is, contains or lies inside an input (after resolving links), or that is an input file;
* a name longer than the file system takes (NAME_MAX, counting the temporary name it is first written under) or a
  path longer than PATH_MAX: these used to fail only after the model had loaded, with `[Errno 36]`;
* an existing file where a folder goes, an existing folder where a file goes (a frame name that exists as a folder
  used to fail after rendering, naming a temporary file), a parent that cannot be written (read-only, not ours).

`check_own_files(folder, owned, what)` is the rule of `--force` (and of the demo, which always refreshes its own
folder): a folder is replaced only when everything in it is something this toolkit wrote there before, as listed by
the command's own manifest (`conversion_report.json`, an ONNX folder's `meta.json`, the demo's layout).
"""
from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path

from conr_common.platform.atomic import FOLDER_TEMP_EXTRA, FILE_TEMP_EXTRA, is_temporary_name
from conr_common.platform.errors import ConrInputError

__all__ = ["FOLDER", "FILE", "SWAP", "check_output", "check_own_files", "short_path"]

FOLDER = "folder"  # a folder files are written into (created when absent, may exist)
FILE = "file"  # one file written under a temporary name beside it and renamed (conr_common.platform.atomic)
SWAP = "swap"  # a folder written whole as a temporary sibling and renamed onto the name (atomic_folder)
_EXTRA = {FOLDER: 0, FILE: FILE_TEMP_EXTRA, SWAP: FOLDER_TEMP_EXTRA}

# POSIX fallbacks when pathconf cannot tell (Linux's values)
_NAME_MAX, _PATH_MAX = 255, 4096


def short_path(text: str | os.PathLike, keep: int = 60) -> str:
    """A path or name as printed in one line: over `keep` characters, its start, '…' and its length."""
    text = str(text)
    return text if len(text) <= keep else f"{text[:keep]}…({len(text)} characters)"


def _nearest_existing(path: Path) -> Path:
    """The deepest existing ancestor of `path` (or `path`); os.path.exists never raises on over-long names."""
    probe = path
    while not os.path.exists(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def _limit(folder: Path, name: str, default: int) -> int:
    try:
        return int(os.pathconf(folder, name))
    except (OSError, ValueError):
        return default


def _check_lengths(path: Path, what: str, extra: int) -> None:
    """Every name within NAME_MAX (the last one with its temporary's `extra` characters) and the path (with them)
    under PATH_MAX, on the file system that will hold it; before any stat of `path` (which raises ENAMETOOLONG)."""
    absolute = Path(os.path.abspath(path))
    anchor = _nearest_existing(absolute)
    if not anchor.is_dir():
        anchor = anchor.parent
    name_max, path_max = _limit(anchor, "PC_NAME_MAX", _NAME_MAX), _limit(anchor, "PC_PATH_MAX", _PATH_MAX)
    parts = absolute.parts[1:]
    for i, part in enumerate(parts):
        more = extra if i == len(parts) - 1 else 0
        if len(part) + more > name_max:
            why = f" ({more} of them for the temporary name it is written under first)" if more else ""
            raise ConrInputError(f"{what} {short_path(path)}: the name {short_path(part, 24)} needs "
                                 f"{len(part) + more} characters{why}; this file system takes at most {name_max}")
    if len(str(absolute)) + extra >= path_max:
        raise ConrInputError(f"{what} {short_path(path)}: the path needs {len(str(absolute)) + extra} characters; "
                             f"the longest this system opens is {path_max - 1}")


def _relation(target: Path, source: Path) -> str | None:
    """How output `target` stands to input `source` (both resolved), or None when they are apart."""
    if target == source:
        return "is"
    if target in source.parents:
        return "contains"
    if source in target.parents:
        return "lies inside"
    return None


def _check_apart(path: Path, inputs: Mapping[str, Path | None], what: str, allow_inside: Collection[str],
                 hint: str) -> None:
    target = Path(os.path.realpath(path))
    for option, given in inputs.items():
        if given is None:
            continue
        source = Path(os.path.realpath(given))
        relation = _relation(target, source)
        if relation is None or (relation == "lies inside" and option in allow_inside):
            continue
        noun = "file" if source.is_file() else "folder"
        raise ConrInputError(f"{what} {path}: {relation} the {option} {noun} {given}; {hint}")


def _check_kind(path: Path, what: str, kind: str) -> None:
    """An existing path of the wrong kind, or an ancestor that is a file."""
    if os.path.lexists(path):
        if kind == FILE and path.is_dir():
            raise ConrInputError(f"{what} {path}: is a folder")
        if kind != FILE and not path.is_dir():
            raise ConrInputError(f"{what} {path}: exists and is not a folder")
        return
    anchor = _nearest_existing(path)
    if not anchor.is_dir():
        raise ConrInputError(f"{what} {path}: {anchor} is a file, not a folder")


def _check_writable(path: Path, what: str, kind: str) -> None:
    """The folders the write changes: the output folder itself (or, when absent, its nearest existing ancestor,
    where it will be created) and, for a file or a swapped folder, its parent, where the temporary is renamed."""
    probes = [path if kind == FOLDER else path.parent]
    if kind == SWAP and path.is_dir():
        probes.append(path)  # its own entry `..` changes when a folder is renamed
    for probe in probes:
        probe = _nearest_existing(Path(os.path.abspath(probe)))
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ConrInputError(f"{what} {path}: cannot write in {probe} (read-only or not yours)")


def check_output(path: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None], what: str, *,
                 kind: str = FOLDER, allow_inside: Collection[str] = (),
                 hint: str = "write the output to a folder of its own") -> None:
    """Refuse (ConrInputError, one line naming `what` and the path as given) an output `path` that may not be
    written: see the module docstring. `inputs`: the command's input paths by option name (None: not given);
    `kind`: FOLDER, FILE or SWAP; `allow_inside`: options whose folder may hold the output (the converter's
    documented `<SRC>/paddle`: it never reads subfolders)."""
    path = Path(path)
    _check_lengths(path, what, _EXTRA[kind])
    _check_apart(path, {k: (Path(v) if v is not None else None) for k, v in inputs.items()}, what, allow_inside,
                 hint)
    _check_kind(path, what, kind)
    _check_writable(path, what, kind)


def check_own_files(folder: str | os.PathLike, owned: Collection[str], what: str, *,
                    why: str = "--force replaces only what this toolkit wrote there") -> None:
    """Refuse to replace `folder` when it holds an entry not in `owned` (the names the command's own manifest lists
    as written by it) or a stale temporary of conr_common.platform.atomic; names the first foreign entry."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    foreign = sorted(e.name for e in folder.iterdir() if e.name not in owned and not is_temporary_name(e.name))
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise ConrInputError(f"{what} {folder}: holds {foreign[0]}{more}, which this toolkit did not write; {why} "
                             "(move it away or choose another folder)")
