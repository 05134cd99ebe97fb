"""Render a character-sheet + pose sequence into an animation with the Paddle port of CoNR.

The user-facing loop of the official `train.py:infer` / `save_output` (megvii-research/CoNR @ 660c4f7), for long
jobs: the sheet is parsed once, every input is validated before the first output file is written, frames are
batched through a `Runner` (eager Paddle, or the Paddle Inference predictor of `conr_paddle.predictor`), every file is
written under a temporary name and renamed, and `resume=True` skips frames whose PNG is already complete.

Data path (exactly the official one):
* sheet: uint8 premultiplied RGB + alpha / 255 -> (M, 4, S, S) float32;
* UDP pose: xyz from the (nearest-resized) label, alpha = mask / 255; the model builds concat(xyz * a, a);
* pose image (`pose_images=True`): premultiplied RGB / 255 -> UDP parser -> xyz = pred[:, :3], a = pred[:, 3:4];
  the predicted UDP is saved as `<name>_udp.png` (uint8 preview of concat(xyz * a, a), like the official `udp_`
  output, S x S) and `<name>_udp.npz` (key `i`, float32 S x S x 4 = xyz + a, usable as a UDP input);
* output: RGBA (4, S, S) -> HWC -> clamp(x * 255) truncated -> pasted back into the pose frame -> `<name>.png`.
An empty pose frame (no opaque pixel) gives a fully transparent frame of its size without a model call.
"""
from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from conr_common.atomic import sweep_stale_temporaries
from conr_common.checkpoints import check_weights_dir, weights_hash
from conr_common.checks import check_output_apart, check_writable_target
from conr_common.cli import MAX_FPS
from conr_common.compare import psnr_db
from conr_common.errors import ConrInputError, ConrInternalError
from conr_common.headers import header_shape
from conr_common.pipeline import (
    PoseFrame,
    atomic_write_bytes,
    check_size,
    list_pose_files,
    load_character_sheet,
    load_pose_image,
    load_udp_pose,
    paste_back,
    to_uint8,
    write_png_atomic,
)

__all__ = [
    "ENGINES",
    "PRECISIONS",
    "DEFAULT_ENGINE",
    "RenderSummary",
    "RenderInterrupted",
    "Renderer",
    "make_runner",
    "frame_is_complete",
]

ENGINES = ("predictor", "eager", "onnxruntime")
PRECISIONS = ("fp32", "bf16")
DEFAULT_ENGINE = "predictor"  # Paddle Inference + oneDNN (conr_paddle.predictor); "eager" is the slow reference


@dataclass(frozen=True)
class RenderSummary:
    frames_total: int  # pose files in the sequence
    frames_written: int  # rendered (or written empty) by this call
    frames_skipped: int  # already complete (resume)
    seconds: float  # wall time of the frame loop (model load and video encoding excluded)
    fps: float  # frames_written / seconds
    frames: tuple[Path, ...]  # every output frame of the sequence, in pose order
    udp_previews: tuple[Path, ...] = ()  # pose-image path: <name>_udp.png and <name>_udp.npz
    videos: tuple[Path, ...] = ()  # MP4 (and WebM) if asked for
    engine: str = "eager"
    bf16_psnr_db: float | None = None  # --precision bf16: PSNR of the first rendered frame against fp32
    ranks: int = 1  # processes that rendered the sequence (conr_paddle.distributed); counts and fps cover them all


class RenderInterrupted(KeyboardInterrupt):
    """Ctrl-C during a render: every finished frame is on disk, no partial file is; rerun with resume."""

    def __init__(self, written: int, skipped: int, total: int, out: Path) -> None:
        super().__init__(f"interrupted after {skipped + written} of {total} frames")
        self.written, self.skipped, self.total, self.out = written, skipped, total, out


def make_runner(model, weights_hash: str | None, size: int, views: int, batch: int, precision: str = "fp32",
                engine: str = DEFAULT_ENGINE, cache_dir: str | os.PathLike | None = None, threads: int | None = None):
    """The Runner for `engine`: "eager" (dygraph, fp32 only), "predictor" (Paddle Inference graphs exported
    once per (weights, size, views, batch, precision) and cached on disk, see conr_paddle.export and conr_paddle.cache) or "onnxruntime"
    (the same graphs as ONNX, fp32, cached likewise, see conr_paddle.onnx_runner). threads: the predictor's CPU
    threads (None: every core this process may use); eager Paddle takes OMP_NUM_THREADS."""
    if precision not in PRECISIONS:
        raise ConrInputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if engine == "eager":
        if precision != "fp32":
            raise ConrInputError(f"--precision {precision} needs --engine predictor (eager Paddle runs fp32 only)")
        from .runner import EagerRunner

        return EagerRunner(model)
    if engine == "predictor":
        try:
            from .predictor import PredictorRunner
        except ImportError as e:
            raise ConrInputError(f"--engine predictor is not available ({e}); use --engine eager") from e
        if precision == "bf16":
            from .predictor import bf16_support

            ok, why = bf16_support()
            if not ok:
                raise ConrInputError(f"--engine predictor --precision bf16: {why}")
        try:
            return PredictorRunner(model, weights_hash, size=size, views=views, batch=batch, precision=precision,
                                   cache_dir=cache_dir, threads=threads)
        except ConrInputError:
            raise
        except Exception as e:  # not the input's fault: the export or Paddle Inference itself
            raise ConrInternalError("exporting or loading the predictor graphs", e) from e
    if engine == "onnxruntime":
        if precision != "fp32":
            raise ConrInputError(f"--precision {precision} needs --engine predictor (onnxruntime runs fp32 only)")
        try:
            from .onnx_runner import OnnxRunner

            import onnxruntime  # noqa: F401
            import paddle2onnx  # noqa: F401
        except ImportError as e:
            raise ConrInputError(f"--engine onnxruntime needs the [onnx] extra ({e}): pip install -e '.[onnx]'") from e
        try:
            return OnnxRunner(model, weights_hash, size=size, views=views, batch=batch, cache_dir=cache_dir)
        except ConrInputError:
            raise
        except Exception as e:  # not the input's fault: the export or onnxruntime itself
            raise ConrInternalError("exporting or loading the ONNX graphs", e) from e
    raise ConrInputError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")


# --------------------------------------------------------------------------------------------------- frames


def frame_is_complete(path: Path, frame_hw: tuple[int, int] | None = None) -> bool:
    """True if `path` is a frame this renderer could have written: a PNG that decodes to 8-bit RGBA and, when
    `frame_hw` is given, has the size of its pose frame. A file renamed into place is complete; this also rejects
    damaged files and foreign ones (a 5x5 image or an RGB PNG dropped into the folder used to survive `--resume`
    until the video encoder refused it)."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return False
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error):
        return False
    if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 4:
        return False
    return frame_hw is None or tuple(image.shape[:2]) == tuple(frame_hw)


def _npz_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, i=array)
    return buffer.getvalue()


@dataclass
class _Counter:
    written: int = 0


@dataclass(frozen=True)
class _Job:
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


def _plan(poses: Sequence[Path], out: Path, pose_images: bool) -> list[_Job]:
    jobs, seen = [], {}
    for pose in poses:
        stem = pose.stem
        key = stem.casefold()  # case-insensitive file systems would merge these
        if key in seen:
            raise ConrInputError(f"{pose}: same output name '{stem}.png' as {seen[key]}; rename one of them")
        seen[key] = pose
        jobs.append(_Job(pose, out / f"{stem}.png",
                         out / f"{stem}_udp.png" if pose_images else None,
                         out / f"{stem}_udp.npz" if pose_images else None))
    names = {j.frame.name.casefold() for j in jobs}
    for job in jobs:
        for extra in job.outputs()[:-1]:
            if extra.name.casefold() in names:
                raise ConrInputError(f"{job.pose}: its UDP preview {extra.name} would overwrite an output frame")
    return jobs


# --------------------------------------------------------------------------------------------------- renderer


@dataclass
class Renderer:
    """Paddle CoNR renderer. The model is loaded on the first `render` call, after the inputs are validated.

    weights_dir: folder with the four `<network>.pdparams` written by `python -m convert torch2paddle`.
    """

    weights_dir: str | os.PathLike
    size: int = 256
    batch: int = 1
    engine: str = DEFAULT_ENGINE
    precision: str = "fp32"
    cache_dir: str | os.PathLike | None = None
    threads: int | None = None  # predictor CPU threads (None: every core this process may use)
    _model: object = field(default=None, init=False, repr=False)
    _runners: dict = field(default_factory=dict, init=False, repr=False)
    _digest: str | None = field(default=None, init=False, repr=False)
    _weight_files: list = field(default_factory=list, init=False, repr=False)  # checked once, in __post_init__

    def __post_init__(self) -> None:
        self.weights_dir = Path(self.weights_dir)
        check_size(self.size)
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ConrInputError(f"--batch must be a positive integer, got {self.batch!r}")
        if self.engine not in ENGINES:
            raise ConrInputError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise ConrInputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.engine != "predictor" and self.precision != "fp32":
            raise ConrInputError(f"--precision {self.precision} needs --engine predictor ({self.engine} runs fp32 only)")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ConrInputError(f"--threads must be a positive integer, got {self.threads!r}")
        self._weight_files = check_weights_dir(self.weights_dir)

    # ---- model

    def _load_model(self):
        if self._model is None:
            from .model import CoNR, load_pdparams

            # restricted unpickler, strict: ConrInputError naming the file, every missing/unexpected key, shape
            self._model = load_pdparams(CoNR(), self.weights_dir)
        return self._model

    def _weights_hash(self) -> str:
        """sha256 of the four weight files, hashed once per Renderer (the key of the exported-graph cache)."""
        if self._digest is None:
            self._digest = weights_hash(self._weight_files)
        return self._digest

    def runner(self, views: int):
        key = views
        if key not in self._runners:
            model = self._load_model()
            digest = self._weights_hash() if self.engine != "eager" else None
            self._runners[key] = make_runner(model, digest, self.size, views, self.batch, self.precision,
                                             self.engine, self.cache_dir, self.threads)
            if self.engine != "eager":
                # the predictors (sessions) hold their own weights: the eager copy is reloaded only if another view count
                # or the bf16 PSNR check needs an export
                del model
                self._drop_model()
        return self._runners[key]

    def _drop_model(self) -> None:
        """Release the eager model (720 MB at official size) and hand the freed heap back to the OS."""
        from .predictor import return_freed_memory

        self._model = None
        return_freed_memory()

    # ---- rendering

    def validate(self, character_sheet, poses, out, *, pose_images: bool = False, video=None,
                 background=None, check_frames: bool = True):
        """Every check that needs no model: returns (sheet uint8 (M, S, S, 4), jobs, background or None)."""
        from .video import parse_background

        out = Path(out)
        if out.exists() and not out.is_dir():
            raise ConrInputError(f"{out}: output path exists and is not a folder")
        check_output_apart(out, {"--character-sheet": Path(character_sheet), "--poses": Path(poses)})
        check_writable_target(out, "--out")
        if video is not None:
            check_writable_target(Path(video).parent, "--video")
        if self.cache_dir is not None and Path(self.cache_dir).exists() and not Path(self.cache_dir).is_dir():
            raise ConrInputError(f"--cache-dir {self.cache_dir}: exists and is not a folder")
        if video is not None:
            video = Path(video)
            if video.suffix.lower() != ".mp4":
                raise ConrInputError(f"--video {video}: must end in .mp4")
            if video.exists() and video.is_dir():
                raise ConrInputError(f"--video {video}: is a folder")
        bg = parse_background(background) if background is not None else None
        sheet = load_character_sheet(character_sheet, self.size)
        jobs = _plan(list_pose_files(poses, images=pose_images), out, pose_images)
        if check_frames:
            load = load_pose_image if pose_images else load_udp_pose
            for job in jobs:
                load(job.pose, self.size)  # raises ConrInputError naming the file
        return sheet, jobs, bg

    def render(self, character_sheet: str | os.PathLike, poses: str | os.PathLike, out: str | os.PathLike, *,
               pose_images: bool = False, resume: bool = False, video: str | os.PathLike | None = None,
               fps: float = 30.0, background: str | os.PathLike | None = None, progress: bool = True,
               on_frame: Callable[[Path], None] | None = None) -> RenderSummary:
        """Render every pose of `poses` (natural order) with the character of `character_sheet` into `out`.

        resume: skip frames whose output PNG is already complete. video: also encode an MP4 (over `background`,
        a #RRGGBB colour or image; white if None) and, without a background, a WebM with alpha beside it.
        Raises ConrInputError (nothing written if the input is bad), RenderInterrupted on Ctrl-C.
        """
        from tqdm import tqdm

        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (0 < fps <= MAX_FPS):
            raise ConrInputError(f"--fps must be a number in (0, {MAX_FPS:g}], got {fps!r}")
        out = Path(out)
        sheet_u8, jobs, bg = self.validate(character_sheet, poses, out, pose_images=pose_images, video=video,
                                           background=background, check_frames=False)
        todo = [job for job in jobs if not (resume and job.complete())]
        load = load_pose_image if pose_images else load_udp_pose
        for job in todo:  # validate every frame still to render before writing anything
            load(job.pose, self.size)
        skipped = len(jobs) - len(todo)

        if todo:
            self.runner(views=sheet_u8.shape[0])  # load (a bad weights file stops here, before anything is written)
        out.mkdir(parents=True, exist_ok=True)
        for folder in {out, Path(video).parent} if video is not None else {out}:
            sweep_stale_temporaries(folder)  # what a killed earlier run (SIGKILL: no cleanup ran) left behind
        bar = tqdm(total=len(jobs), initial=skipped, unit="frame", disable=not progress, dynamic_ncols=True,
                   desc="render")
        counter = _Counter()

        def done(job: _Job) -> None:
            counter.written += 1
            bar.update(1)
            if on_frame is not None:
                on_frame(job.frame)

        t0 = time.perf_counter()
        try:
            psnr = self.render_jobs(sheet_u8, todo, pose_images, done, note=bar.write)
        except KeyboardInterrupt as e:
            raise RenderInterrupted(counter.written, skipped, len(jobs), out) from e
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        written = counter.written
        videos = self.encode_video(jobs, video, fps, bg)

        udp = tuple(p for j in jobs for p in (j.udp_png, j.udp_npz) if p is not None)
        return RenderSummary(
            frames_total=len(jobs), frames_written=written, frames_skipped=skipped, seconds=seconds,
            fps=written / seconds if seconds > 0 and written else 0.0, frames=tuple(j.frame for j in jobs),
            udp_previews=udp, videos=videos, engine=self._engine_label(), bf16_psnr_db=psnr,
        )

    def render_jobs(self, sheet_u8: np.ndarray, todo: Sequence[_Job], pose_images: bool,
                    done: Callable[[_Job], None], note: Callable[[str], None] = print) -> float | None:
        """Render `todo` (validated jobs) in order, `self.batch` frames per call, calling `done(job)` once each
        job's files are on disk. The sheet is parsed once per call. Returns the bf16 PSNR of the first frame (None
        for fp32 or when there is nothing to render). KeyboardInterrupt propagates (finished frames stay)."""
        if not todo:
            return None
        load = load_pose_image if pose_images else load_udp_pose
        runner = self.runner(views=sheet_u8.shape[0])
        sheet_f32 = np.ascontiguousarray(sheet_u8.transpose(0, 3, 1, 2), np.float32) / 255
        sheet = runner.parse_sheet(sheet_f32)
        pending: list[tuple[_Job, PoseFrame]] = []
        psnr: float | None = None

        def flush() -> None:
            nonlocal psnr
            if self.precision == "bf16" and psnr is None:
                psnr = self._bf16_psnr(runner, sheet, sheet_f32, pending[0][1], pose_images)
                note(f"bf16: first frame PSNR {psnr:.1f} dB against fp32")
            for job in self._render_batch(runner, sheet, pending, pose_images):
                done(job)
            pending.clear()

        for job in todo:
            frame = load(job.pose, self.size)
            if frame.crop is None:  # empty pose: transparent frame, no model call
                self._write_empty(job, frame)
                done(job)
                continue
            pending.append((job, frame))
            if len(pending) >= self.batch:
                flush()
        if pending:
            flush()
        return psnr

    @staticmethod
    def encode_video(jobs: Sequence[_Job], video: str | os.PathLike | None, fps: float, bg) -> tuple[Path, ...]:
        """The MP4 (and, without a background, the WebM) of every job's frame, in order; () without `video`."""
        if video is None:
            return ()
        from .video import encode_videos

        video = Path(video)
        video.parent.mkdir(parents=True, exist_ok=True)
        webm = video.with_suffix(".webm") if bg is None else None
        return tuple(encode_videos([j.frame for j in jobs], video, fps=fps, background=bg, webm=webm))

    def _engine_label(self) -> str:
        """"eager", or "predictor, conr_warp" / "predictor, grid_sample" (grid_sample: the custom operators
        could not be built here, see conr_paddle.ext)."""
        warps = sorted({r.warp_kind for r in self._runners.values() if hasattr(r, "warp_kind")})
        return ", ".join([self.engine, *warps])

    # ---- helpers

    def _bf16_psnr(self, runner, sheet, sheet_f32: np.ndarray, frame: PoseFrame, pose_images: bool) -> float:
        """PSNR (peak 1) of one frame's RGBA rendered in bf16 against the same frame in fp32."""
        fp32 = make_runner(self._load_model(), self._weights_hash(), self.size, sheet_f32.shape[0],
                           self.batch, "fp32", self.engine, self.cache_dir)
        outputs = []
        for r, s in ((runner, sheet), (fp32, fp32.parse_sheet(sheet_f32))):
            if pose_images:
                rgb = frame.rgb.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255)
                pred = np.asarray(r.parse_pose(np.ascontiguousarray(rgb)), np.float32)
                xyz, alpha = np.ascontiguousarray(pred[:, :3]), np.ascontiguousarray(pred[:, 3:4])
            else:
                xyz = np.ascontiguousarray(frame.xyz.transpose(2, 0, 1)[None], np.float32)
                alpha = frame.alpha[None, None].astype(np.float32) / np.float32(255)
            outputs.append(np.asarray(r.render(s, xyz, alpha), np.float64))
        del fp32  # a one-off: its predictors and the reloaded eager model are not needed for the sequence
        self._drop_model()
        return psnr_db(outputs[1], outputs[0])

    @staticmethod
    def _write_empty(job: _Job, frame: PoseFrame) -> None:
        size = frame.alpha.shape[0]
        if job.udp_png is not None:
            zeros = np.zeros((size, size, 4), np.float32)
            atomic_write_bytes(job.udp_npz, _npz_bytes(zeros))
            write_png_atomic(job.udp_png, np.zeros((size, size, 4), np.uint8))
        write_png_atomic(job.frame, paste_back(np.zeros((size, size, 4), np.uint8), None, frame.frame_hw))

    @staticmethod
    def _render_batch(runner, sheet, batch: list, pose_images: bool):
        """Run one batch through the runner and write its frames; yields each job once its frame is on disk."""
        jobs = [job for job, _ in batch]
        frames = [frame for _, frame in batch]
        alpha_u8 = np.stack([f.alpha for f in frames])[:, None]  # (B, 1, S, S)
        if pose_images:
            rgb = np.stack([f.rgb for f in frames]).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
            pred = np.asarray(runner.parse_pose(np.ascontiguousarray(rgb)), np.float32)  # (B, 4, S, S)
            xyz, alpha = np.ascontiguousarray(pred[:, :3]), np.ascontiguousarray(pred[:, 3:4])
        else:
            xyz = np.ascontiguousarray(np.stack([f.xyz for f in frames]).transpose(0, 3, 1, 2), np.float32)
            alpha = alpha_u8.astype(np.float32) / np.float32(255)
            pred = None
        rgba = np.asarray(runner.render(sheet, xyz, alpha))  # (B, 4, S, S) premultiplied
        for i, (job, frame) in enumerate(zip(jobs, frames)):
            if pred is not None:
                udp = np.concatenate([xyz[i] * alpha[i], alpha[i]], axis=0).transpose(1, 2, 0)  # (S, S, 4)
                atomic_write_bytes(job.udp_npz, _npz_bytes(np.ascontiguousarray(pred[i].transpose(1, 2, 0))))
                write_png_atomic(job.udp_png, to_uint8(udp))
            image = to_uint8(rgba[i].transpose(1, 2, 0))  # (S, S, 4)
            write_png_atomic(job.frame, paste_back(image, frame.crop, frame.frame_hw))
            yield job
