"""The web page of `python -m conr_app serve`, built with Gradio.

Two tabs. "Render": sheet views (uploaded, checked and shown as thumbnails on upload, or the built-in sample),
a pose sequence (uploaded UDP frames or RGBA pose images, or the sample), size, engine, precision, fps and
background; a progress bar while frames render, each frame shown as it finishes; the MP4, the WebM with alpha, the
frames and a zip of them. "Parity": `python -m convert verify` on the loaded weights at 128 px, its picture and
verdict.

All work is done by `conr_app.web.jobs` (one job at a time per process, cancellable, a temporary folder per job: the
render job; the parity job is `conr_app.web.parity`) and `conr_app.web.uploads` (upload checks and thumbnails); this module
only turns page values into `RenderRequest`s and job events into page updates. Gradio is imported
here and nowhere else.
"""
from __future__ import annotations

import html
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.exceptions import InvalidPathError

from conr_common.cli.options import DEFAULT_ENGINE, ENGINES, PRECISIONS
from conr_common.data.pipeline import IMAGE_EXTENSIONS, UDP_EXTENSIONS

from conr_app.web.context import SAMPLE_FRAMES, AppContext
from conr_app.web.jobs import POSE_SOURCES, SHEET_SOURCES, Job, RenderRequest, RenderResult
from conr_app.web.parity import PARITY_SIZE, parity_work
from conr_app.web.uploads import Upload, check_pose_uploads, check_sheet_view, never_uploaded

__all__ = ["build_app", "SIZES"]

SIZES = (128, 256, 384, 512)
WORK_GROUP = "conr-work"  # renders and parity reports share one queue slot (and AppContext.work_lock)

CSS = """
#status .bar {width: 100%; height: 14px}
#status .error {color: #b00020; font-weight: 600}
"""


def _uploads(files: Sequence[str] | None) -> tuple[Upload, ...]:
    return tuple(Upload.from_server_path(f) for f in (files or ()))


def _status(message: str, done: int = 0, total: int = 0, *, error: bool = False) -> str:
    """The status line, with a <progress> bar while frames render."""
    text = html.escape(message)
    if error:
        return f'<p class="error">error: {text}</p>'
    bar = f'<progress class="bar" value="{done}" max="{total}"></progress>' if total else ""
    count = f"{done} / {total} frames: " if total else ""
    return f"{bar}<p>{count}{text}</p>"


def _weights_note(ctx: AppContext) -> str:
    if ctx.seeded:
        return ("**Weights: the demo's seeded random weights** (no `--weights` given): written in the official "
                "format and converted like real ones, so every step is real, but the frames show the plumbing, not "
                "a drawing of the character. Start the server with `--weights DIR` (the output of "
                "`python -m convert torch2paddle`) for the official weights.")
    return f"**Weights:** `{ctx.weights_dir}`"


def _view_report(uploads: Sequence[Upload], ctx: AppContext) -> tuple[list[tuple[Any, str]], str]:
    """Each uploaded sheet view checked: the thumbnails of the good ones and one caption line per view."""
    thumbs, lines = [], []
    for up in uploads:
        image, caption = check_sheet_view(up, ctx)
        lines.append(caption if image is not None else f"error: {caption}")
        if image is not None:
            thumbs.append((image, up.name))
    bad = [line for line in lines if line.startswith("error: ")]
    text = "<br>".join(html.escape(line) for line in lines)
    return thumbs, (f'<p class="error">{text}</p>' if bad else f"<p>{text}</p>")


def _done_text(result: RenderResult, size: int) -> str:
    """The status line of a finished render: frames, speed and wall time."""
    n = len(result.frames)
    return (f"done: {n} frame(s) at {size} px, {result.seconds_per_frame:.2f} s per frame "
            f"({result.engine}); {result.wall_seconds:.1f} s in all with model load, graph export (first "
            "use of these settings) and video encoding")


def _render_updates(job: Job, size: int) -> Iterator[tuple]:
    """A render job's events as updates of (status, frames gallery, MP4, WebM, zip)."""
    frames: list[tuple[str, str]] = []
    skip = gr.skip()
    yield _status("starting"), [], None, None, None
    for event in job.events():
        if event.kind == "status":
            yield _status(event.message, event.done, event.total), skip, skip, skip, skip
        elif event.kind == "frame":
            frames.append((str(event.preview), f"frame {event.done}"))
            yield _status(event.message, event.done, event.total), list(frames), skip, skip, skip
        elif event.kind == "done":
            r: RenderResult = event.result
            n = len(r.frames)
            yield (_status(_done_text(r, size), n, n), [(str(p), f"frame {i + 1}") for i, p in enumerate(r.previews)],
                   str(r.mp4), str(r.webm), str(r.zip))
        elif event.kind == "cancelled":
            yield _status(event.message), skip, None, None, None
        else:
            yield _status(event.message, error=True), skip, None, None, None


def _parity_updates(job: Job) -> Iterator[tuple]:
    """A parity job's events as updates of (verdict, report picture)."""
    for event in job.events():
        if event.kind == "status":
            yield _status(event.message), None
        elif event.kind == "done":
            report, picture, verdict = event.result
            lines = "<br>".join(html.escape(line) for line in verdict.splitlines())
            yield f"<p><b>{lines}</b></p>", str(picture)
        else:
            yield _status(event.message, error=True), None


@dataclass
class _Handlers:
    """What the page's events call, for one server: upload checks, render, cancel and the parity report.

    The method names are the event names Gradio shows in its API page; `jobs` holds the running job of each
    browser session, for its Cancel button.
    """

    ctx: AppContext
    jobs: dict[str, Job] = field(default_factory=dict)

    def check_views(self, files: list[str] | None) -> tuple[list, str, dict[str, Any]]:
        """Sheet views uploaded: thumbnails, a check line per view, and the sheet source set to "uploaded"."""
        uploads = _uploads(files)
        if not uploads:
            return [], "", gr.update(value=SHEET_SOURCES[0])
        limit = self.ctx.limits.max_views
        if len(uploads) > limit:
            return [], _status(f"{len(uploads)} views uploaded; at most {limit}", error=True), \
                gr.update(value=SHEET_SOURCES[1])
        thumbs, text = _view_report(uploads, self.ctx)
        return thumbs, text, gr.update(value=SHEET_SOURCES[1])

    def check_poses(self, files: list[str] | None, pose_images: bool) -> tuple[str, dict[str, Any]]:
        """Pose frames uploaded: their check line, and the pose source set to "uploaded"."""
        uploads = _uploads(files)
        if not uploads:
            return "", gr.update(value=POSE_SOURCES[0])
        ok, message = check_pose_uploads(uploads, bool(pose_images), self.ctx)
        return _status(message, error=not ok), gr.update(value=POSE_SOURCES[2])

    def render(self, sheet_source: str, sheet_files: list[str] | None, pose_source: str,
               pose_files: list[str] | None, pose_images: bool, sample_frames: float, size: int, engine: str,
               precision: str, fps: float, background: str, request: gr.Request) -> Iterator[tuple]:
        """Run one render job for this browser session, streaming its progress and results to the page."""
        req = RenderRequest(sheet_source, _uploads(sheet_files), pose_source, _uploads(pose_files), bool(pose_images),
                            int(sample_frames), int(size), engine, precision, float(fps or 0), str(background))
        job = Job(req, self.ctx).start()
        session = request.session_hash or ""
        self.jobs[session] = job
        try:
            yield from _render_updates(job, req.size)
        finally:
            if self.jobs.get(session) is job:
                del self.jobs[session]
            job.release()  # results have been copied to Gradio's cache by now: remove the job folder

    def cancel(self, request: gr.Request) -> str:
        """Cancel this browser session's render after the frame in flight."""
        job = self.jobs.get(request.session_hash or "")
        if job is None:
            return _status("nothing to cancel")
        job.cancel()
        return _status("cancelling after the frame in flight")

    def parity(self) -> Iterator[tuple]:
        """Run `convert verify` on the loaded weights, streaming its status, then its verdict and picture."""
        job = Job(None, self.ctx, work=parity_work).start()
        try:
            yield from _parity_updates(job)
        finally:
            job.release()


# ---- the parts of the page, in page order (Gradio numbers components in the order they are made)


@dataclass(frozen=True)
class _SheetInputs:
    """The character sheet: source, uploaded views, their thumbnails and check line."""

    source: gr.Radio
    files: gr.File
    thumbs: gr.Gallery
    check: gr.HTML


@dataclass(frozen=True)
class _PoseInputs:
    """The pose sequence: source, sample length, uploaded frames, their kind and check line."""

    source: gr.Radio
    sample_frames: gr.Slider
    files: gr.File
    images: gr.Checkbox
    check: gr.HTML


@dataclass(frozen=True)
class _Settings:
    """How to render: size, fps, background, engine and precision."""

    size: gr.Dropdown
    fps: gr.Number
    background: gr.ColorPicker
    engine: gr.Radio
    precision: gr.Radio


@dataclass(frozen=True)
class _RenderInputs:
    """The left column of the render tab: everything a render takes, and its two buttons."""

    sheet: _SheetInputs
    poses: _PoseInputs
    settings: _Settings
    run: gr.Button
    stop: gr.Button

    def values(self) -> list[gr.components.Component]:
        """The inputs of `_Handlers.render`, in its argument order."""
        return [self.sheet.source, self.sheet.files, self.poses.source, self.poses.files, self.poses.images,
                self.poses.sample_frames, self.settings.size, self.settings.engine, self.settings.precision,
                self.settings.fps, self.settings.background]


@dataclass(frozen=True)
class _RenderOutputs:
    """The right column of the render tab: status line, videos, frames and their zip."""

    status: gr.HTML
    mp4: gr.Video
    webm: gr.Video
    gallery: gr.Gallery
    archive: gr.File

    def updates(self) -> list[gr.components.Component]:
        """The outputs of `_Handlers.render`, in the order of its updates."""
        return [self.status, self.gallery, self.mp4, self.webm, self.archive]


@dataclass(frozen=True)
class _ParityTab:
    """The parity tab's button and what it shows."""

    button: gr.Button
    verdict: gr.HTML
    picture: gr.Image


def _header(ctx: AppContext) -> None:
    """The title, what the app does, and which weights are loaded."""
    gr.Markdown("# CoNR in PaddlePaddle\nA character sheet and a pose sequence in, an animation out "
                "(Collaborative Neural Rendering using Anime Character Sheets, Lin et al. 2022).")
    gr.Markdown(_weights_note(ctx), elem_id="weights-note")


def _sheet_inputs() -> _SheetInputs:
    """Sheet source, the views' upload box, their thumbnails and check line."""
    source = gr.Radio(list(SHEET_SOURCES), value=SHEET_SOURCES[0], label="Character sheet", elem_id="sheet-source")
    files = gr.File(file_count="multiple", file_types=sorted(IMAGE_EXTENSIONS),
                    label="Sheet views: PNGs with alpha (a character on a transparent background)",
                    elem_id="sheet-files", height=120)
    thumbs = gr.Gallery(label="Uploaded views over a checkerboard (alpha checked)", columns=6, rows=1, height=190,
                        object_fit="contain", allow_preview=False, elem_id="sheet-thumbs")
    return _SheetInputs(source, files, thumbs, gr.HTML(elem_id="sheet-check"))


def _pose_inputs() -> _PoseInputs:
    """Pose source, the sample's length, the frames' upload box, their kind and check line."""
    source = gr.Radio(list(POSE_SOURCES), value=POSE_SOURCES[0], label="Pose sequence", elem_id="pose-source")
    sample_frames = gr.Slider(1, SAMPLE_FRAMES, value=8, step=1, label="Frames of the sample sequence",
                              elem_id="sample-frames")
    files = gr.File(file_count="multiple", file_types=sorted(UDP_EXTENSIONS | IMAGE_EXTENSIONS),
                    label="Pose frames: UDP .npz/.png/.exr/.tif (natural order), or RGBA pose images",
                    elem_id="pose-files", height=120)
    images = gr.Checkbox(False, label="Uploaded poses are RGBA pose images (the UDP parser predicts their poses)",
                         elem_id="pose-images")
    return _PoseInputs(source, sample_frames, files, images, gr.HTML(elem_id="pose-check"))


def _settings() -> _Settings:
    """Two rows: size, fps and background; engine and precision."""
    with gr.Row():
        size = gr.Dropdown(list(SIZES), value=256, label="Size (px)", elem_id="size")
        fps = gr.Number(12, minimum=1, maximum=120, label="fps", elem_id="fps")
        background = gr.ColorPicker("#ffffff", label="Background (MP4 and frames)", elem_id="background")
    with gr.Row():
        engine = gr.Radio(list(ENGINES), value=DEFAULT_ENGINE, label="Engine", elem_id="engine",
                          info="predictor: Paddle Inference (fast after a one-off export); "
                          "eager: dygraph (the parity reference)")
        precision = gr.Radio(list(PRECISIONS), value="fp32", label="Precision", elem_id="precision",
                             info="bf16: predictor only, CPUs with AVX512-BF16 or AMX")
    return _Settings(size, fps, background, engine, precision)


def _render_inputs() -> _RenderInputs:
    """The render tab's left column: sheet, poses, settings, then the Render and Cancel buttons."""
    with gr.Column(scale=1):
        sheet = _sheet_inputs()
        poses = _pose_inputs()
        settings = _settings()
        with gr.Row():
            run = gr.Button("Render", variant="primary", elem_id="render-button")
            stop = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
    return _RenderInputs(sheet, poses, settings, run, stop)


def _render_outputs() -> _RenderOutputs:
    """The render tab's right column: status line, the two videos side by side, the frames and their zip."""
    with gr.Column(scale=1):
        status = gr.HTML(elem_id="status")
        with gr.Row():
            mp4 = gr.Video(label="MP4 (over the background)", autoplay=True, loop=True, elem_id="result-mp4",
                           height=300)
            webm = gr.Video(label="WebM with alpha", autoplay=True, loop=True, elem_id="result-webm", height=300)
        gallery = gr.Gallery(label="Frames, as they finish", columns=6, height=240, object_fit="contain",
                             elem_id="frames")
        archive = gr.File(label="All frames (zip of RGBA PNGs, as the CLI writes them)", elem_id="frames-zip")
    return _RenderOutputs(status, mp4, webm, gallery, archive)


def _parity_intro(ctx: AppContext) -> str:
    """What the parity tab runs, and what its reference side is for these weights."""
    return (f"Runs `python -m convert verify` on the loaded weights at {PARITY_SIZE} px (sample "
            "character, 4 views, one pose): every layer of the Paddle port against the PyTorch "
            "reference, judged against a float64 run of the reference. "
            + ("The reference side reads the official `.pth` files of these weights."
               if ctx.torch_dir is not None else
               "No official `.pth` files were given (`--torch-weights`): the reference side is the "
               "loaded weights converted back with `paddle2torch`, so the weight check is a round trip; "
               "the layer-by-layer comparison still tests the port."))


def _parity_tab(ctx: AppContext) -> _ParityTab:
    """The parity tab's contents: what it runs, its button, the verdict and the report picture."""
    gr.Markdown(_parity_intro(ctx))
    button = gr.Button(f"Run convert verify at {PARITY_SIZE} px", elem_id="parity-button")
    verdict = gr.HTML(elem_id="parity-verdict")
    picture = gr.Image(label="report.png", type="filepath", elem_id="parity-picture", interactive=False)
    return _ParityTab(button, verdict, picture)


# ---- events


def _wire_uploads(handlers: _Handlers, inputs: _RenderInputs) -> None:
    """Uploads are checked at once (no queue slot); clearing an upload box returns its source to the sample."""
    sheet, poses = inputs.sheet, inputs.poses
    sheet.files.upload(handlers.check_views, sheet.files, [sheet.thumbs, sheet.check, sheet.source],
                       concurrency_limit=None, show_progress="minimal")
    sheet.files.clear(lambda: ([], "", gr.update(value=SHEET_SOURCES[0])), None,
                      [sheet.thumbs, sheet.check, sheet.source], concurrency_limit=None)
    poses.files.upload(handlers.check_poses, [poses.files, poses.images], [poses.check, poses.source],
                       concurrency_limit=None, show_progress="minimal")
    poses.files.clear(lambda: ("", gr.update(value=POSE_SOURCES[0])), None, [poses.check, poses.source],
                      concurrency_limit=None)


def _wire_work(handlers: _Handlers, inputs: _RenderInputs, outputs: _RenderOutputs, parity: _ParityTab) -> None:
    """Render and parity share one queue slot (WORK_GROUP); Cancel skips the queue."""
    inputs.run.click(handlers.render, inputs.values(), outputs.updates(), concurrency_limit=1,
                     concurrency_id=WORK_GROUP,
                     show_progress="hidden")  # our own <progress> bar: Gradio's overlay would hide the frames
    inputs.stop.click(handlers.cancel, None, outputs.status, queue=False)
    parity.button.click(handlers.parity, None, [parity.verdict, parity.picture], concurrency_limit=1,
                        concurrency_id=WORK_GROUP, show_progress="minimal")


class _Page(gr.Blocks):
    """The page's Blocks, with one change: Gradio refuses a file path that was never uploaded to it before any
    handler runs, and with `show_error=False` (ours: internal errors stay in the server's log) it answered such a
    request with `{"error": null}`. That refusal now carries the line `stage_uploads` gives (issue #23)."""

    def __init__(self, upload_root: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conr_upload_root = Path(upload_root)

    async def preprocess_data(self, block_fn: Any, inputs: list[Any], state: Any, explicit_call: bool = False):
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except InvalidPathError as exc:
            line = never_uploaded(inputs, self.conr_upload_root) or "a file of this request was not uploaded here"
            raise gr.Error(html.escape(line), print_exception=False) from exc


def build_app(ctx: AppContext) -> gr.Blocks:
    """The page for `ctx` (call `.queue()` and `.launch()` on it, see conr_app.web.serve)."""
    handlers = _Handlers(ctx)
    with _Page(ctx.upload_root, title="CoNR in PaddlePaddle", analytics_enabled=False,
               delete_cache=(600, 3600)) as app:
        _header(ctx)
        with gr.Tab("Render"):
            with gr.Row():
                inputs = _render_inputs()
                outputs = _render_outputs()
        with gr.Tab("Parity"):
            parity = _parity_tab(ctx)
        _wire_uploads(handlers, inputs)
        _wire_work(handlers, inputs, outputs, parity)
    return app
