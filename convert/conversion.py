"""Whole-folder checkpoint conversion (the library behind `python -m convert torch2paddle|paddle2torch`).

Order of work, so that a bad input never leaves a half-written output and memory stays near one network:
1. find the inputs (a folder of official files, or one file whose network is found from its keys);
2. validate every input against the manifest, reading only names, shapes and dtypes where the format allows
   (torch files are memory-mapped, safetensors headers read), and hash it; refuse existing outputs (no `force`);
3. convert one network at a time: load, rename, write to a temporary file next to the destination, read that file
   back and compare every tensor bit for bit, free; the temporary files are renamed into place together, with the
   report, only once every network has passed.

Nothing here prints: `convert_checkpoints` returns a `ConversionResult` and calls `on_tensor` (if given) for every
converted tensor; the command line (`convert.run`) turns those into its lines.
"""
from __future__ import annotations

import contextlib
import json
import platform
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conr_common.weights import checkpoints as ckpt
from conr_common.platform.atomic import atomic_paths
from conr_common.data.checks import check_weight_values
from conr_common.contract.config import NETWORK_NAMES
from conr_common.platform.errors import ConrInputError
from conr_common.platform.integrity import sha256_file
from conr_common.contract.manifest import check_against_manifest, dtype_name, identify_network, official_manifest, paddle_to_torch
from conr_common.contract.manifest import torch_to_paddle, unwrap
from conr_common.platform.outputs import FILE, check_output, check_own_files
from conr_common.contract.rename import torch_to_paddle_key
from conr_common.platform.versions import dist_versions, tool_version

__all__ = ["REPORT_NAME", "DIRECTIONS", "Direction", "ConversionJob", "ConversionResult", "convert_checkpoints",
           "TensorCallback"]

REPORT_NAME = "conversion_report.json"
TOOL_NAME = "conr-paddle convert"

# (source key, converted key, converted array), called once per tensor in the official order
TensorCallback = Callable[[str, str, np.ndarray], None]


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
        return ckpt.TORCH_SUFFIXES if self.in_naming == "torch" else ckpt.PADDLE_SUFFIXES


DIRECTIONS = {
    "torch2paddle": Direction("torch2paddle", "torch", "paddle"),
    "paddle2torch": Direction("paddle2torch", "paddle", "torch"),
}


@dataclass
class ConversionJob:
    """One network's conversion: its source file, and what validation and conversion learn about it."""

    src: Path
    network: str | None = None  # None until found from the keys (single-file source)
    dst: Path | None = None
    notes: list[str] = field(default_factory=list)
    record: dict = field(default_factory=dict)
    state: dict | None = None  # memory-mapped tensors kept from validation (torch zip files only)
    src_sha256: Future | None = None
    dst_sha256: Future | None = None


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion wrote: the report (also in `report_path`), each network's job, the absent files."""

    report: dict
    report_path: Path
    source: Path
    jobs: tuple[ConversionJob, ...]
    absent: tuple[str, ...]


def _load(path: Path, naming: str, *, lazy: bool, notes: list[str]):
    """Raw loaded object of a source file; `lazy` maps or reads headers only where the format allows."""
    if path.suffix == ".safetensors" and lazy:
        return ckpt.read_safetensors_specs(path)
    if naming == "torch":
        return ckpt.load_torch_file(path, mmap=True, notes=notes)
    return ckpt.load_paddle_file(path, notes=notes)


def _find_inputs(direction: Direction, src: Path) -> tuple[list[ConversionJob], list[str]]:
    if not src.exists() and not src.is_symlink():
        raise ConrInputError(f"{src}: no such file or folder")
    if not src.is_dir() and ckpt.regular_file_present(src):
        if src.suffix not in direction.suffixes:
            raise ConrInputError(f"{src}: not a {' / '.join(direction.suffixes)} file")
        return [ConversionJob(src)], []
    jobs, absent = [], []
    for network in NETWORK_NAMES:
        present = [src / n for n in direction.input_names(network) if ckpt.regular_file_present(src / n)]
        if len(present) > 1:
            raise ConrInputError(f"{src}: both {present[0].name} and {present[1].name} are here; keep one")
        if present:
            jobs.append(ConversionJob(present[0], network))
        else:
            absent.append(direction.input_names(network)[0])
    if not jobs:
        expected = ", ".join(direction.input_names(n)[0] for n in NETWORK_NAMES)
        raise ConrInputError(f"{src}: holds none of the official checkpoint files ({expected})")
    return jobs, absent


def _validate(job: ConversionJob, naming: str) -> None:
    """Step 2 for one input: readable, safe, a known network, exactly the official tensors.

    A torch zip file is memory-mapped: its tensors are kept for step 3 (no second load; pages are read only when
    converted). Anything read into memory is dropped and read again in step 3, one network at a time."""
    state, notes = unwrap(_load(job.src, naming, lazy=True, notes=job.notes), source=str(job.src))
    if job.network is None:
        job.network = identify_network(state, naming=naming, source=str(job.src))
    mismatch = check_against_manifest(job.network, state, naming=naming)
    if not mismatch.ok:
        raise ConrInputError(
            f"{job.src}: does not match the official {job.network} checkpoint: " + "; ".join(mismatch.problems())
        )
    job.notes.extend(notes)
    if naming == "torch" and ckpt.is_torch_zip(job.src):
        job.state = state


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def _output_folder(way: Direction, src: Path, out: str | Path | None) -> Path:
    """The output folder (default <SRC>/paddle for torch2paddle), refused when it is a file or holds the source."""
    if out is None:
        if way.out_naming == "torch":
            raise ConrInputError("paddle2torch needs an output folder (-o OUT)")
        out = (src if src.is_dir() else src.parent) / "paddle"
    out = Path(out)
    source_folder = src if src.is_dir() else src.parent
    # -o equal to the source: a second format of the same network makes the folder unusable as a source ("two
    # inputs hold the same network"); -o containing it: `paddle2torch weights/paddle -o weights --force` replaced the
    # official .pth files beside the source. Inside the source is the documented layout (default <SRC>/paddle).
    check_output(out, {"source": source_folder}, "-o", allow_inside={"source"},
                 hint=f"write to a folder of its own (default: {source_folder / 'paddle'})")
    return out


def network_file_names() -> frozenset[str]:
    """Every name a network's weights take in a folder, in either direction's naming (<network>.pdparams,
    .safetensors, the official .pth): what makes a folder hold (part of) a weight set."""
    return frozenset(name for way in DIRECTIONS.values() for network in NETWORK_NAMES
                     for name in (*way.input_names(network), way.output_name(network, "pdparams")))


def report_outputs(folder: Path) -> dict[str, str] | None:
    """{file name: sha256} of the outputs `folder`'s conversion_report.json lists, or None without a readable
    report (this toolkit's manifest of a converted folder)."""
    try:
        report = json.loads((folder / REPORT_NAME).read_text())
        return {Path(net["output"]["path"]).name: net["output"]["sha256"] for net in report["networks"].values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _check_replace(jobs: list[ConversionJob], out: Path, report_path: Path, force: bool) -> None:
    """The outputs' names: none may exist without `force`; with it, everything in the folder must be what an earlier
    conversion wrote (its report lists it). Either way the folder may hold no network file this run does not write
    (issue 23: `torch2paddle ONE.pth -o D --force` left D a mix of two weight sets under a report of one file)."""
    writes = [job.dst for job in jobs] + [report_path]
    for path in writes:
        check_output(path, {}, "-o", kind=FILE)
        if path.exists() and not force:
            raise ConrInputError(f"{path}: exists; pass --force to replace it")
    if not out.is_dir():
        return
    names = {path.name for path in writes}
    stale = sorted(e.name for e in out.iterdir() if e.name in network_file_names() and e.name not in names)
    if stale:
        raise ConrInputError(f"-o {out}: holds {stale[0]} of an earlier weight set, which this conversion of "
                             f"{len(jobs)} network(s) would not replace; convert the whole set or write to an empty "
                             "folder, so that its conversion_report.json describes every file")
    if force and any(path.exists() for path in writes):
        check_own_files(out, {REPORT_NAME, *(report_outputs(out) or {})}, "-o")


def _validate_all(jobs: list[ConversionJob], way: Direction, src: Path, out: Path, fmt: str, force: bool) -> Path:
    """Step 2 for every input, then the outputs' names: none may replace an input, nor (without `force`) exist.
    Returns the report's path."""
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
    _check_replace(jobs, out, report_path, force)
    return report_path


def convert_checkpoints(
    direction: str,
    src: str | Path,
    out: str | Path | None = None,
    *,
    fmt: str = "pdparams",
    force: bool = False,
    allow_nonfinite: bool = False,
    on_tensor: TensorCallback | None = None,
) -> ConversionResult:
    """Convert the official checkpoints in folder/file `src` into folder `out`; returns what was written (the
    report is also in `out/conversion_report.json`). Raises ConrInputError, leaving no output file, on any bad
    input (NaN/Inf weights included, unless `allow_nonfinite`). `on_tensor` sees every converted tensor."""
    way = DIRECTIONS[direction]
    src = Path(src)
    if fmt not in ("pdparams", "safetensors"):
        raise ConrInputError(f"unknown output format {fmt!r} (pdparams or safetensors)")
    if way.out_naming == "torch":
        fmt = "pth"
    jobs, absent = _find_inputs(way, src)
    out = _output_folder(way, src, out)
    report_path = _validate_all(jobs, way, src, out, fmt, force)
    report = _write_all(jobs, way, src, out, absent, fmt, report_path, allow_nonfinite, on_tensor)
    return ConversionResult(report, report_path, src, tuple(jobs), tuple(absent))


def _write_all(jobs: list[ConversionJob], way: Direction, src: Path, out: Path, absent: list[str], fmt: str,
               report_path: Path, allow_nonfinite: bool, on_tensor: TensorCallback | None) -> dict:
    """Step 3: every network and the report staged under temporary names, renamed into place only if all pass."""
    created_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # sha256 of inputs and outputs runs on a second thread (hashlib releases the GIL) while this one converts
    hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
    try:
        for job in jobs:
            job.src_sha256 = hasher.submit(sha256_file, job.src)
        # every output is renamed into place only if all succeed, the report last
        with atomic_paths([job.dst for job in jobs] + [report_path]) as tmps:
            for job, tmp in zip(jobs, tmps):
                convert_network(job, way, tmp, allow_nonfinite=allow_nonfinite, on_tensor=on_tensor)
                if job.dst_sha256 is None:  # not hashed while being read back
                    job.dst_sha256 = hasher.submit(sha256_file, tmp)
            report = _report(way, src, out, jobs, absent, fmt)
            tmps[-1].write_text(json.dumps(report, indent=2) + "\n")
    except BaseException:
        for job in jobs:
            job.state = None
        hasher.shutdown(wait=True, cancel_futures=True)  # a running hash may still read a temporary file
        if created_out:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty
        raise
    hasher.shutdown()
    return report


def convert_network(job: ConversionJob, way: Direction, tmp: Path, *, allow_nonfinite: bool = False,
                    on_tensor: TensorCallback | None = None) -> None:
    """Step 3 for one network: convert, write `tmp`, read it back, compare bit for bit, record."""
    load_notes: list[str] = []
    state, job.state = job.state, None  # from now on only this frame holds the network's tensors
    if state is None:
        state, _ = unwrap(_load(job.src, way.in_naming, lazy=False, notes=load_notes), source=str(job.src))
    check_weight_values(state, str(job.src), allow_nonfinite=allow_nonfinite)
    convert = torch_to_paddle if way.in_naming == "torch" else paddle_to_torch
    converted = convert(job.network, state, source=str(job.src))
    if on_tensor is not None:
        for src_key, dst_key in _key_pairs(job.network, way):
            on_tensor(src_key, dst_key, converted[dst_key])
    for note in load_notes:
        if note not in job.notes:
            job.notes.append(note)
    ckpt.save_state(converted, tmp, naming=way.out_naming)
    del state
    reread = _read_back(job, tmp)
    bad = [k for k, v in converted.items() if k not in reread or not ckpt.bitwise_equal(v, reread[k])]
    if bad or len(reread) != len(converted):
        raise ConrInputError(f"{job.dst}: re-reading the written file gave different tensors ({', '.join(bad[:5])})")
    job.record = _record(converted)
    del converted, reread


def _read_back(job: ConversionJob, tmp: Path) -> dict:
    """The tensors of the file just written (a .pdparams is read back and hashed in one pass)."""
    if tmp.suffix == ".pdparams":
        raw, sha = ckpt.load_pdparams_with_sha256(tmp)
        job.dst_sha256 = Future()
        job.dst_sha256.set_result(sha)
    else:
        raw = ckpt.load_any(tmp, mmap=True)
    reread, _ = unwrap(raw, source=str(tmp))
    return reread


def _record(converted: dict) -> dict:
    """The report's figures of one converted network (tensor and parameter counts, dtypes)."""
    dtypes = Counter(dtype_name(v) for v in converted.values())
    record = {
        "tensors": len(converted),
        "parameters": int(sum(int(np.prod(v.shape)) for v in converted.values())),
        "dtypes": dict(sorted(dtypes.items())),
    }
    if set(dtypes) != {"float32"}:
        record["dtype_note"] = f"kept as {', '.join(sorted(dtypes))} (the official checkpoint is float32); not cast"
    record["reloaded_bit_identical"] = True
    return record


def _key_pairs(network: str, way: Direction) -> list[tuple[str, str]]:
    """(source name, converted name) of every tensor of `network`, in the official order."""
    pairs = [(k, torch_to_paddle_key(k, spec.shape)) for k, spec in official_manifest()[network].tensors.items()]
    return pairs if way.in_naming == "torch" else [(p, t) for t, p in pairs]


def _report(way: Direction, src: Path, out: Path, jobs: list[ConversionJob], absent: list[str], fmt: str) -> dict:
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
            **dist_versions(("torch", "paddlepaddle", "safetensors")),
        },
        "source": str(src.resolve()),
        "naming": {"input": way.in_naming, "output": way.out_naming},
        "networks": networks,
        "absent": absent,
        "reloaded_bit_identical": all(job.record["reloaded_bit_identical"] for job in jobs),
    }
