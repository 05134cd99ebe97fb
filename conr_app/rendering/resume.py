"""What a render's output folder records about the render that wrote it, so that `--resume` knows what it resumes
(issue 23: a frame rendered at 128 px used to be kept when resuming at 256 px, and an output `0.png` that was a
symbolic link to a sheet view counted as done).

Two files of the render's own, next to the frames (names start with '.', so `*.png` globs never see them):
* `.conr-render.json`, written atomically when a render starts writing: the settings that decide a frame's bytes
  (`RenderIdentity`: size, engine, precision, UDP or pose images, the character sheet as the model sees it (view
  count and sha256 of the parsed views) and the weights (`conr_common.weights.checkpoints.weights_hash` of the four files).
* `.conr-render.frames`, a journal: one JSON line per frame (its pose file and that file's sha256, and the name and
  sha256 of every file the frame writes), appended under an `flock` so that the ranks of a distributed render
  share it safely. The line is appended *before* the frame's files are renamed into place: a visible frame is
  always recorded, and a line whose files never arrived is harmless because a frame counts only by its hashes.

`--resume` into a folder whose record differs is refused, naming the first differing setting. A frame is done only
if every file of its journal line is a regular file (not a link, not a folder) with that sha256 and its pose file
still has the recorded sha256. A folder without a readable record has no frame done. A render without `--resume`
starts a new record (an empty journal). Cost: the weights are hashed once per Renderer (722 MB at sha256's 700
MB/s on a 2-core AMD EPYC: 1 to 3.5 s with the machine busy); resuming hashes the pose and frame files once.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from conr_common.platform.atomic import atomic_write_bytes
from conr_common.platform.errors import ConrInputError
from conr_common.platform.filelock import exclusive_lock
from conr_common.platform.integrity import sha256_file

from conr_app.rendering.frames import FrameJob

__all__ = ["RECORD", "JOURNAL", "RECORD_FILES", "RenderIdentity", "sheet_sha256", "read_identity",
           "check_resume", "begin_record", "read_journal", "frame_done", "FrameJournal"]

RECORD = ".conr-render.json"
JOURNAL = ".conr-render.frames"
RECORD_FILES = (RECORD, JOURNAL)
FORMAT = "conr-render/1"


@dataclass(frozen=True)
class RenderIdentity:
    """The settings and inputs that decide the bytes of every frame of a render (not the batch, fps or ranks)."""

    size: int
    engine: str
    precision: str
    pose_images: bool
    views: int
    sheet_sha256: str
    weights_sha256: str

    def describe(self, name: str) -> str:
        """Setting `name` of this identity as the user would say it."""
        value = getattr(self, name)
        if name == "pose_images":
            return "--pose-images" if value else "UDP poses (no --pose-images)"
        if name == "views":
            return f"{value} sheet view(s)"
        return f"--{name} {value}"

    def difference(self, wanted: RenderIdentity) -> str | None:
        """How this (recorded) identity differs from `wanted`, first difference only, as in `rendered <...>`; None
        if they are equal. Hashes are not printed: they say nothing to a reader."""
        for f in fields(self):
            if getattr(self, f.name) == getattr(wanted, f.name):
                continue
            if f.name == "sheet_sha256":
                return "from another character sheet (its views differ)"
            if f.name == "weights_sha256":
                return "with other weights (their weights_hash differs)"
            return f"with {self.describe(f.name)}, not {wanted.describe(f.name)}"
        return None


def sheet_sha256(sheet: np.ndarray) -> str:
    """sha256 of the parsed character sheet (uint8 (M, S, S, 4)): exactly what the model sees of the sheet files."""
    sheet = np.ascontiguousarray(sheet)
    return hashlib.sha256(f"{sheet.dtype}{sheet.shape}".encode() + sheet.tobytes()).hexdigest()


def _is_plain_file(path: Path) -> bool:
    """A regular file that is not a symbolic link (lstat): what this renderer writes, and all it trusts."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_identity(out: Path) -> RenderIdentity | None:
    """The identity recorded in `out`, or None when there is no readable record of this format."""
    path = Path(out) / RECORD
    if not _is_plain_file(path):
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            return None
        return RenderIdentity(**{f.name: data["settings"][f.name] for f in fields(RenderIdentity)})
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def check_resume(out: Path, wanted: RenderIdentity) -> None:
    """ConrInputError naming the first differing setting when `out` records a render other than `wanted`."""
    recorded = read_identity(out)
    difference = recorded.difference(wanted) if recorded is not None else None
    if difference is not None:
        raise ConrInputError(f"--resume: {out} holds frames rendered {difference}; resume with the same "
                             f"settings, or render without --resume to start over")


def begin_record(out: Path, identity: RenderIdentity, resume: bool) -> None:
    """Before the first frame is written: keep the journal when resuming the render `out` records, else start a new
    one; then (re)write the record. Call it from one process only (rank 0 of a distributed render)."""
    out = Path(out)
    keep = resume and read_identity(out) == identity and _is_plain_file(out / JOURNAL)
    if not keep:
        atomic_write_bytes(out / JOURNAL, b"")
    record = {"format": FORMAT, "settings": asdict(identity), "journal": JOURNAL}
    atomic_write_bytes(out / RECORD, (json.dumps(record, indent=1) + "\n").encode())


def read_journal(out: Path) -> dict[str, dict]:
    """{frame file name: its latest journal line} of `out`; lines a killed writer cut short are skipped."""
    path = Path(out) / JOURNAL
    if not _is_plain_file(path):
        return {}
    records = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            records[str(entry["frame"])] = entry
        except (ValueError, TypeError, KeyError):
            continue
    return records


def frame_done(job: FrameJob, records: dict[str, dict]) -> bool:
    """Whether `job` is finished by the recorded render: each of its files is a plain regular file with its recorded
    sha256, its pose file is unchanged, and its frame is a complete RGBA PNG of the pose frame's size."""
    entry = records.get(job.frame.name)
    outputs = job.outputs()
    if entry is None or not isinstance(entry.get("files"), dict) or set(entry["files"]) != {p.name for p in outputs}:
        return False
    for path in outputs:
        if not _is_plain_file(path) or sha256_file(path) != entry["files"][path.name]:
            return False
    try:
        pose_unchanged = sha256_file(job.pose) == entry.get("pose_sha256")
    except OSError:
        return False
    return pose_unchanged and job.complete()


@dataclass(frozen=True)
class FrameJournal:
    """Appends one line per frame to the journal of `out` (under an flock: the ranks of a render share it)."""

    out: Path

    def record(self, job: FrameJob, contents: Sequence[tuple[Path, bytes]]) -> None:
        """Record `job`'s files (path, the bytes about to be renamed into place) before they are written."""
        entry = {"frame": job.frame.name, "pose": job.pose.name, "pose_sha256": sha256_file(job.pose),
                 "files": {path.name: hashlib.sha256(data).hexdigest() for path, data in contents}}
        path = Path(self.out) / JOURNAL
        with exclusive_lock(path), open(path, "a", encoding="utf-8") as journal:
            journal.write(json.dumps(entry) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
