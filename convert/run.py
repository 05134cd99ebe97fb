"""What `python -m convert torch2paddle|paddle2torch|inspect` run and print.

The conversion itself is the library function `convert.conversion.convert_checkpoints` (it prints nothing);
`convert_and_print` adds the command's lines. `inspect_paths` prints the table of `inspect`.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import TextIO

import numpy as np

from conr_common.weights import checkpoints as ckpt
from convert.conversion import REPORT_NAME, ConversionResult, convert_checkpoints, report_outputs
from conr_common.platform.errors import ConrInputError
from conr_common.platform.integrity import sha256_file
from conr_common.contract.manifest import check_against_manifest, dtype_name, identify_network, unwrap

__all__ = ["convert_and_print", "summary_lines", "inspect_paths", "report_problems"]


def convert_and_print(direction: str, src: str | Path, out: str | Path | None = None, *, fmt: str = "pdparams",
                      force: bool = False, verbose: bool = False, allow_nonfinite: bool = False,
                      stdout: TextIO | None = None) -> ConversionResult:
    """`convert_checkpoints` with the command's output on `stdout`: with `verbose`, `src -> dst [shape] dtype` for
    every tensor as it is converted; then one line per network, its notes, the absent files and the report."""
    stdout = stdout or sys.stdout

    def show(src_key: str, dst_key: str, array: np.ndarray) -> None:
        print(f"{src_key} -> {dst_key} {list(array.shape)} {array.dtype.name}", file=stdout)

    result = convert_checkpoints(direction, src, out, fmt=fmt, force=force, allow_nonfinite=allow_nonfinite,
                                 on_tensor=show if verbose else None)
    for line in summary_lines(result):
        print(line, file=stdout)
    return result


def summary_lines(result: ConversionResult) -> list[str]:
    """The lines the command prints after a conversion."""
    lines = []
    for job in result.jobs:
        r = job.record
        lines.append(f"{job.src} -> {job.dst} ({r['tensors']} tensors, {r['parameters']:,} parameters, "
                     f"{', '.join(r['dtypes'])})")
        lines += [f"  note: {note}" for note in job.notes]
    if result.absent:
        lines.append(f"absent from {result.source} (not converted): {', '.join(result.absent)}")
    lines.append(f"report: {result.report_path} (every written tensor re-read and bit-identical)")
    return lines


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
        # a FIFO or a link to /dev/zero named shader.pth is refused, never skipped (nor read: it would not end)
        candidates = sorted(p for p in target.iterdir() if p.suffix in INSPECT_SUFFIXES)
        files = [p for p in candidates if ckpt.regular_file_present(p)]
        if not files:
            raise ConrInputError(f"{target}: holds no {' / '.join(INSPECT_SUFFIXES)} file")
    else:
        if target.suffix not in INSPECT_SUFFIXES:
            raise ConrInputError(f"{target}: not a {' / '.join(INSPECT_SUFFIXES)} file")
        files = [target]

    rows, details, differs, shas = [], [], False, {}
    for path in files:
        notes: list[str] = []
        raw = ckpt.read_safetensors_specs(path) if path.suffix == ".safetensors" else None
        if raw is None:
            raw = ckpt.load_torch_file(path, mmap=True, notes=notes) if path.suffix in (".pth", ".pt") else ckpt.load_paddle_file(path)
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
                shas.setdefault(path.name, sha256_file(path)),
            ]
        )
        details += [f"{path.name}: {p}" for p in problems] + [f"{path.name}: note: {n}" for n in unwrap_notes + notes]
        del raw, state

    mixed = report_problems(target, shas) if target.is_dir() else []
    details += mixed
    differs |= bool(mixed)
    header = ["file", "network", "names", "tensors", "parameters", "dtypes", "manifest", "sha256"]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=stdout)
    for line in details:
        print(line, file=stdout)
    return 1 if differs else 0


def report_problems(folder: Path, shas: dict[str, str]) -> list[str]:
    """Where a converted folder's files and its conversion_report.json disagree (`shas`: {file name: sha256} of the
    checkpoints found): a file the report does not list, one whose sha256 differs, one it lists that is gone. A
    folder without a report has nothing to disagree with (the official files)."""
    if not (folder / REPORT_NAME).exists():
        return []
    listed = report_outputs(folder)
    if listed is None:
        return [f"{REPORT_NAME}: unreadable, or not a conversion report"]
    problems = [f"{name}: not described by {REPORT_NAME} (a file of another conversion?)"
                for name in sorted(set(shas) - set(listed))]
    problems += [f"{name}: sha256 differs from {REPORT_NAME} (changed after the conversion)"
                 for name in sorted(set(shas) & set(listed)) if shas[name] != listed[name]]
    problems += [f"{name}: listed in {REPORT_NAME} but absent" for name in sorted(set(listed) - set(shas))]
    return problems
