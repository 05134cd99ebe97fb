"""Jobs of the web app (`python -m conr_app serve`): the thread-based `Job` runner and the render job.

* One job at a time per process (`AppContext.work_lock`); a job runs in a worker thread and reports
  `JobEvent`s; `cancel()` stops it after the frame in flight. Every job folder is removed when the job ends.
* The render job (`run_render`, a Job's default work) stages the request's inputs (`conr_app.web.uploads`), renders
  them with `conr_app.rendering.render.Renderer` (the CLI's renderer) and encodes the videos with
  `conr_app.rendering.video.encode_videos`. The parity job is `conr_app.web.parity`.
* Bad input ends the job with the CLI's one-line message, with the server's file paths replaced by the names
  the user uploaded.

No web framework in here: `conr_app.web.app` draws the page and starts jobs, and the tests run them directly.
"""
from __future__ import annotations

import queue
import shutil
import threading
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from conr_common.platform.atomic import atomic_path
from conr_common.cli.args import one_line
from conr_common.platform.errors import ConrInputError
from conr_common.cli.options import DEFAULT_ENGINE
from conr_common.platform.outputs import FILE, check_output
from conr_common.data.pipeline import IMAGE_EXTENSIONS, UDP_EXTENSIONS

from conr_app.web.context import SAMPLE_FRAMES, AppContext
from conr_app.web.uploads import Upload, stage_uploads, user_message

__all__ = [
    "RenderRequest",
    "RenderResult",
    "JobEvent",
    "JobCancelled",
    "Job",
    "run_render",
    "check_job_outputs",
    "POSE_SOURCES",
    "SHEET_SOURCES",
]

POSE_SOURCES = ("sample UDP poses", "sample pose images (parser)", "uploaded poses")
SHEET_SOURCES = ("sample character", "uploaded views")


class JobCancelled(Exception):
    """The user pressed Cancel: the job stops after the frame in flight."""


@dataclass(frozen=True)
class RenderRequest:
    """Everything the page sends for one render. `sheet`/`poses` are uploads, used when the sources say so."""

    sheet_source: str = SHEET_SOURCES[0]
    sheet: tuple[Upload, ...] = ()
    pose_source: str = POSE_SOURCES[0]
    poses: tuple[Upload, ...] = ()
    pose_images: bool = False  # uploaded poses are RGBA pose images (parser path)
    sample_frames: int = SAMPLE_FRAMES
    size: int = 256
    engine: str = DEFAULT_ENGINE
    precision: str = "fp32"
    fps: float = 12.0
    background: str = "#ffffff"


@dataclass(frozen=True)
class RenderResult:
    frames: tuple[Path, ...]  # premultiplied RGBA PNGs, as the CLI writes them
    previews: tuple[Path, ...]  # the same frames over the background (what the gallery shows)
    mp4: Path
    webm: Path
    zip: Path
    seconds: float  # the frame loop (sheet parse included; model load and graph export not)
    seconds_per_frame: float
    wall_seconds: float  # the whole job: staging, model load and graph export when they happen, videos, zip
    engine: str


@dataclass(frozen=True)
class JobEvent:
    """What a job reports: kind is "status", "frame", "done", "error" or "cancelled"."""

    kind: str
    message: str = ""
    done: int = 0
    total: int = 0
    preview: Path | None = None
    result: object = None


def _stage_inputs(request: RenderRequest, ctx: AppContext, folder: Path) -> tuple[Path, Path, bool, dict]:
    """(sheet folder, pose folder, pose_images, name map) inside the job folder."""
    names: dict[str, str] = {}
    if request.sheet_source == SHEET_SOURCES[1]:
        names |= stage_uploads(request.sheet, folder / "sheet", what="sheet views", extensions=IMAGE_EXTENSIONS,
                               max_count=ctx.limits.max_views, ctx=ctx)
        sheet = folder / "sheet"
    elif request.sheet_source == SHEET_SOURCES[0]:
        sheet = ctx.samples().character_sheet
    else:
        raise ConrInputError(f"sheet source must be one of {', '.join(SHEET_SOURCES)}")

    if request.pose_source == POSE_SOURCES[2]:
        exts = IMAGE_EXTENSIONS if request.pose_images else UDP_EXTENSIONS
        what = "pose images" if request.pose_images else "UDP poses"
        names |= stage_uploads(request.poses, folder / "poses", what=what, extensions=exts,
                               max_count=ctx.limits.max_poses, ctx=ctx)
        return sheet, folder / "poses", request.pose_images, names
    if request.pose_source not in POSE_SOURCES:
        raise ConrInputError(f"pose source must be one of {', '.join(POSE_SOURCES)}")
    n = request.sample_frames
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= SAMPLE_FRAMES:
        raise ConrInputError(f"sample frames must be an integer from 1 to {SAMPLE_FRAMES}, got {n!r}")
    images = request.pose_source == POSE_SOURCES[1]
    samples = ctx.samples()
    source = samples.pose_images if images else samples.poses
    poses = folder / "poses"
    poses.mkdir()
    for i in range(n):  # the sample's own names 0..23 keep their natural order
        src = source / f"{i}{'.png' if images else '.npz'}"
        shutil.copyfile(src, poses / src.name)
    return sheet, poses, images, names


def _preview(frame: Path, background, dest: Path) -> Path:
    """The frame over the background as an RGB PNG (what the gallery and the MP4 show)."""
    from conr_app.rendering.video import composite

    image = cv2.imdecode(np.fromfile(frame, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    rgba = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    rgb = composite(rgba, background.as_array(*rgba.shape[:2]))
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{dest}: OpenCV could not encode the PNG")
    with atomic_path(dest) as tmp:
        tmp.write_bytes(buf.tobytes())
    return dest


def _zip_frames(frames: Sequence[Path], dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:  # PNGs are compressed already
            for frame in frames:
                z.write(frame, arcname=f"frames/{frame.name}")
    return dest


JOB_FOLDERS = ("frames", "previews")  # what a render job writes into its folder, besides JOB_FILES
JOB_FILES = ("render.mp4", "render_alpha.webm", "frames.zip")


def check_job_outputs(folder: Path, inputs: dict[str, Path]) -> None:
    """Every output of a render job (`conr_common.platform.outputs.check_output`, the CLI's guard) checked against the job's
    inputs (the staged or sample sheet and poses, the weights) before anything is rendered."""
    for name in JOB_FOLDERS:
        check_output(folder / name, inputs, "job folder", hint="the job writes into a folder of its own")
    for name in JOB_FILES:
        check_output(folder / name, inputs, "job file", kind=FILE, hint="the job writes into a folder of its own")


def run_render(request: RenderRequest, ctx: AppContext, folder: Path,
               report: Callable[[JobEvent], None] = lambda event: None,
               stop: Callable[[], bool] = lambda: False) -> RenderResult:
    """Render one request inside the job folder `folder`: stage the inputs, render every pose with the CLI's
    Renderer, write an MP4 over the background, a WebM with alpha and a zip of the frames. `report` receives a
    "frame" event per finished frame; `stop()` returning True raises JobCancelled after the frame in flight.
    Raises ConrInputError for bad input (message still holding server paths: see `uploads.user_message`).
    Call while holding `ctx.work_lock`; the caller removes `folder`."""
    from conr_app.rendering.video import encode_videos, parse_background

    started = time.perf_counter()
    if not (isinstance(request.background, str) and request.background.strip().startswith("#")):
        raise ConrInputError(f"background must be a #RRGGBB colour, got {request.background!r}")
    background = parse_background(request.background.strip())
    if isinstance(request.fps, bool) or not isinstance(request.fps, (int, float)) or not 0 < request.fps <= 120:
        raise ConrInputError(f"fps must be a number in (0, 120], got {request.fps!r}")
    sheet, poses, pose_images, names = _stage_inputs(request, ctx, folder)
    out, previews = folder / "frames", folder / "previews"
    check_job_outputs(folder, {"character sheet": sheet, "poses": poses, "weights": ctx.weights_dir})
    previews.mkdir()
    total = len([p for p in poses.iterdir() if not p.name.startswith(".")])
    shown: list[Path] = []

    def on_frame(frame: Path) -> None:
        shown.append(_preview(frame, background, previews / frame.name))
        report(JobEvent("frame", f"frame {len(shown)} of {total}", len(shown), total, shown[-1]))
        if stop():
            raise JobCancelled(f"cancelled after {len(shown)} of {total} frames")

    try:
        renderer = ctx.renderer(request.size, request.engine, request.precision)
        report(JobEvent("status", "rendering (new settings first load the model; the predictor also exports its "
                        "graphs once per size and view count)", 0, total))
        summary = renderer.render(sheet, poses, out, pose_images=pose_images, progress=False, on_frame=on_frame)
        report(JobEvent("status", "encoding MP4 and WebM", total, total))
        mp4, webm, archive = (folder / name for name in JOB_FILES)
        encode_videos(summary.frames, mp4, fps=float(request.fps), background=background, webm=webm)
        _zip_frames(summary.frames, archive)
    except ConrInputError as exc:
        raise ConrInputError(user_message(exc, names, folder)) from exc
    return RenderResult(summary.frames, tuple(shown), mp4, webm, archive, summary.seconds,
                        summary.seconds / max(1, summary.frames_written), time.perf_counter() - started,
                        summary.engine)


class Job:
    """One render (or parity report) in a worker thread: `events()` yields its JobEvents until "done", "error" or
    "cancelled"; `cancel()` stops it after the frame in flight; `release()` (when the caller has taken the results)
    removes the job folder. The folder is also removed when the job fails or is cancelled, and when the caller
    released it before the worker ended. `work` is the job itself: `run_render` (default) or
    `conr_app.web.parity.parity_work`."""

    def __init__(self, request: RenderRequest | None, ctx: AppContext,
                 work: Callable[[RenderRequest | None, AppContext, Path, Callable, Callable], object] = run_render
                 ) -> None:
        self.request, self.ctx, self._work = request, ctx, work
        self.folder: Path | None = None
        self._events: queue.Queue[JobEvent] = queue.Queue()
        self._cancel = threading.Event()
        self._state = threading.Lock()
        self._released = self._finished = False
        self._thread = threading.Thread(target=self._run, name="conr-web-job", daemon=True)

    def start(self) -> Job:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _run(self) -> None:
        end = JobEvent("error", "the job ended without a result")
        try:
            if not self.ctx.work_lock.acquire(blocking=False):
                self._events.put(JobEvent("status", "waiting for the render in progress to finish"))
                while not self.ctx.work_lock.acquire(timeout=0.2):
                    if self._cancel.is_set():
                        raise JobCancelled("cancelled before it started")
            try:
                if self._cancel.is_set():
                    raise JobCancelled("cancelled before it started")
                self.folder = self.ctx.new_job_folder()
                result = self._work(self.request, self.ctx, self.folder, self._events.put, self._cancel.is_set)
            finally:
                self.ctx.work_lock.release()
            end = JobEvent("done", "done", result=result)
        except JobCancelled as exc:
            end = JobEvent("cancelled", str(exc))
        except ConrInputError as exc:
            end = JobEvent("error", one_line(exc))
        except Exception as exc:  # noqa: BLE001 - reported on the page in one line, traceback on the server's stderr
            traceback.print_exc()
            end = JobEvent("error", f"{type(exc).__name__}: {one_line(exc)}")
        finally:
            with self._state:
                self._finished = True
                if end.kind != "done" or self._released:
                    self._remove_folder()
            self._events.put(end)  # last, so that a failed job's folder is gone when its caller hears the end

    def events(self, poll: float = 0.25) -> Iterator[JobEvent]:
        """Events as they come; a "status" heartbeat every `poll` seconds of silence keeps callers responsive."""
        while True:
            try:
                event = self._events.get(timeout=poll)
            except queue.Empty:
                if not self._thread.is_alive() and self._events.empty():
                    return
                continue
            yield event
            if event.kind in ("done", "error", "cancelled"):
                return

    def release(self) -> None:
        """The caller is done with the results (or gone): remove the job folder now or when the worker ends."""
        self._cancel.set()
        with self._state:
            self._released = True
            if self._finished:
                self._remove_folder()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _remove_folder(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
