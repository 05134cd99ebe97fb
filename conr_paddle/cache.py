"""The exported-graph cache: where it is, what names a graph set (its identity and key), and whether a cached
set can be trusted (docs/predictor.md, "Cache").

`$CONR_PADDLE_CACHE` or `~/.cache/conr_paddle`, one folder per sha256 of `export_identity`; a folder is complete
when its `meta.json` exists (written last), which records the sha256 of every graph file, checked before each load.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import paddle

from conr_common.errors import ConrInputError
from conr_common.integrity import artifact_problem

logger = logging.getLogger("conr_paddle")

__all__ = ["EXPORT_FORMAT", "cache_root", "export_identity", "export_key", "verified_meta"]

# Bump when the exported graphs change (wrapper code, input names, passes that shape the saved program).
EXPORT_FORMAT = 8


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $CONR_PADDLE_CACHE, else ~/.cache/conr_paddle."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("CONR_PADDLE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "conr_paddle"


def export_identity(weights_hash: str, size: int, views: int, batch: int, precision: str, warp: str,
                    norm: str = "float64") -> dict:
    """Everything an exported graph depends on: a change in any of these rebuilds it. norm: how the model's
    instance norms compute float32 statistics (`conr_paddle.layers.NORM_STATISTICS`; "float64" unless changed
    with `set_norm_statistics`, as the benchmark does to measure the accurate norm's cost)."""
    return {
        "warp": warp,
        "norm": norm,
        "weights": weights_hash,
        "size": size,
        "views": views,
        "batch": batch,
        "precision": precision,
        "paddle": paddle.__version__,
        "format": EXPORT_FORMAT,
    }


def export_key(weights_hash: str, size: int, views: int, batch: int, precision: str, warp: str,
               norm: str = "float64") -> str:
    """sha256 of `export_identity`: the cache folder's name (its first 24 hex digits)."""
    blob = json.dumps(export_identity(weights_hash, size, views, batch, precision, warp, norm), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def verified_meta(folder: Path) -> dict | None:
    """The meta.json of a complete export whose graph files match their recorded sha256; None when there is no
    export. A folder that fails the check (a damaged or replaced graph, a corrupt meta.json) is moved out of the way
    and removed, saying so in one line, so that the caller exports anew; in a cache it cannot change, that is an
    error naming the folder."""
    meta_file = folder / "meta.json"
    if not folder.exists() and not meta_file.is_file():
        return None
    if not meta_file.is_file():
        problem = "meta.json is missing"
    else:
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError) as e:
            meta, problem = None, f"meta.json unreadable ({type(e).__name__})"
        else:
            problem = artifact_problem(folder, meta.get("artifacts") if isinstance(meta, dict) else None)
        if problem is None:
            return meta
    if not os.access(folder.parent, os.W_OK | os.X_OK):
        raise ConrInputError(f"{folder}: exported graphs not usable ({problem}) and the cache is read-only; "
                             "pass --cache-dir to a writable folder")
    logger.warning("conr_paddle: exported graphs in %s not trusted (%s); exporting again", folder, problem)
    aside = folder.with_name(f"{folder.name}.stale-{os.getpid()}-{time.time_ns()}")
    try:
        os.replace(folder, aside)
    except OSError:
        pass  # another process moved it first
    shutil.rmtree(aside, ignore_errors=True)
    return None
