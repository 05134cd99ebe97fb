"""The graph cache of both fast engines (the predictor's Paddle graphs, the onnxruntime engine's ONNX files): where it
is, what names a graph set (its identity and key), and one way to fill and trust a folder of it
(docs/predictor.md, "Cache").

`$CONR_PADDLE_CACHE` or `~/.cache/conr_paddle`, one folder per sha256 of a `cache_identity` (and one per parameter
file that saved programs read, `params_entry`); a folder is complete
when its `meta.json` exists (written last), which records the sha256 of every graph file, checked before each load.
A missing folder is filled (`cached_folder`) under the lock `<folder>.lock`, in a temporary sibling renamed into
place whole.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import paddle

from conr_common.platform.atomic import atomic_folder, sweep_stale_folders
from conr_common.platform.errors import ConrInputError
from conr_common.platform.filelock import exclusive_lock
from conr_common.platform.integrity import artifact_hashes, artifact_problem
from conr_engines.export.program import GraphParams, save_params

logger = logging.getLogger("conr_paddle")

__all__ = ["EXPORT_FORMAT", "KEY_CHARS", "PARAMS_FILE", "cache_root", "cache_identity", "cache_key", "cache_entry",
           "cached_folder", "verified_meta", "params_entry", "cached_params", "found_params"]

# the parameter file in a parameter folder (`params_entry`)
PARAMS_FILE = "params.pdiparams"

# Bump when the exported Paddle graphs change (wrapper code, input names, passes that shape the saved program).
# 9: the predictor's step and pose graphs in folders of their own (the pose graph exported on first use).
# 10: a graph folder holds the program only; its parameters are in a folder shared by the graphs of one weight set.
EXPORT_FORMAT = 10

# A cache folder is named by the first KEY_CHARS hex digits of its key (`cache_entry`).
KEY_CHARS = 24


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $CONR_PADDLE_CACHE, else ~/.cache/conr_paddle."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("CONR_PADDLE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "conr_paddle"


def cache_identity(weights_hash: str, size: int, views: int, batch: int, format_version: int,
                   **engine: object) -> dict:
    """Everything a cached graph set depends on: a change in any of these rebuilds it. The weights, the fixed
    shapes, the engine's format number and the Paddle that traced the graphs, plus the engine's own fields: the
    predictor's warp, norm (how the instance norms compute float32 statistics, `conr_paddle.layers.NORM_STATISTICS`)
    and precision; the onnxruntime engine's name, opset and paddle2onnx version."""
    return {"weights": weights_hash, "size": size, "views": views, "batch": batch, "format": format_version,
            "paddle": paddle.__version__, **engine}


def cache_key(identity: dict) -> str:
    """sha256 of an identity (`cache_identity`): the cache folder's name (its first 24 hex digits)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def cache_entry(root: Path, identity: dict, prefix: str = "") -> tuple[Path, dict]:
    """(folder, identity with its key): where the cache `root` keeps what `identity` names, `prefix` followed by
    the first KEY_CHARS hex digits of its `cache_key`."""
    key = cache_key(identity)
    return root / f"{prefix}{key[:KEY_CHARS]}", dict(identity, key=key)


def verified_meta(folder: Path, meta_problem: Callable[[dict], str | None] | None = None) -> dict | None:
    """The meta.json of a complete export whose graph files match their recorded sha256 (and in which
    `meta_problem(meta)`, when given, finds no problem); None when there is no export. A folder that fails the check
    (a damaged or replaced graph, a corrupt meta.json) is moved out of the way and removed, saying so in one line, so
    that the caller exports anew; in a cache it cannot change, that is an error naming the folder."""
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
            if problem is None and meta_problem is not None:
                problem = meta_problem(meta)
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


def _fill(folder: Path, fill: Callable[[Path], dict], suffixes: tuple[str, ...]) -> None:
    """fill(tmp) -> meta into a temporary sibling; the sha256 of its files ending in `suffixes` recorded in meta.json
    (written last), then the sibling renamed onto `folder`."""
    try:
        with atomic_folder(folder) as tmp:
            meta = fill(tmp)
            files = sorted(p.name for p in tmp.iterdir() if p.suffix in suffixes and p.name != "meta.json")
            meta = dict(meta, artifacts=artifact_hashes(tmp, files))  # checked before every load
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    except OSError:
        if not (folder / "meta.json").is_file():  # a concurrent writer won only if it completed
            raise


def cached_folder(folder: Path, fill: Callable[[Path], dict], suffixes: tuple[str, ...],
                  meta_problem: Callable[[dict], str | None] | None = None) -> tuple[dict, bool]:
    """(meta.json, built): the verified cache folder `folder`, built first when there is none (built True).

    fill(tmp) writes the graph files into the empty folder `tmp` and returns the meta to record; the files ending in
    `suffixes` are the artifacts whose sha256 meta.json keeps and `verified_meta` checks before every reuse. A
    complete, verified folder needs no write (read-only caches). Processes sharing the cache (the ranks of a
    distributed render) build under the lock `<folder>.lock`: the first one in builds, the others wait for it and
    then find a verified folder and load the same graphs. meta_problem: what else a trusted meta.json must hold
    (`verified_meta`)."""
    found = verified_meta(folder, meta_problem)
    if found is not None:
        return found, False
    with exclusive_lock(folder.parent / f"{folder.name}.lock"):
        # builds only run under this lock: a temporary folder seen here was left by a killed one
        sweep_stale_folders(folder)
        found = verified_meta(folder, meta_problem)
        if found is not None:
            return found, False
        _fill(folder, fill, suffixes)
        return json.loads((folder / "meta.json").read_text()), True


def params_entry(root: Path, weights_hash: str, params: GraphParams) -> tuple[Path, dict]:
    """(folder, identity) of the parameter folder of a saved program (`conr_engines.export.program`) in the cache
    `root`: named by the sha256 of the weights hash, the Paddle version, the export format and the parameter record,
    so every program of one weight set that reads the same parameters under the same names shares it (the
    predictor's step graphs at every size, view count, batch, precision and warp; the parser's graphs)."""
    return cache_entry(root, {"graph": "params", "weights": weights_hash, "paddle": paddle.__version__,
                              "format": EXPORT_FORMAT, "record": params.digest()})


def cached_params(state: Callable[[], dict], root: Path, weights_hash: str, params: GraphParams) -> Path:
    """The verified parameter file of `params` (`params_entry`), written first from `state()` (a state_dict of the
    model the program was traced over) when there is none or it is damaged, by `cached_folder` (under its lock, its
    sha256 in its meta.json)."""
    folder, identity = params_entry(root, weights_hash, params)

    def fill(tmp: Path) -> dict:
        save_params(state(), params, tmp / PARAMS_FILE)
        return dict(identity, count=len(params.names))

    cached_folder(folder, fill, (".pdiparams",))
    return folder / PARAMS_FILE


def found_params(root: Path, weights_hash: str, params: GraphParams) -> Path | None:
    """The verified parameter file of `params` when the cache `root` holds one, else None. Nothing is written; a
    damaged folder is removed (`verified_meta`), and in a read-only cache passed over."""
    folder, _ = params_entry(root, weights_hash, params)
    try:
        return folder / PARAMS_FILE if verified_meta(folder) is not None else None
    except ConrInputError:  # damaged in a read-only cache: the caller writes its own
        return None
