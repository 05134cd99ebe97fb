"""Render a character-sheet + pose sequence into an animation with the Paddle port of CoNR.

The user-facing loop of the official `train.py:infer` / `save_output` (megvii-research/CoNR @ 660c4f7), for long
jobs: the sheet is parsed once, every input is validated before the first output file is written, frames are
batched through a `Runner` (eager Paddle, or the Paddle Inference predictor of `conr_engines.inference.predictor`), every file is
written under a temporary name and renamed, and `resume=True` skips the frames that the render recorded in the
output folder (`conr_app.rendering.resume`: same settings, same weights, same sheet, files unchanged) has finished.

Steps of `Renderer.render`, one job each: `plan` (every check that needs neither the model nor the poses' pixels,
the sheet parsed, one FrameJob per pose), `decode_poses` (every pose still to render decoded once: the validation
before anything is written, the arrays kept for the render within POSE_MEMORY_BUDGET), `render_jobs` (the runner
of `conr_engines.runner.make_runner`, `options.batch` frames per call) and the writers (`conr_app.rendering.frames`:
`write_frame`, `write_empty`; `encode_video`).
How to render comes from one validated `conr_common.cli.options.RenderOptions`.

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

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conr_common.platform.atomic import sweep_stale_temporaries
from conr_common.weights.checkpoints import check_weights_dir, weights_hash
from conr_common.verification.compare import psnr_db
from conr_common.platform.memory import check_render_memory, return_freed_memory
from conr_common.platform.errors import ConrInputError
from conr_common.cli.options import RenderOptions
from conr_common.platform.outputs import FILE, check_output
from conr_common.data.pipeline import (
    PoseFrame,
    list_pose_files,
    load_character_sheet,
    load_pose_image,
    load_udp_pose,
    pose_image_array,
    sheet_array,
    udp_arrays,
)

from conr_app.rendering.frames import FrameJob, plan_jobs, write_empty, write_frame
from conr_app.rendering.resume import FrameJournal, RenderIdentity, begin_record, check_resume, frame_done, read_identity, read_journal
from conr_app.rendering.resume import sheet_sha256
from conr_engines.runner import make_runner

__all__ = [
    "RenderSummary",
    "RenderInterrupted",
    "RenderPlan",
    "Renderer",
    "decode_poses",
    "render_summary",
]

# Bytes of decoded pose frames kept between validation and rendering (decode_poses): about 600 frames at 256 px,
# 2,400 at 128 px; frames past it are decoded a second time when rendered.
POSE_MEMORY_BUDGET = 512 << 20


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
    ranks: int = 1  # processes that rendered the sequence (conr_app.rendering.distributed); counts and fps cover them all


class RenderInterrupted(KeyboardInterrupt):
    """Ctrl-C during a render: every finished frame is on disk, no partial file is; rerun with resume."""

    def __init__(self, written: int, skipped: int, total: int, out: Path) -> None:
        super().__init__(f"interrupted after {skipped + written} of {total} frames")
        self.written, self.skipped, self.total, self.out = written, skipped, total, out


@dataclass(frozen=True, eq=False)
class RenderPlan:
    """What a render will do, checked without the model: the parsed sheet, every frame's job and what decides the
    frames' bytes (recorded in the output folder for --resume)."""

    sheet: np.ndarray  # uint8 (M, S, S, 4)
    jobs: tuple[FrameJob, ...]
    out: Path
    pose_images: bool
    video: Path | None
    background: object | None  # conr_app.rendering.video.Background
    identity: RenderIdentity

    @property
    def udp_previews(self) -> tuple[Path, ...]:
        return tuple(p for j in self.jobs for p in (j.udp_png, j.udp_npz) if p is not None)

    def todo_indices(self, indices: Sequence[int], resume: bool) -> list[int]:
        """Those of `indices` whose jobs are still to render: all, or with `resume` those that the render recorded in
        `out` (the same identity) has not finished (`conr_app.rendering.resume.frame_done`)."""
        if not resume or read_identity(self.out) != self.identity:
            return list(indices)
        records = read_journal(self.out)
        return [i for i in indices if not frame_done(self.jobs[i], records)]

    def todo(self, resume: bool) -> list[FrameJob]:
        """The jobs still to render (see `todo_indices`)."""
        return [self.jobs[i] for i in self.todo_indices(range(len(self.jobs)), resume)]


def decode_poses(jobs: Sequence[FrameJob], size: int, pose_images: bool,
                 budget: int = POSE_MEMORY_BUDGET) -> dict[Path, PoseFrame]:
    """Decode every job's pose frame (ConrInputError naming the first bad file): the check that refuses bad input
    before anything is written. The frames are kept for rendering while their arrays fit in `budget` bytes (the
    first ones, rendered first); a frame past it is decoded again when its turn comes, so that a long sequence at a
    large size does not hold gigabytes of poses."""
    load = load_pose_image if pose_images else load_udp_pose
    kept: dict[Path, PoseFrame] = {}
    used = 0
    for job in jobs:
        frame = load(job.pose, size)
        if used + frame.nbytes <= budget:
            kept[job.pose] = frame
            used += frame.nbytes
    return kept


def model_inputs(runner, frames: Sequence[PoseFrame],
                 pose_images: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(xyz (B, 3, S, S), alpha (B, 1, S, S), the parser's UDP prediction (B, 4, S, S) or None) of `frames`: the
    pose images' UDP is predicted by `runner`'s parser (xyz = pred[:, :3], alpha = pred[:, 3:4])."""
    if not pose_images:
        xyz, alpha = udp_arrays(frames)
        return xyz, alpha, None
    pred = np.asarray(runner.parse_pose(pose_image_array(frames)), np.float32)  # (B, 4, S, S)
    return np.ascontiguousarray(pred[:, :3]), np.ascontiguousarray(pred[:, 3:4]), pred


def render_summary(plan: RenderPlan, written: int, skipped: int, seconds: float, videos: tuple[Path, ...],
                   engine: str, psnr: float | None, ranks: int = 1) -> RenderSummary:
    """The RenderSummary of `plan` after `written` frames in `seconds`."""
    return RenderSummary(
        frames_total=len(plan.jobs), frames_written=written, frames_skipped=skipped, seconds=seconds,
        fps=written / seconds if seconds > 0 and written else 0.0, frames=tuple(j.frame for j in plan.jobs),
        udp_previews=plan.udp_previews, videos=videos, engine=engine, bf16_psnr_db=psnr, ranks=ranks,
    )


# --------------------------------------------------------------------------------------------------- renderer


@dataclass
class Renderer:
    """Paddle CoNR renderer. The model is loaded on the first `render` call, after the inputs are validated.

    weights_dir: folder with the four `<network>.pdparams` written by `python -m convert torch2paddle`.
    One runner (the predictors of one view count: gigabytes at official size) is kept at a time; `close()`
    releases it and the model.
    """

    weights_dir: str | os.PathLike
    options: RenderOptions = field(default_factory=RenderOptions)
    _model: object = field(default=None, init=False, repr=False)
    _runner: object = field(default=None, init=False, repr=False)
    _runner_views: int | None = field(default=None, init=False, repr=False)
    _digest: str | None = field(default=None, init=False, repr=False)
    _weight_files: list = field(default_factory=list, init=False, repr=False)  # checked once, in __post_init__

    def __post_init__(self) -> None:
        self.weights_dir = Path(self.weights_dir)
        if not isinstance(self.options, RenderOptions):
            raise TypeError(f"options must be a RenderOptions, got {type(self.options).__name__}")
        self._weight_files = check_weights_dir(self.weights_dir)

    # ---- model and runner

    def _load_model(self):
        if self._model is None:
            from conr_paddle.model import load_pdparams, unloaded

            # restricted unpickler, strict: ConrInputError naming the file, every missing/unexpected key, shape
            self._model = load_pdparams(unloaded(), self.weights_dir)
        return self._model

    def _weights_hash(self) -> str:
        """sha256 of the four weight files, hashed once per Renderer (the key of the exported-graph cache)."""
        if self._digest is None:
            self._digest = weights_hash(self._weight_files)
        return self._digest

    def runner(self, views: int):
        """The runner for sheets of `views` views; one of another view count is released first."""
        if self._runner is not None and self._runner_views == views:
            return self._runner
        self._release(model=False)
        model = self._load_model()
        digest = self._weights_hash() if self.options.engine != "eager" else None
        self._runner = make_runner(model, digest, views, self.options)
        self._runner_views = views
        del model
        if self.options.engine != "eager" and self.options.precision != "bf16":
            # the predictors (sessions) hold their own weights; bf16 keeps the eager model until its PSNR check
            self._release(runner=False)
        return self._runner

    def _release(self, runner: bool = True, model: bool = True) -> None:
        """Drop the runner and/or the eager model (720 MB at official size) and hand the heap back to the OS."""
        held = (runner and self._runner is not None) or (model and self._model is not None)
        if runner:
            self._runner, self._runner_views = None, None
        if model:
            self._model = None
        if held:
            return_freed_memory()

    def close(self) -> None:
        """Release the runner and the model (a later render loads them again)."""
        self._release()

    # ---- plan and validate (no model)

    def plan(self, character_sheet: str | os.PathLike, poses: str | os.PathLike, out: str | os.PathLike, *,
             pose_images: bool = False, video: str | os.PathLike | None = None,
             background: str | os.PathLike | None = None, resume: bool = False) -> RenderPlan:
        """Every check that needs neither the model nor the pose frames' pixels; the parsed sheet and the jobs.
        With `resume`, a folder that records a render of other settings is refused (ConrInputError naming one)."""
        from conr_app.rendering.video import parse_background

        out = Path(out)
        inputs = render_inputs(character_sheet, poses, self.weights_dir, background)
        check_output(out, inputs, "--out")
        cache_dir = self.options.cache_dir
        if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
            raise ConrInputError(f"--cache-dir {cache_dir}: exists and is not a folder")
        if video is not None:
            video = Path(video)
            if video.suffix.lower() != ".mp4":
                raise ConrInputError(f"--video {video}: must end in .mp4")
            for path in (video, video.with_suffix(".webm")) if background is None else (video,):
                check_output(path, inputs, "--video", kind=FILE, hint="choose another file for the video")
        bg = parse_background(background) if background is not None else None
        sheet = load_character_sheet(character_sheet, self.options.size)
        jobs = plan_jobs(list_pose_files(poses, images=pose_images), out, pose_images)
        for job in jobs:  # a frame name taken by a folder, too long a name: refused now, not after rendering
            for path in job.outputs():
                check_output(path, inputs, "output frame", kind=FILE)
        identity = RenderIdentity(size=self.options.size, engine=self.options.engine,
                                  precision=self.options.precision, pose_images=pose_images, views=int(sheet.shape[0]),
                                  sheet_sha256=sheet_sha256(sheet), weights_sha256=self._weights_hash())
        if resume:
            check_resume(out, identity)
        return RenderPlan(sheet, tuple(jobs), out, pose_images, video, bg, identity)

    def check_memory(self, plan: RenderPlan, available: int | None = None) -> None:
        """ConrInputError, before the model is loaded, when the render's estimated peak memory (engine, size, views,
        workers: conr_common.platform.memory) exceeds `available` bytes (default: this machine's MemAvailable)."""
        check_render_memory(self.options.engine, self.options.size, int(plan.sheet.shape[0]), self.options.workers,
                            available)

    def decode_poses(self, plan: RenderPlan, jobs: Sequence[FrameJob]) -> dict[Path, PoseFrame]:
        """`decode_poses` of `jobs` at this renderer's size: bad pose input is refused here."""
        return decode_poses(jobs, self.options.size, plan.pose_images)

    # ---- render

    def render(self, character_sheet: str | os.PathLike, poses: str | os.PathLike, out: str | os.PathLike, *,
               pose_images: bool = False, resume: bool = False, video: str | os.PathLike | None = None,
               background: str | os.PathLike | None = None, progress: bool = True,
               on_frame: Callable[[Path], None] | None = None) -> RenderSummary:
        """Render every pose of `poses` (natural order) with the character of `character_sheet` into `out`.

        resume: skip the frames finished by the render recorded in `out` (refused if it had other settings,
        weights or sheet: conr_app.rendering.resume). video: also encode an MP4 at `options.fps` (over
        `background`, a #RRGGBB colour or image; white if None) and, without a background, a WebM with alpha.
        Raises ConrInputError (nothing written if the input is bad), RenderInterrupted on Ctrl-C.
        """
        plan = self.plan(character_sheet, poses, out, pose_images=pose_images, video=video, background=background,
                         resume=resume)
        todo = plan.todo(resume)
        if todo:
            self.check_memory(plan)
        decoded = self.decode_poses(plan, todo)  # every frame still to render, before anything is written
        if todo:
            self.runner(views=plan.sheet.shape[0])  # load (a bad weights file stops here, before any write)
        prepare_output(plan)
        begin_record(plan.out, plan.identity, resume)
        skipped = len(plan.jobs) - len(todo)
        written, seconds, psnr = self._run_with_progress(plan, todo, decoded, skipped, progress, on_frame)
        videos = self.encode_video(plan.jobs, plan.video, plan.background)
        return render_summary(plan, written, skipped, seconds, videos, self.engine_label(), psnr)

    def _run_with_progress(self, plan: RenderPlan, todo: Sequence[FrameJob], decoded: dict[Path, PoseFrame],
                           skipped: int, progress: bool,
                           on_frame: Callable[[Path], None] | None) -> tuple[int, float, float | None]:
        """render_jobs under a progress bar: (frames written, seconds, bf16 PSNR or None)."""
        from tqdm import tqdm

        bar = tqdm(total=len(plan.jobs), initial=skipped, unit="frame", disable=not progress, dynamic_ncols=True,
                   desc="render")
        written = 0

        def done(job: FrameJob) -> None:
            nonlocal written
            written += 1
            bar.update(1)
            if on_frame is not None:
                on_frame(job.frame)

        t0 = time.perf_counter()
        try:
            psnr = self.render_jobs(plan, todo, decoded, done, note=bar.write)
        except KeyboardInterrupt as e:
            raise RenderInterrupted(written, skipped, len(plan.jobs), plan.out) from e
        finally:
            bar.close()
        return written, time.perf_counter() - t0, psnr

    def render_jobs(self, plan: RenderPlan, todo: Sequence[FrameJob], decoded: dict[Path, PoseFrame],
                    done: Callable[[FrameJob], None], note: Callable[[str], None] = print) -> float | None:
        """Render `todo` (validated jobs of `plan`) in order, `options.batch` frames per call, calling `done(job)`
        once each job's files are on disk. Frames are taken out of `decoded` (decoded again when absent). The sheet
        is parsed once per call. Returns the bf16 PSNR of the first frame (None for fp32 or when there is nothing
        to render). KeyboardInterrupt propagates (finished frames stay)."""
        if not todo:
            return None
        load = load_pose_image if plan.pose_images else load_udp_pose
        runner = self.runner(views=plan.sheet.shape[0])
        sheet_f32 = sheet_array(plan.sheet)
        sheet = runner.parse_sheet(sheet_f32)
        pending: list[tuple[FrameJob, PoseFrame]] = []
        psnr: float | None = None
        record = FrameJournal(plan.out).record

        def flush() -> None:
            nonlocal psnr
            if self.options.precision == "bf16" and psnr is None:
                psnr = self._bf16_psnr(runner, sheet, sheet_f32, pending[0][1], plan.pose_images)
                note(f"bf16: first frame PSNR {psnr:.1f} dB against fp32")
            try:
                for job in self._render_batch(runner, sheet, pending, plan.pose_images, record):
                    done(job)
            except _NonFiniteFrame as bad:
                raise self._nonfinite_error(sheet_f32, bad, plan.pose_images) from None
            pending.clear()

        for job in todo:
            frame = decoded.pop(job.pose, None) or load(job.pose, self.options.size)
            if frame.crop is None:  # empty pose: transparent frame, no model call
                write_empty(job, frame, record)
                done(job)
                continue
            pending.append((job, frame))
            if len(pending) >= self.options.batch:
                flush()
        if pending:
            flush()
        if self.options.engine != "eager":
            self._release(runner=False)  # bf16 kept the eager model for a check that had no frame to run on
        return psnr

    def encode_video(self, jobs: Sequence[FrameJob], video: Path | None, bg) -> tuple[Path, ...]:
        """The MP4 (and, without a background, the WebM) of every job's frame at `options.fps`, in order; () without
        `video`."""
        if video is None:
            return ()
        from conr_app.rendering.video import encode_videos

        video = Path(video)
        video.parent.mkdir(parents=True, exist_ok=True)
        webm = video.with_suffix(".webm") if bg is None else None
        return tuple(encode_videos([j.frame for j in jobs], video, fps=self.options.fps, background=bg, webm=webm))

    def engine_label(self) -> str:
        """"eager", or "predictor, conr_warp" / "predictor, grid_sample" (grid_sample: the custom operators
        could not be built here, see conr_engines.inference.ext)."""
        warp = getattr(self._runner, "warp_kind", None)
        return ", ".join([self.options.engine, *([warp] if warp else [])])

    def _bf16_psnr(self, runner, sheet, sheet_f32: np.ndarray, frame: PoseFrame, pose_images: bool) -> float:
        """PSNR (peak 1) of one frame rendered by the bf16 predictor against the same frame rendered in fp32 by the
        eager model the predictor was exported from (kept loaded for this check, released after it)."""
        from conr_engines.runner import EagerRunner

        eager = EagerRunner(self._load_model())
        outputs = []
        for r, s in ((runner, sheet), (eager, eager.parse_sheet(sheet_f32))):
            xyz, alpha, _ = model_inputs(r, [frame], pose_images)
            outputs.append(np.asarray(r.render(s, xyz, alpha), np.float64))
        del eager
        self._release(runner=False)
        return psnr_db(outputs[1], outputs[0])

    def _nonfinite_error(self, sheet_f32: np.ndarray, bad: _NonFiniteFrame, pose_images: bool):
        """The ConrNonFiniteError for a frame whose output was not finite: the frame run again eagerly, stage by
        stage, names the first network whose output went NaN/Inf (the fast engines' model is reloaded for it)."""
        from conr_app.rendering.nonfinite import first_nonfinite_stage, nonfinite_error

        frame = bad.frame
        xyz, alpha = udp_arrays([frame]) if not pose_images else (None, None)
        rgb = pose_image_array([frame]) if pose_images else None
        stage = first_nonfinite_stage(self._load_model(), sheet_f32, xyz, alpha, rgb)
        if self.options.engine != "eager":
            self._release(runner=False)
        return nonfinite_error(str(bad.job.pose), stage, self.options.engine)

    @staticmethod
    def _render_batch(runner, sheet, batch: list[tuple[FrameJob, PoseFrame]], pose_images: bool, record):
        """Run one batch through the runner and write its frames (each recorded by `record` first, see
        conr_app.rendering.resume); yields each job once its frame is on disk. A frame whose output holds NaN/Inf raises
        _NonFiniteFrame before it is written (issue 23, finding 9)."""
        from conr_app.rendering.nonfinite import check_frame

        frames = [frame for _, frame in batch]
        xyz, alpha, pred = model_inputs(runner, frames, pose_images)
        rgba = np.asarray(runner.render(sheet, xyz, alpha))  # (B, 4, S, S) premultiplied
        for i, (job, frame) in enumerate(batch):
            if not check_frame(rgba[i]):
                raise _NonFiniteFrame(job, frame)
            write_frame(job, frame, rgba[i], xyz[i], alpha[i], None if pred is None else pred[i], record)
            yield job


def render_inputs(character_sheet: str | os.PathLike, poses: str | os.PathLike, weights: str | os.PathLike,
                  background: str | os.PathLike | None) -> dict[str, Path | None]:
    """Every input path of a render, by option (a #RRGGBB background is no path): what no output may touch."""
    image = None if background is None or str(background).lstrip().startswith("#") else Path(background)
    return {"--character-sheet": Path(character_sheet), "--poses": Path(poses), "--weights": Path(weights),
            "--background": image}


class _NonFiniteFrame(Exception):
    """A frame's output held NaN/Inf (turned into a ConrNonFiniteError naming the stage by Renderer.render_jobs)."""

    def __init__(self, job: FrameJob, frame: PoseFrame) -> None:
        super().__init__(str(job.pose))
        self.job, self.frame = job, frame


def prepare_output(plan: RenderPlan) -> None:
    """Create the output folder and sweep what a killed earlier run (SIGKILL: no cleanup ran) left behind."""
    plan.out.mkdir(parents=True, exist_ok=True)
    for folder in {plan.out, plan.video.parent} if plan.video is not None else {plan.out}:
        sweep_stale_temporaries(folder)
