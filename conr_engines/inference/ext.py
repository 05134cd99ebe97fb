"""CoNR's custom CPU operators for the exported graphs, `conr_warp`, `conr_resize` and `conr_fuse`
(csrc/conr_warp.cc), compiled on first use.

Paddle 3.3.1's CPU `grid_sample` kernel was a third of the exported per-frame step at 256 px (3.4x slower than
torch's on the full-resolution grouped warp). `conr_warp` does the same backward warp as `conr_paddle.warp`
(grid built from the flow, bilinear, border padding, align_corners=True) in one pass: sampling positions and
weights once per pixel and channel group, then a gather per channel, OpenMP across rows or channels.

It is compiled with `paddle.utils.cpp_extension.load` (g++ and Paddle's bundled headers; no CMake, no CUDA) into
`<cache>/ops/<key>`, key = sha256 of the source, the compiler flags, the Paddle version and the machine type, under
a file lock so that parallel processes build it once. The build's output is kept in `build.log` there, not shown.
The library's sha256 is recorded (`library.sha256.json`) right after this process builds it and checked before
every load: a library it did not build (planted, damaged, older) is rebuilt, saying so in one line. A cache the
user cannot write is used read-only: a verified library is loaded from a private copy, an unverified one is not.
`conr_resize` is the bilinear half-pixel resize (`interpolate(..., align_corners=False, align_mode=0)`), which
the exporter otherwise has to write as matmuls with constant matrices (PIR bilinear_interp fails under oneDNN).
`conr_fuse` is the shader's cross-view fusion (`conr_paddle.shader.fuse_views`) in one pass.
The eager model never uses them: it stays the parity reference with `F.grid_sample` / `F.interpolate`. Where the
build fails (no compiler), `load_warp_op` says why and the exporter keeps `grid_sample` and matmul resizes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paddle

from conr_common.platform.atomic import atomic_write_bytes
from conr_common.platform.filelock import exclusive_lock
from conr_common.platform.integrity import artifact_hashes, artifact_problem
from conr_common.platform.quiet import output_to

logger = logging.getLogger("conr_paddle")

__all__ = ["WarpOp", "load_warp_op", "find_cxx_compiler", "SOURCE"]

SOURCE = Path(__file__).resolve().parent / "csrc" / "conr_warp.cc"
MODULE_NAME = "conr_warp_ops"
CXX_FLAGS = ("-O3", "-fopenmp")


def _ld_flags() -> tuple[str, ...]:
    """Link the OpenMP runtime that Paddle's oneDNN already runs on (Intel's libiomp5, shipped in paddle/libs).

    With g++'s own libgomp, the two runtimes' worker threads fight over the cores: libiomp5 threads keep spinning
    for KMP_BLOCKTIME (200 ms) after every oneDNN region. Measured on 2 cores, a (4, 64, 256, 256) warp took
    137 ms with libgomp and 57 ms with libiomp5 (Paddle's grid_sample: 950 ms)."""
    libs = Path(paddle.__file__).resolve().parent / "libs"
    if (libs / "libiomp5.so").is_file():
        return (f"-L{libs}", "-Wl,--no-as-needed", "-l:libiomp5.so", f"-Wl,-rpath,{libs}")
    return ("-fopenmp",)


@dataclass(frozen=True)
class WarpOp:
    """The compiled operators, `function(x, flow) -> warped`, `resize(x, out_h, out_w)` and
    `fuse(mask, flow, wref, message, views)`, or why they are missing (one library: all or none)."""

    function: Callable | None
    resize: Callable | None
    fuse: Callable | None
    build_dir: Path | None
    reason: str

    @property
    def available(self) -> bool:
        return self.function is not None


def _build_key() -> str:
    blob = b"\0".join(
        [
            SOURCE.read_bytes(),
            " ".join(CXX_FLAGS + _ld_flags()).encode(),
            paddle.__version__.encode(),
            platform.machine().encode(),
            sys.version.split()[0].encode(),
        ]
    )
    return hashlib.sha256(blob).hexdigest()[:16]


# Paddle's operator registry is per process and an operator name registers once: the first successful load of a
# library build (whatever cache folder it came from) serves every later call in this process.
_LOADED: dict[str, WarpOp] = {}


LIBRARY_RECORD = "library.sha256.json"  # {relative path: sha256} of the .so this process built


LIBRARY_FILE = f"{MODULE_NAME}/{MODULE_NAME}.so"  # what Paddle's loader dlopens, relative to the build folder


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _load(build_dir: Path) -> WarpOp:
    key = build_dir.name
    if key in _LOADED:
        return _LOADED[key]
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return WarpOp(None, None, None, build_dir, f"conr_warp cache {build_dir} cannot be created ({e.strerror or e})")
    if not _writable(build_dir):
        return _load_read_only(build_dir)
    with exclusive_lock(build_dir / ".lock"):  # parallel processes build the library once
        library = build_dir / LIBRARY_FILE
        if library.exists():
            problem = artifact_problem(build_dir, _read_record(build_dir))
            if problem:  # not a library this toolkit built (planted, damaged, or from an old version): rebuild
                logger.warning("conr_paddle: compiled operators in %s not trusted (%s); rebuilding",
                               build_dir, problem)
                shutil.rmtree(build_dir / MODULE_NAME, ignore_errors=True)
        op = _build_and_register(build_dir, build_dir)
        if op.available:
            atomic_write_bytes(build_dir / LIBRARY_RECORD, json.dumps(
                artifact_hashes(build_dir, [LIBRARY_FILE])).encode())
        return op


def _read_record(build_dir: Path) -> object:
    try:
        return json.loads((build_dir / LIBRARY_RECORD).read_text())
    except (OSError, ValueError):
        return None


def _load_read_only(build_dir: Path) -> WarpOp:
    """A cache the user cannot write (shared, read-only mount): use a verified library from a private copy (Paddle's
    loader writes its Python wrapper next to the library), or fall back without building."""
    problem = artifact_problem(build_dir, _read_record(build_dir))
    if problem:
        return WarpOp(None, None, None, build_dir,
                      f"conr_warp not built in the read-only cache {build_dir} ({problem}); using grid_sample")
    private = Path(tempfile.mkdtemp(prefix="conr-ops-"))
    shutil.copytree(build_dir / MODULE_NAME, private / MODULE_NAME, symlinks=False)
    shutil.copy2(build_dir / LIBRARY_RECORD, private / LIBRARY_RECORD)
    try:
        problem = artifact_problem(private, _read_record(private))  # the copy, which is what gets loaded
        if problem:
            return WarpOp(None, None, None, build_dir, f"conr_warp copy from {build_dir} failed its check ({problem})")
        return _build_and_register(private, build_dir)
    finally:
        shutil.rmtree(private, ignore_errors=True)  # once loaded, the mapped library no longer needs its file


def _build_and_register(work_dir: Path, build_dir: Path) -> WarpOp:
    """The operators of the library in `work_dir`, registered: a library already there (which every caller has
    verified or removed) directly (`_registered`), else Paddle's cpp_extension.load, which builds it first."""
    if (work_dir / LIBRARY_FILE).is_file():
        op = _registered(work_dir, build_dir)
        if op is not None:
            return op
    from paddle.utils.cpp_extension import load

    log = work_dir / "build.log"
    try:
        with output_to(log):
            module = load(
                name=MODULE_NAME,
                sources=[str(SOURCE)],
                extra_cxx_cflags=list(CXX_FLAGS),
                extra_ldflags=list(_ld_flags()),
                build_directory=str(work_dir),
                verbose=False,
            )
    except Exception as exc:  # compiler missing or failing: the caller falls back to grid_sample
        tail = " ".join(log.read_text(errors="replace").split()[-12:]) if log.is_file() else ""
        return WarpOp(None, None, None, build_dir, f"conr_warp could not be built ({type(exc).__name__}: {exc}) {tail}")
    return _remember(module, build_dir)


def _remember(module, build_dir: Path) -> WarpOp:
    """The operators of a registered library `module`, kept for this process under its build key."""
    _LOADED[build_dir.name] = WarpOp(module.conr_warp, module.conr_resize, module.conr_fuse, build_dir, "built")
    return _LOADED[build_dir.name]


def _registered(work_dir: Path, build_dir: Path) -> WarpOp | None:
    """The built library in `work_dir` registered the way cpp_extension.load ends, without what load does first: it
    runs its generated setup.py in a child Python, an up-to-date check that imports Paddle (1.1 s of a 7.7 s 128 px
    render, every process that loads the predictor). The build key already names the source, flags and Paddle
    version. Uses a private function of Paddle's (pinned 3.3.x); None if it is missing or fails, and the caller
    falls back to load."""
    try:
        from paddle.utils.cpp_extension.extension_utils import _import_module_from_library

        with output_to(work_dir / "build.log"):
            module = _import_module_from_library(MODULE_NAME, str(work_dir / MODULE_NAME), False)
        return _remember(module, build_dir)
    except Exception:  # another Paddle, a library without the ops: cpp_extension.load decides
        return None


def find_cxx_compiler() -> str | None:
    """Path of the C++ compiler the operators would be built with (setuptools' choice: $CXX, else Python's
    configured CXX, else c++), or None where it is not installed: the documented fallback case, in which
    `load_warp_op` reports why and the exporter keeps grid_sample. Tests use it to skip rather than fail there."""
    command = os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++"
    words = shlex.split(command)
    return shutil.which(words[0]) if words else None


def load_warp_op(cache_root: Path) -> WarpOp:
    """Build (once per source/flags/Paddle version) and register `conr_warp`; see the module docstring."""
    if paddle.is_compiled_with_cuda() and paddle.device.get_device().startswith("gpu"):
        return WarpOp(None, None, None, None, "conr_warp is a CPU kernel; GPU graphs keep grid_sample")
    return _load(Path(cache_root) / "ops" / _build_key())
