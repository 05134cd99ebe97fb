"""What the graph cache holds and which of it this installation can never read again (`python -m conr_app cache`).

The cache (`conr_engines.export.cache`, docs/predictor.md "Cache") grows by one folder per exported graph set and one
per parameter file. Nothing in it expires: a Paddle upgrade, a new export format or new weights leave the old
folders behind, and a graph folder removed by hand leaves its parameter folder (0.4 GB at the official size) behind.
`cache_entries` lists every folder with what it is, its size and, when it is stale, why; `prune` removes the stale
ones. Stale means one of:
- an export of another Paddle version or export format (the engines key their folders by both, so they never read
  it again): predictor graphs, parameter folders and ONNX folders (also another paddle2onnx version);
- a parameter folder that no graph folder in the cache reads;
- an export folder without a readable meta.json (an export that never finished), and the temporary or set-aside
  siblings a killed writer left (`conr_common.platform.atomic.atomic_folder`,
  `conr_engines.export.cache.verified_meta`).
The compiled operators (`ops/`), the web app's seeded weights and any other folder not named like an export (`_ours`),
or whose meta.json has no cache key, are listed and never removed; so are the zero-byte lock files
(`conr_common.platform.filelock`: deleting one races with a process waiting on it).
A folder whose lock another process holds (an export under way) is passed over.
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import paddle

from conr_common.platform.filelock import exclusive_lock
from conr_common.platform.versions import dist_version
from conr_engines.export.cache import EXPORT_FORMAT, KEY_CHARS
from conr_engines.export.program import GraphParams
from conr_engines.onnx.contract import ONNX_CACHE_LAYOUT, ONNX_CACHE_PREFIX, ONNX_FORMAT

__all__ = ["CacheEntry", "cache_entries", "prune"]

@dataclass(frozen=True)
class CacheEntry:
    """One folder of the cache. kind: "graph", "parameters", "onnx", "incomplete", "temporary" or "other"; what: a
    description (graph, weights, shape, precision, versions); stale: why this installation never reads it again, or
    None."""

    path: Path
    kind: str
    what: str
    bytes: int
    stale: str | None


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _version_problem(meta: dict, format_version: int) -> str | None:
    if meta.get("format") != format_version:
        return f"export format {meta.get('format')} (this installation writes {format_version})"
    if meta.get("paddle") != paddle.__version__:
        return f"Paddle {meta.get('paddle')} (this installation runs {paddle.__version__})"
    return None


def _params_read(metas: dict[Path, dict]) -> set[tuple[str, str]]:
    """(weights hash, parameter record digest) of every parameter file a current graph folder reads (a stale one's
    go with it, in the same prune)."""
    read = set()
    for folder, meta in metas.items():
        if folder.name.startswith(ONNX_CACHE_PREFIX) or _version_problem(meta, EXPORT_FORMAT) is not None:
            continue
        if meta.get("graph") not in (None, "params") and "params" in meta:
            try:
                read.add((str(meta.get("weights")), GraphParams.from_json(meta["params"]).digest()))
            except ValueError:
                continue
    return read


def _judge(folder: Path, meta: dict | None, read: set[tuple[str, str]]) -> CacheEntry:
    """The entry of an export folder (named like one, `_ours`)."""
    size = _bytes(folder)
    if meta is not None and "key" not in meta:
        return CacheEntry(folder, "other", "no cache key in its meta.json: not an export", size, None)
    if meta is None:
        return CacheEntry(folder, "incomplete", "no readable meta.json", size, "an export that never finished")
    shape = f"{meta.get('size')} px, {meta.get('views')} view(s), batch {meta.get('batch')}"
    weights = f"weights {str(meta.get('weights'))[:12]}"
    if folder.name.startswith(ONNX_CACHE_PREFIX):
        stale = _version_problem(meta, ONNX_FORMAT)
        if stale is None and meta.get("layout") != ONNX_CACHE_LAYOUT:
            stale = f"cache layout {meta.get('layout', 1)} (sheet, step and pose in one folder)"
        converter = dist_version("paddle2onnx")
        if stale is None and converter is not None and meta.get("paddle2onnx") != converter:
            stale = f"paddle2onnx {meta.get('paddle2onnx')} (installed: {converter})"
        return CacheEntry(folder, "onnx", f"ONNX {meta.get('graph', 'sheet/step/pose')} graph, {weights}, {shape}, "
                          f"opset {meta.get('opset')}", size, stale)
    if meta.get("graph") == "params":
        stale = _version_problem(meta, EXPORT_FORMAT)
        if stale is None and (str(meta.get("weights")), meta.get("record")) not in read:
            stale = "read by no graph folder in the cache"
        return CacheEntry(folder, "parameters", f"{meta.get('count')} parameters, {weights}", size, stale)
    what = (f"{meta.get('graph')} graph, {weights}, {shape}, {meta.get('precision')}, warp {meta.get('warp')}, "
            f"norm {meta.get('norm')}")
    return CacheEntry(folder, "graph", what, size, _version_problem(meta, EXPORT_FORMAT))


def _ours(name: str) -> bool:
    """Whether `name` is one the engines give their export folders (`conr_engines.export.cache.cache_entry`): the
    first KEY_CHARS hex digits of a cache key (predictor graphs and parameter folders), after ONNX_CACHE_PREFIX for
    the onnxruntime engine's. Anything else in the cache root (the compiled operators, the web app's seeded weights,
    a folder of the user's) is not an export and never removed."""
    return re.fullmatch(f"({re.escape(ONNX_CACHE_PREFIX)})?[0-9a-f]{{{KEY_CHARS}}}", name) is not None


def _base(name: str) -> str:
    """The folder a name belongs to: itself, or for a writer's leftovers (`<folder>.tmp-XXXX` of `atomic_folder`,
    `.<folder>.old-PID` of its replace, `<folder>.stale-PID-NS` of `verified_meta`) that folder's name (export
    folder names hold no dot)."""
    return name.lstrip(".").split(".")[0]


def cache_entries(root: Path) -> list[CacheEntry]:
    """Every folder of the cache `root` (sorted by name), judged as the module docstring says. An absent root holds
    nothing."""
    if not root.is_dir():
        return []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    metas = {p: _meta(p) for p in folders if _ours(p.name)}
    read = _params_read({p: m for p, m in metas.items() if m is not None})
    entries = []
    for folder in folders:
        if folder in metas:
            entries.append(_judge(folder, metas[folder], read))
        elif _ours(_base(folder.name)):
            entries.append(CacheEntry(folder, "temporary", "a writer's temporary folder", _bytes(folder),
                                      "left by a writer that was killed"))
        else:
            entries.append(CacheEntry(folder, "other", "not an export", _bytes(folder), None))
    return entries


def _lock_of(entry: CacheEntry) -> Path:
    """The lock its writer holds while filling it (`cached_folder`: `<folder>.lock`; a leftover's is its folder's,
    `_base`)."""
    return entry.path.with_name(f"{_base(entry.path.name)}.lock")


def prune(entries: list[CacheEntry]) -> tuple[list[CacheEntry], list[CacheEntry]]:
    """Remove the stale folders among `entries` (`cache_entries` of one cache); returns (removed, passed over because
    another process holds their lock). Each is removed under its lock, taken without waiting; one whose lock file
    does not exist was never locked by a writer and is removed as it is (no new lock file left behind)."""
    removed, busy = [], []
    for entry in entries:
        if entry.stale is None:
            continue
        lock = _lock_of(entry)
        with exclusive_lock(lock, wait=False) if lock.exists() else contextlib.nullcontext(True) as held:
            if not held:
                busy.append(entry)
                continue
            shutil.rmtree(entry.path)
            removed.append(entry)
    return removed, busy
