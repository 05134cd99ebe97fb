"""The work behind the web app (`python -m conr_paddle serve`): uploads, render jobs and parity reports.

No web framework in here: `conr_web.app` draws the page and calls these functions, and the tests call them
directly. What this module guarantees:

* Uploads: only files that the web framework itself stored under the server's upload folder are read (a path
  from anywhere else is refused), each within `Limits`; they are copied into the job's own temporary folder
  under names chosen here (`00000.png`, ...), in the natural order of the names the browser sent. The browser's
  names are used for ordering and for messages only, never as a path.
* One job at a time per process (`AppContext.work_lock`); a job runs in a worker thread and reports
  `JobEvent`s; `cancel()` stops it after the frame in flight. Every job folder is removed when the job ends.
* Bad input ends the job with the CLI's one-line message, with the server's file paths replaced by the names
  the user uploaded.

Rendering itself is `conr_paddle.render.Renderer` (the CLI's renderer) and the videos are
`conr_paddle.video.encode_videos`; the parity tab runs `convert.verify.verify`.
"""
from __future__ import annotations

import io
import queue
import shutil
import tempfile
import threading
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from conr_common.atomic import atomic_path
from conr_common.cli import one_line
from conr_common.errors import ConrInputError
from conr_common.pipeline import IMAGE_EXTENSIONS, UDP_EXTENSIONS, load_character_sheet, natural_key

__all__ = [
    "Limits",
    "Upload",
    "AppContext",
    "RenderRequest",
    "RenderResult",
    "JobEvent",
    "JobCancelled",
    "Job",
    "parity_work",
    "stage_uploads",
    "check_sheet_view",
    "check_pose_uploads",
    "run_render",
    "run_parity",
    "SAMPLE_SIZE",
    "SAMPLE_FRAMES",
]

SAMPLE_SIZE = 256  # the built-in sample is generated at this size once per server
SAMPLE_FRAMES = 24
POSE_SOURCES = ("sample UDP poses", "sample pose images (parser)", "uploaded poses")
SHEET_SOURCES = ("sample character", "uploaded views")
PARITY_SIZE = 128


@dataclass(frozen=True)
class Limits:
    """What one job may upload. The web framework also refuses any single file over `max_file_bytes`."""

    max_file_bytes: int = 64 << 20
    max_total_bytes: int = 512 << 20
    max_views: int = 12
    max_poses: int = 1000


@dataclass(frozen=True)
class Upload:
    """An uploaded file: `path` where the web framework stored it (server side), `name` what the browser called it
    (shown in messages and used for ordering; never a path)."""

    path: Path
    name: str

    @classmethod
    def from_server_path(cls, path: str | Path) -> Upload:
        """The web framework keeps the browser's file name as the last component of the stored path."""
        path = Path(path)
        return cls(path, path.name)


class JobCancelled(Exception):
    """The user pressed Cancel: the job stops after the frame in flight."""


# --------------------------------------------------------------------------------------------------- context


@dataclass
class AppContext:
    """What the server holds for its lifetime: the weights, its private work folder and the one-job lock.

    weights_dir: the four `<network>.pdparams`; torch_dir: the official `.pth` files of the same weights, for the
    parity tab (None: the parity tab converts the loaded weights back with `paddle2torch`); seeded: the weights
    are the demo's seeded random draw (the page says so); work_root: a private temporary folder (jobs, samples)
    removed when the server stops; upload_root: where the web framework stores uploads.
    """

    weights_dir: Path
    work_root: Path
    upload_root: Path
    torch_dir: Path | None = None
    seeded: bool = False
    cache_dir: Path | None = None
    limits: Limits = field(default_factory=Limits)
    work_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _renderer: object = field(default=None, init=False, repr=False)
    _renderer_key: tuple | None = field(default=None, init=False, repr=False)
    _samples: object = field(default=None, init=False, repr=False)
    _samples_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        from conr_common.checkpoints import check_weights_dir

        self.weights_dir = Path(self.weights_dir)
        check_weights_dir(self.weights_dir)
        self.work_root = Path(self.work_root)
        self.upload_root = Path(self.upload_root)
        (self.work_root / "jobs").mkdir(parents=True, exist_ok=True)

    def samples(self):
        """The built-in sample (conr_common.samples), generated once per server into its work folder."""
        from conr_common.samples import ensure_samples

        with self._samples_lock:
            if self._samples is None:
                self._samples = ensure_samples(self.work_root / "samples", size=SAMPLE_SIZE, frames=SAMPLE_FRAMES)
            return self._samples

    def renderer(self, size: int, engine: str, precision: str):
        """The Renderer for these settings. One is kept (its model is 720 MB at official size): other settings
        replace it. Call only while holding `work_lock`."""
        from conr_common.options import RenderOptions
        from conr_paddle.render import Renderer

        key = (size, engine, precision)
        if self._renderer_key != key:
            if self._renderer is not None:
                self._renderer.close()  # release the old model and predictors first
            self._renderer = None
            self._renderer = Renderer(self.weights_dir, RenderOptions(size=size, engine=engine, precision=precision,
                                                                     cache_dir=self.cache_dir))
            self._renderer_key = key
        return self._renderer

    def new_job_folder(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="job-", dir=self.work_root / "jobs"))


# --------------------------------------------------------------------------------------------------- uploads


def _within(path: Path, root: Path) -> bool:
    try:
        path.resolve(strict=True).relative_to(root.resolve())
    except (OSError, ValueError):
        return False
    return True


def _bytes(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB" if n >= 1 << 20 else f"{n / 1024:.1f} kB"


def stage_uploads(uploads: Sequence[Upload], dest: Path, *, what: str, extensions: frozenset[str],
                  max_count: int, ctx: AppContext) -> dict[str, str]:
    """Copy `uploads` into the new folder `dest` as `00000<ext>`, `00001<ext>`, ... in the natural order of their
    browser names. Returns {server path text: browser name} for turning messages back into the user's names.
    Raises ConrInputError (one line) for a path outside the upload folder, a file type the CLI does not read,
    too many files or too many bytes."""
    if not uploads:
        raise ConrInputError(f"no {what} uploaded")
    if len(uploads) > max_count:
        raise ConrInputError(f"{len(uploads)} {what} uploaded; at most {max_count} per job")
    total = 0
    for up in uploads:
        if not _within(up.path, ctx.upload_root) or not up.path.is_file():
            raise ConrInputError(f"{up.name}: not a file uploaded to this server")
        suffix = Path(up.name).suffix.lower()
        if suffix not in extensions:
            raise ConrInputError(f"{up.name}: {what} must be one of {' '.join(sorted(extensions))}")
        size = up.path.stat().st_size
        if size > ctx.limits.max_file_bytes:
            raise ConrInputError(f"{up.name}: {_bytes(size)}, over the {_bytes(ctx.limits.max_file_bytes)} limit")
        total += size
    if total > ctx.limits.max_total_bytes:
        raise ConrInputError(f"{what}: {_bytes(total)} in all, over the {_bytes(ctx.limits.max_total_bytes)} limit")
    dest.mkdir(parents=True)
    names: dict[str, str] = {}
    for i, up in enumerate(sorted(uploads, key=lambda u: natural_key(u.name))):
        target = dest / f"{i:05d}{Path(up.name).suffix.lower()}"
        with atomic_path(target) as tmp:
            shutil.copyfile(up.path, tmp)
        names[str(target)] = up.name
    return names


def _user_message(exc: BaseException, names: dict[str, str], folder: Path | None) -> str:
    """The exception as one line with server paths replaced by the browser's names (longest paths first)."""
    text = one_line(exc)
    for server, name in sorted(names.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(server, name)
    if folder is not None:
        text = text.replace(str(folder) + "/", "").replace(str(folder), "job folder")
    return text


def _checkerboard(h: int, w: int, cell: int = 8) -> np.ndarray:
    """float32 (h, w, 3) grey checkerboard, the usual picture of transparency."""
    yy, xx = np.mgrid[0:h, 0:w]
    light = ((yy // cell + xx // cell) % 2).astype(np.float32)
    return np.repeat((0.75 + 0.15 * light)[:, :, None], 3, axis=2)


def check_sheet_view(upload: Upload, ctx: AppContext, thumb: int = 160) -> tuple[np.ndarray | None, str]:
    """Check one uploaded sheet view exactly as `render` will (conr_common.pipeline.load_character_sheet at 128
    px) and make its thumbnail over a checkerboard. Returns (RGB uint8 thumbnail or None, caption)."""
    from conr_paddle.video import composite

    with tempfile.TemporaryDirectory(prefix="check-", dir=ctx.work_root) as tmp:
        folder = Path(tmp)
        names: dict[str, str] = {}
        try:
            names = stage_uploads([upload], folder / "view", what="sheet views", extensions=IMAGE_EXTENSIONS,
                                  max_count=1, ctx=ctx)
            view = load_character_sheet(folder / "view", 128)[0]  # premultiplied RGBA (128, 128, 4)
        except ConrInputError as exc:
            return None, _user_message(exc, names, folder)
        (staged,) = (folder / "view").iterdir()
        image = cv2.imdecode(np.fromfile(staged, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    h, w = image.shape[:2]
    scale = thumb / max(h, w)
    image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if image.shape[2] == 3:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    else:
        rgba = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
        a = rgba[:, :, 3:4].astype(np.float32) / 255
        premultiplied = np.concatenate([np.rint(rgba[:, :, :3] * a).astype(np.uint8), rgba[:, :, 3:]], axis=2)
        rgb = composite(premultiplied, _checkerboard(*rgba.shape[:2]))
    transparent = 1.0 - float(np.mean(view[:, :, 3])) / 255
    return rgb, f"{upload.name}: ok, {100 * transparent:.0f}% transparent around the character"


def check_pose_uploads(uploads: Sequence[Upload], pose_images: bool, ctx: AppContext) -> tuple[bool, str]:
    """Check uploaded pose frames as `render` will (every frame read at 128 px): (ok, one-line message)."""
    from conr_common.pipeline import list_pose_files, load_pose_image, load_udp_pose

    folder = ctx.new_job_folder()
    names: dict[str, str] = {}
    what = "pose images" if pose_images else "UDP poses"
    try:
        names = stage_uploads(uploads, folder / "poses", what=what,
                              extensions=IMAGE_EXTENSIONS if pose_images else UDP_EXTENSIONS,
                              max_count=ctx.limits.max_poses, ctx=ctx)
        load = load_pose_image if pose_images else load_udp_pose
        for path in list_pose_files(folder / "poses", images=pose_images):
            load(path, 128)
        return True, f"{len(uploads)} {what}: ok"
    except ConrInputError as exc:
        return False, _user_message(exc, names, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- render


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
    engine: str = "predictor"
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
    from conr_paddle.video import composite

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


def run_render(request: RenderRequest, ctx: AppContext, folder: Path,
               report: Callable[[JobEvent], None] = lambda event: None,
               stop: Callable[[], bool] = lambda: False) -> RenderResult:
    """Render one request inside the job folder `folder`: stage the inputs, render every pose with the CLI's
    Renderer, write an MP4 over the background, a WebM with alpha and a zip of the frames. `report` receives a
    "frame" event per finished frame; `stop()` returning True raises JobCancelled after the frame in flight.
    Raises ConrInputError for bad input (message still holding server paths: see `_user_message`).
    Call while holding `ctx.work_lock`; the caller removes `folder`."""
    from conr_paddle.video import encode_videos, parse_background

    started = time.perf_counter()
    if not (isinstance(request.background, str) and request.background.strip().startswith("#")):
        raise ConrInputError(f"background must be a #RRGGBB colour, got {request.background!r}")
    background = parse_background(request.background.strip())
    if isinstance(request.fps, bool) or not isinstance(request.fps, (int, float)) or not 0 < request.fps <= 120:
        raise ConrInputError(f"fps must be a number in (0, 120], got {request.fps!r}")
    sheet, poses, pose_images, names = _stage_inputs(request, ctx, folder)
    out, previews = folder / "frames", folder / "previews"
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
        mp4, webm = folder / "render.mp4", folder / "render_alpha.webm"
        encode_videos(summary.frames, mp4, fps=float(request.fps), background=background, webm=webm)
        archive = _zip_frames(summary.frames, folder / "frames.zip")
    except ConrInputError as exc:
        raise ConrInputError(_user_message(exc, names, folder)) from exc
    return RenderResult(summary.frames, tuple(shown), mp4, webm, archive, summary.seconds,
                        summary.seconds / max(1, summary.frames_written), time.perf_counter() - started,
                        summary.engine)


class Job:
    """One render (or parity report) in a worker thread: `events()` yields its JobEvents until "done", "error" or "cancelled";
    `cancel()` stops it after the frame in flight; `release()` (when the caller has taken the results) removes
    the job folder. The folder is also removed when the job fails or is cancelled, and when the caller released
    it before the worker ended."""

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


# --------------------------------------------------------------------------------------------------- parity


def run_parity(ctx: AppContext, folder: Path, size: int = PARITY_SIZE, views: int = 4) -> tuple[dict, Path, str]:
    """`python -m convert verify` on the loaded weights at `size` px (sample data, `views` views, float64 referee):
    returns (report, report.png, the CLI's verdict line). Without official .pth files for these weights the
    reference side is the loaded weights converted back with paddle2torch (then the weight check is a round
    trip, the layer-by-layer comparison still tests the port). Call while holding `ctx.work_lock`."""
    from conr_common.conversion import convert_checkpoints
    from convert.verify import verdict_lines, verify

    torch_dir = ctx.torch_dir
    if torch_dir is None:
        torch_dir = folder / "torch"
        convert_checkpoints("paddle2torch", ctx.weights_dir, torch_dir, force=True)
    t0 = time.perf_counter()
    report = verify(torch_dir, ctx.weights_dir, folder / "report", size=size, views=views, stdout=io.StringIO())
    verdict = "\n".join(verdict_lines(report)) + f"\n({time.perf_counter() - t0:.0f} s)"
    return report, folder / "report" / "report.png", verdict


def parity_work(request: None, ctx: AppContext, folder: Path, report: Callable[[JobEvent], None],
                stop: Callable[[], bool]) -> tuple[dict, Path, str]:
    """`run_parity` in the shape a Job runs (it cannot stop half way: verify is one pass)."""
    report(JobEvent("status", f"running python -m convert verify at {PARITY_SIZE} px (4 views, float64 referee)"))
    return run_parity(ctx, folder)
