"""The output files of a render, one FrameJob per pose: what a frame writes, whether it is already complete
(`--resume`), and writing it (every file under a temporary name, renamed into place, the frame last).

Output format (exactly the official `save_output`, megvii-research/CoNR @ 660c4f7): RGBA (4, S, S) -> HWC ->
clamp(x * 255) truncated -> pasted back into the pose frame -> `<name>.png`; for pose images also `<name>_udp.png`
(uint8 preview of concat(xyz * a, a)) and `<name>_udp.npz` (key `i`, float32 S x S x 4 = xyz + a).
"""
from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from conr_common.platform.atomic import atomic_write_bytes, encode_png
from conr_common.platform.errors import ConrInputError
from conr_common.data.headers import header_shape
from conr_common.data.pipeline import PoseFrame, paste_back, to_uint8

__all__ = ["FrameJob", "frame_is_complete", "plan_jobs", "write_empty", "write_frame"]


def frame_is_complete(path: Path, frame_hw: tuple[int, int] | None = None) -> bool:
    """True if `path` is a frame this renderer could have written: a regular file (not a symbolic link) holding a
    PNG that decodes to 8-bit RGBA and, when `frame_hw` is given, has the size of its pose frame. A file renamed
    into place is complete; this also rejects damaged files and foreign ones (a 5x5 image or an RGB PNG dropped into
    the folder used to survive `--resume` until the video encoder refused it). Whether this render wrote it is
    `conr_app.rendering.resume.frame_done`'s question."""
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return False
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error):
        return False
    if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 4:
        return False
    return frame_hw is None or tuple(image.shape[:2]) == tuple(frame_hw)


# called with a job and its files' (path, bytes) before they are written: conr_app.rendering.resume.FrameJournal.record
Recorder = Callable[["FrameJob", Sequence[tuple[Path, bytes]]], None]


def _npz_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, i=array)
    return buffer.getvalue()


@dataclass(frozen=True)
class FrameJob:
    """One output frame of a sequence: its pose file and the files it writes (frame last)."""

    pose: Path
    frame: Path
    udp_png: Path | None
    udp_npz: Path | None

    def outputs(self) -> list[Path]:
        return [p for p in (self.udp_png, self.udp_npz, self.frame) if p is not None]

    def complete(self) -> bool:
        # the frame is written last, so a complete frame PNG means its UDP files were written before it; its size
        # is the pose frame's, read from the pose file's header
        shape = header_shape(self.pose)
        frame_hw = tuple(shape[:2]) if shape is not None and len(shape) >= 2 else None
        return frame_is_complete(self.frame, frame_hw) and all(p.is_file() for p in self.outputs())


def plan_jobs(poses: Sequence[Path], out: Path, pose_images: bool) -> list[FrameJob]:
    """One FrameJob per pose file, in order; ConrInputError when two outputs would share a name."""
    jobs, seen = [], {}
    for pose in poses:
        stem = pose.stem
        key = stem.casefold()  # case-insensitive file systems would merge these
        if key in seen:
            raise ConrInputError(f"{pose}: same output name '{stem}.png' as {seen[key]}; rename one of them")
        seen[key] = pose
        jobs.append(FrameJob(pose, out / f"{stem}.png",
                             out / f"{stem}_udp.png" if pose_images else None,
                             out / f"{stem}_udp.npz" if pose_images else None))
    names = {j.frame.name.casefold() for j in jobs}
    for job in jobs:
        for extra in job.outputs()[:-1]:
            if extra.name.casefold() in names:
                raise ConrInputError(f"{job.pose}: its UDP preview {extra.name} would overwrite an output frame")
    return jobs


def _write(job: FrameJob, contents: list[tuple[Path, bytes]], record: Recorder | None) -> None:
    """Record `job`'s files (when `record` is given), then write each atomically, in order (the frame last)."""
    if record is not None:
        record(job, contents)
    for path, data in contents:
        atomic_write_bytes(path, data)


def write_empty(job: FrameJob, frame: PoseFrame, record: Recorder | None = None) -> None:
    """The files of an empty pose frame: a transparent frame of its size (and zero UDP previews)."""
    size = frame.alpha.shape[0]
    contents = []
    if job.udp_png is not None:
        zeros = np.zeros((size, size, 4), np.float32)
        contents += [(job.udp_npz, _npz_bytes(zeros)), (job.udp_png, encode_png(job.udp_png, zeros.astype(np.uint8)))]
    blank = paste_back(np.zeros((size, size, 4), np.uint8), None, frame.frame_hw)
    _write(job, contents + [(job.frame, encode_png(job.frame, blank))], record)


def write_frame(job: FrameJob, frame: PoseFrame, rgba: np.ndarray, xyz: np.ndarray, alpha: np.ndarray,
                pred: np.ndarray | None, record: Recorder | None = None) -> None:
    """One rendered frame's files: the UDP previews of a pose image (when `pred` is given), then the frame.
    `record(job, [(path, bytes), ...])` is called before any of them is written (conr_app.rendering.resume)."""
    contents = []
    if pred is not None:
        udp = np.concatenate([xyz * alpha, alpha], axis=0).transpose(1, 2, 0)  # (S, S, 4)
        contents += [(job.udp_npz, _npz_bytes(np.ascontiguousarray(pred.transpose(1, 2, 0)))),
                     (job.udp_png, encode_png(job.udp_png, to_uint8(udp)))]
    image = to_uint8(rgba.transpose(1, 2, 0))  # (S, S, 4)
    _write(job, contents + [(job.frame, encode_png(job.frame, paste_back(image, frame.crop, frame.frame_hw)))], record)
