"""Whole-folder conversion jobs (what `python -m convert torch2paddle|paddle2torch|inspect` run).

Order of work, so that a bad input never leaves a half-written output and memory stays near one network:
1. find the inputs (a folder of official files, or one file whose network is found from its keys);
2. validate every input against the manifest, reading only names, shapes and dtypes where the format allows
   (torch files are memory-mapped, safetensors headers read), and hash it; refuse existing outputs (no --force);
3. convert one network at a time: load, rename, write to a temporary file next to the destination, read that file
   back and compare every tensor bit for bit, free; the temporary files are renamed into place together, with the
   report, only once every network has passed.
"""
from __future__ import annotations

import contextlib
import json
import platform
import sys
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TextIO

import numpy as np

from conr_common.atomic import atomic_path
from conr_common.checks import check_output_apart, check_weight_values
from conr_common.config import NETWORK_NAMES
from conr_common.errors import ConrInputError
from conr_common.manifest import official_manifest

from . import io as cio
from .mapping import check_against_manifest, dtype_name, identify_network, paddle_to_torch, torch_to_paddle, unwrap
from .rename import torch_to_paddle_key

__all__ = ["REPORT_NAME", "DIRECTIONS", "convert_checkpoints", "inspect_paths", "tool_version"]

REPORT_NAME = "conversion_report.json"
TOOL_NAME = "conr-paddle convert"


@dataclass(frozen=True)
class Direction:
    name: str
    in_naming: str
    out_naming: str

    def input_names(self, network: str) -> tuple[str, ...]:
        """File names that hold `network` in a source folder, in order of preference."""
        if self.in_naming == "torch":
            return (official_manifest()[network].file, f"{network}.safetensors")
        return (f"{network}.pdparams", f"{network}.safetensors")

    def output_name(self, network: str, fmt: str) -> str:
        if self.out_naming == "torch":
            return official_manifest()[network].file
        return f"{network}.{fmt}"

    @property
    def suffixes(self) -> tuple[str, ...]:
        return cio.TORCH_SUFFIXES if self.in_naming == "torch" else cio.PADDLE_SUFFIXES


DIRECTIONS = {
    "torch2paddle": Direction("torch2paddle", "torch", "paddle"),
    "paddle2torch": Direction("paddle2torch", "paddle", "torch"),
}


@dataclass
class _Job:
    src: Path
    network: str | None = None  # None until found from the keys (single-file source)
    dst: Path | None = None
    notes: list[str] = field(default_factory=list)
    record: dict = field(default_factory=dict)
    state: dict | None = None  # memory-mapped tensors kept from validation (torch zip files only)
    src_sha256: Future | None = None
    dst_sha256: Future | None = None


def tool_version() -> str:
    try:
        return metadata.version("conr-paddle")
    except metadata.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text())["project"]["version"] + " (source tree)"
        except (OSError, KeyError, ValueError):
            return "unknown"


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _load(path: Path, naming: str, *, lazy: bool, notes: list[str]):
    """Raw loaded object of a source file; `lazy` maps or reads headers only where the format allows."""
    if path.suffix == ".safetensors" and lazy:
        return cio.read_safetensors_specs(path)
    if naming == "torch":
        return cio.load_torch_file(path, mmap=True, notes=notes)
    return cio.load_paddle_file(path, notes=notes)


def _find_inputs(direction: Direction, src: Path) -> tuple[list[_Job], list[str]]:
    if not src.exists():
        raise ConrInputError(f"{src}: no such file or folder")
    if src.is_file():
        if src.suffix not in direction.suffixes:
            raise ConrInputError(f"{src}: not a {' / '.join(direction.suffixes)} file")
        return [_Job(src)], []
    jobs, absent = [], []
    for network in NETWORK_NAMES:
        present = [src / n for n in direction.input_names(network) if (src / n).is_file()]
        if len(present) > 1:
            raise ConrInputError(f"{src}: both {present[0].name} and {present[1].name} are here; keep one")
        if present:
            jobs.append(_Job(present[0], network))
        else:
            absent.append(direction.input_names(network)[0])
    if not jobs:
        expected = ", ".join(direction.input_names(n)[0] for n in NETWORK_NAMES)
        raise ConrInputError(f"{src}: holds none of the official checkpoint files ({expected})")
    return jobs, absent


def _validate(job: _Job, naming: str) -> None:
    """Step 2 for one input: readable, safe, a known network, exactly the official tensors.

    A torch zip file is memory-mapped: its tensors are kept for step 3 (no second load; pages are read only when
    converted). Anything read into memory is dropped and read again in step 3, one network at a time."""
    state, notes = unwrap(_load(job.src, naming, lazy=True, notes=job.notes), source=str(job.src))
    if job.network is None:
        job.network = identify_network(state, naming=naming, source=str(job.src))
    diff = check_against_manifest(job.network, state, naming=naming)
    if not diff.ok:
        raise ConrInputError(
            f"{job.src}: does not match the official {job.network} checkpoint: " + "; ".join(diff.problems())
        )
    job.notes.extend(notes)
    if naming == "torch" and cio.is_torch_zip(job.src):
        job.state = state


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def convert_checkpoints(
    direction: str,
    src: str | Path,
    out: str | Path | None = None,
    *,
    fmt: str = "pdparams",
    force: bool = False,
    verbose: bool = False,
    allow_nonfinite: bool = False,
    stdout: TextIO | None = None,
) -> dict:
    """Convert the official checkpoints in folder/file `src` into folder `out`; returns the report (also written
    to `out/conversion_report.json`). Raises ConrInputError, leaving no output file, on any bad input (NaN/Inf
    weights included, unless `allow_nonfinite`)."""
    stdout = stdout or sys.stdout
    way = DIRECTIONS[direction]
    src = Path(src)
    if fmt not in ("pdparams", "safetensors"):
        raise ConrInputError(f"unknown output format {fmt!r} (pdparams or safetensors)")
    if way.out_naming == "torch":
        fmt = "pth"
    jobs, absent = _find_inputs(way, src)
    if out is None:
        if way.out_naming == "torch":
            raise ConrInputError("paddle2torch needs an output folder (-o OUT)")
        out = (src if src.is_dir() else src.parent) / "paddle"
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConrInputError(f"{out}: exists and is not a folder")
    source_folder = src if src.is_dir() else src.parent
    # -o equal to the source: a second format of the same network makes the folder unusable as a source ("two
    # inputs hold the same network"); -o containing it: `paddle2torch weights/paddle -o weights --force` replaced the
    # official .pth files beside the source. Inside the source is the documented layout (default <SRC>/paddle).
    check_output_apart(out, {"source": source_folder}, what="-o", allow_inside=True,
                       hint=f"write to a folder of its own (default: {source_folder / 'paddle'})")

    for job in jobs:
        _validate(job, way.in_naming)
    networks = [job.network for job in jobs]
    if len(set(networks)) != len(networks):
        raise ConrInputError(f"{src}: two inputs hold the same network")
    for job in jobs:
        job.dst = out / way.output_name(job.network, fmt)
    report_path = out / REPORT_NAME
    inputs = {job.src.resolve() for job in jobs}
    for path in [job.dst for job in jobs] + [report_path]:
        if path.resolve() in inputs:
            raise ConrInputError(f"{path}: the output would replace its own input; choose another -o")
        if path.exists() and not force:
            raise ConrInputError(f"{path}: exists; pass --force to replace it")

    created_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # sha256 of inputs and outputs runs on a second thread (hashlib releases the GIL) while this one converts
    hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
    try:
        for job in jobs:
            job.src_sha256 = hasher.submit(cio.sha256_file, job.src)
        with contextlib.ExitStack() as staged:  # every output is renamed into place only if all succeed
            for job in jobs:
                tmp = staged.enter_context(atomic_path(job.dst))
                _convert_one(job, way, tmp, verbose=verbose, stdout=stdout, allow_nonfinite=allow_nonfinite)
                if job.dst_sha256 is None:  # not hashed while being read back
                    job.dst_sha256 = hasher.submit(cio.sha256_file, tmp)
            report = _report(way, src, out, jobs, absent, fmt)
            tmp_report = staged.enter_context(atomic_path(report_path))
            tmp_report.write_text(json.dumps(report, indent=2) + "\n")
    except BaseException:
        for job in jobs:
            job.state = None
        hasher.shutdown(wait=True, cancel_futures=True)  # a running hash may still read a temporary file
        if created_out:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty
        raise
    hasher.shutdown()

    for job in jobs:
        r = job.record
        print(
            f"{job.src} -> {job.dst} ({r['tensors']} tensors, {r['parameters']:,} parameters, "
            f"{', '.join(r['dtypes'])})",
            file=stdout,
        )
        for note in job.notes:
            print(f"  note: {note}", file=stdout)
    if absent:
        print(f"absent from {src} (not converted): {', '.join(absent)}", file=stdout)
    print(f"report: {report_path} (every written tensor re-read and bit-identical)", file=stdout)
    return report


def _convert_one(job: _Job, way: Direction, tmp: Path, *, verbose: bool, stdout: TextIO,
                 allow_nonfinite: bool = False) -> None:
    """Step 3 for one network: convert, write `tmp`, read it back, compare bit for bit, record."""
    load_notes: list[str] = []
    state, job.state = job.state, None  # from now on only this frame holds the network's tensors
    if state is None:
        state, _ = unwrap(_load(job.src, way.in_naming, lazy=False, notes=load_notes), source=str(job.src))
    check_weight_values(state, str(job.src), allow_nonfinite=allow_nonfinite)
    convert = torch_to_paddle if way.in_naming == "torch" else paddle_to_torch
    converted = convert(job.network, state, source=str(job.src))
    if verbose:
        for src_key, dst_key in _key_pairs(job.network, way):
            array = converted[dst_key]
            print(f"{src_key} -> {dst_key} {list(array.shape)} {array.dtype.name}", file=stdout)
    for note in load_notes:
        if note not in job.notes:
            job.notes.append(note)
    cio.save_state(converted, tmp, naming=way.out_naming)
    del state
    if tmp.suffix == ".pdparams":  # read back and hashed in one pass
        raw, sha = cio.load_pdparams_with_sha256(tmp)
        job.dst_sha256 = Future()
        job.dst_sha256.set_result(sha)
    else:
        raw = cio.load_any(tmp, mmap=True)
    reread, _ = unwrap(raw, source=str(tmp))
    del raw
    bad = [k for k, v in converted.items() if k not in reread or not cio.bitwise_equal(v, reread[k])]
    if bad or len(reread) != len(converted):
        raise ConrInputError(f"{job.dst}: re-reading the written file gave different tensors ({', '.join(bad[:5])})")
    dtypes = Counter(dtype_name(v) for v in converted.values())
    job.record = {
        "tensors": len(converted),
        "parameters": int(sum(int(np.prod(v.shape)) for v in converted.values())),
        "dtypes": dict(sorted(dtypes.items())),
    }
    if set(dtypes) != {"float32"}:
        job.record["dtype_note"] = (
            f"kept as {', '.join(sorted(dtypes))} (the official checkpoint is float32); not cast"
        )
    job.record["reloaded_bit_identical"] = True
    del converted, reread


def _key_pairs(network: str, way: Direction) -> list[tuple[str, str]]:
    """(source name, converted name) of every tensor of `network`, in the official order."""
    pairs = [(k, torch_to_paddle_key(k, spec.shape)) for k, spec in official_manifest()[network].tensors.items()]
    return pairs if way.in_naming == "torch" else [(p, t) for t, p in pairs]


def _report(way: Direction, src: Path, out: Path, jobs: list[_Job], absent: list[str], fmt: str) -> dict:
    networks = {}
    for job in jobs:
        networks[job.network] = {
            "input": {"path": str(job.src.resolve()), "sha256": job.src_sha256.result(), "bytes": job.src.stat().st_size},
            "output": {"path": _relative(job.dst, out), "format": fmt, "sha256": job.dst_sha256.result()},
            "tensors": job.record["tensors"],
            "parameters": job.record["parameters"],
            "dtypes": job.record["dtypes"],
            **({"dtype_note": job.record["dtype_note"]} if "dtype_note" in job.record else {}),
            "notes": job.notes,
            "reloaded_bit_identical": job.record["reloaded_bit_identical"],
        }
    return {
        "tool": {"name": TOOL_NAME, "version": tool_version(), "command": way.name},
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": _dist_version("torch"),
            "paddlepaddle": _dist_version("paddlepaddle"),
            "safetensors": _dist_version("safetensors"),
        },
        "source": str(src.resolve()),
        "naming": {"input": way.in_naming, "output": way.out_naming},
        "networks": networks,
        "absent": absent,
        "reloaded_bit_identical": all(job.record["reloaded_bit_identical"] for job in jobs),
    }


# ------------------------------------------------------------------------------------------------------- inspect
INSPECT_SUFFIXES = (".pth", ".pt", ".safetensors", ".pdparams")


def _naming_of(path: Path, state: dict) -> str:
    if path.suffix == ".pdparams":
        return "paddle"
    if path.suffix == ".safetensors" and any(k.endswith((".norm.scale", "._weight")) for k in state):
        return "paddle"
    return "torch"


def inspect_paths(target: str | Path, *, stdout: TextIO | None = None) -> int:
    """Print a table of the checkpoints in file/folder `target` and how each differs from the manifest.
    Returns 0 when all match, 1 when one differs; raises ConrInputError on unreadable input."""
    stdout = stdout or sys.stdout
    target = Path(target)
    if not target.exists():
        raise ConrInputError(f"{target}: no such file or folder")
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.is_file() and p.suffix in INSPECT_SUFFIXES)
        if not files:
            raise ConrInputError(f"{target}: holds no {' / '.join(INSPECT_SUFFIXES)} file")
    else:
        if target.suffix not in INSPECT_SUFFIXES:
            raise ConrInputError(f"{target}: not a {' / '.join(INSPECT_SUFFIXES)} file")
        files = [target]

    rows, details, differs = [], [], False
    for path in files:
        notes: list[str] = []
        raw = cio.read_safetensors_specs(path) if path.suffix == ".safetensors" else None
        if raw is None:
            raw = cio.load_torch_file(path, mmap=True, notes=notes) if path.suffix in (".pth", ".pt") else cio.load_paddle_file(path)
        state, unwrap_notes = unwrap(raw, source=str(path))
        naming = _naming_of(path, state)
        try:
            network = identify_network(state, naming=naming, source=str(path))
        except ConrInputError as exc:
            network, problems = "?", [str(exc).split(": ", 1)[1]]
        else:
            problems = check_against_manifest(network, state, naming=naming).problems()
        differs |= bool(problems)
        dtypes = Counter(dtype_name(v) for v in state.values())
        rows.append(
            [
                path.name,
                network,
                naming,
                str(len(state)),
                f"{sum(int(np.prod(v.shape)) for v in state.values()):,}",
                ", ".join(f"{d} x{n}" for d, n in sorted(dtypes.items())),
                "ok" if not problems else "DIFFERS",
                cio.sha256_file(path),
            ]
        )
        details += [f"{path.name}: {p}" for p in problems] + [f"{path.name}: note: {n}" for n in unwrap_notes + notes]
        del raw, state

    header = ["file", "network", "names", "tensors", "parameters", "dtypes", "manifest", "sha256"]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=stdout)
    for line in details:
        print(line, file=stdout)
    return 1 if differs else 0
