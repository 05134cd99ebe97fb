"""The web page of `python -m conr_paddle serve`, built with Gradio.

Two tabs. "Render": sheet views (uploaded, checked and shown as thumbnails on upload, or the built-in sample),
a pose sequence (uploaded UDP frames or RGBA pose images, or the sample), size, engine, precision, fps and
background; a progress bar while frames render, each frame shown as it finishes; the MP4, the WebM with alpha, the
frames and a zip of them. "Parity": `python -m convert verify` on the loaded weights at 128 px, its picture and
verdict.

All work is done by `conr_web.jobs` (one job at a time per process, cancellable, a temporary folder per job);
this module only turns page values into `RenderRequest`s and job events into page updates. Gradio is imported
here and nowhere else.
"""
from __future__ import annotations

import html
from collections.abc import Iterator, Sequence

import gradio as gr

from conr_common.options import DEFAULT_ENGINE, ENGINES, PRECISIONS
from conr_common.pipeline import IMAGE_EXTENSIONS, UDP_EXTENSIONS

from conr_common.options import DEFAULT_ENGINE, ENGINES, PRECISIONS

from .jobs import (
    POSE_SOURCES,
    PARITY_SIZE,
    SAMPLE_FRAMES,
    SHEET_SOURCES,
    AppContext,
    Job,
    RenderRequest,
    RenderResult,
    Upload,
    check_pose_uploads,
    check_sheet_view,
    parity_work,
)

__all__ = ["build_app", "SIZES"]

SIZES = (128, 256, 384, 512)
WORK_GROUP = "conr-work"  # renders and parity reports share one queue slot (and webjobs' lock)

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


def build_app(ctx: AppContext) -> gr.Blocks:
    """The page for `ctx` (call `.queue()` and `.launch()` on it, see conr_web.serve)."""
    jobs: dict[str, Job] = {}  # the running job of each browser session, for its Cancel button

    # ---- handlers

    def check_views(files: list[str] | None):
        uploads = _uploads(files)
        if not uploads:
            return [], "", gr.update(value=SHEET_SOURCES[0])
        if len(uploads) > ctx.limits.max_views:
            return [], _status(f"{len(uploads)} views uploaded; at most {ctx.limits.max_views}", error=True), \
                gr.update(value=SHEET_SOURCES[1])
        thumbs, lines = [], []
        for up in uploads:
            image, caption = check_sheet_view(up, ctx)
            lines.append(caption if image is not None else f"error: {caption}")
            if image is not None:
                thumbs.append((image, up.name))
        bad = [line for line in lines if line.startswith("error: ")]
        text = "<br>".join(html.escape(line) for line in lines)
        return thumbs, (f'<p class="error">{text}</p>' if bad else f"<p>{text}</p>"), gr.update(value=SHEET_SOURCES[1])

    def check_poses(files: list[str] | None, pose_images: bool):
        uploads = _uploads(files)
        if not uploads:
            return "", gr.update(value=POSE_SOURCES[0])
        ok, message = check_pose_uploads(uploads, bool(pose_images), ctx)
        return _status(message, error=not ok), gr.update(value=POSE_SOURCES[2])

    def render(sheet_source: str, sheet_files: list[str] | None, pose_source: str, pose_files: list[str] | None,
               pose_images: bool, sample_frames: float, size: int, engine: str, precision: str, fps: float,
               background: str, request: gr.Request) -> Iterator[tuple]:
        req = RenderRequest(sheet_source, _uploads(sheet_files), pose_source, _uploads(pose_files), bool(pose_images),
                            int(sample_frames), int(size), engine, precision, float(fps or 0), str(background))
        job = Job(req, ctx).start()
        session = request.session_hash or ""
        jobs[session] = job
        frames: list[tuple[str, str]] = []
        skip = gr.skip()
        try:
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
                    text = (f"done: {n} frame(s) at {req.size} px, {r.seconds_per_frame:.2f} s per frame "
                            f"({r.engine}); {r.wall_seconds:.1f} s in all with model load, graph export (first "
                            "use of these settings) and video encoding")
                    yield (_status(text, n, n), [(str(p), f"frame {i + 1}") for i, p in enumerate(r.previews)],
                           str(r.mp4), str(r.webm), str(r.zip))
                elif event.kind == "cancelled":
                    yield _status(event.message), skip, None, None, None
                else:
                    yield _status(event.message, error=True), skip, None, None, None
        finally:
            if jobs.get(session) is job:
                del jobs[session]
            job.release()  # results have been copied to Gradio's cache by now: remove the job folder

    def cancel(request: gr.Request) -> str:
        job = jobs.get(request.session_hash or "")
        if job is None:
            return _status("nothing to cancel")
        job.cancel()
        return _status("cancelling after the frame in flight")

    def parity() -> Iterator[tuple]:
        job = Job(None, ctx, work=parity_work).start()
        try:
            for event in job.events():
                if event.kind == "status":
                    yield _status(event.message), None
                elif event.kind == "done":
                    report, picture, verdict = event.result
                    lines = "<br>".join(html.escape(line) for line in verdict.splitlines())
                    yield f"<p><b>{lines}</b></p>", str(picture)
                else:
                    yield _status(event.message, error=True), None
        finally:
            job.release()

    # ---- page

    with gr.Blocks(title="CoNR in PaddlePaddle", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown("# CoNR in PaddlePaddle\nA character sheet and a pose sequence in, an animation out "
                    "(Collaborative Neural Rendering using Anime Character Sheets, Lin et al. 2022).")
        gr.Markdown(_weights_note(ctx), elem_id="weights-note")
        with gr.Tab("Render"):
            with gr.Row():
                with gr.Column(scale=1):
                    sheet_source = gr.Radio(list(SHEET_SOURCES), value=SHEET_SOURCES[0], label="Character sheet",
                                            elem_id="sheet-source")
                    sheet_files = gr.File(file_count="multiple", file_types=sorted(IMAGE_EXTENSIONS),
                                          label="Sheet views: PNGs with alpha (a character on a transparent "
                                          "background)", elem_id="sheet-files", height=120)
                    sheet_thumbs = gr.Gallery(label="Uploaded views over a checkerboard (alpha checked)", columns=6,
                                              rows=1, height=190, object_fit="contain", allow_preview=False,
                                              elem_id="sheet-thumbs")
                    sheet_check = gr.HTML(elem_id="sheet-check")
                    pose_source = gr.Radio(list(POSE_SOURCES), value=POSE_SOURCES[0], label="Pose sequence",
                                           elem_id="pose-source")
                    sample_frames = gr.Slider(1, SAMPLE_FRAMES, value=8, step=1, label="Frames of the sample sequence",
                                              elem_id="sample-frames")
                    pose_files = gr.File(file_count="multiple", file_types=sorted(UDP_EXTENSIONS | IMAGE_EXTENSIONS),
                                         label="Pose frames: UDP .npz/.png/.exr/.tif (natural order), or RGBA pose "
                                         "images", elem_id="pose-files", height=120)
                    pose_images = gr.Checkbox(False, label="Uploaded poses are RGBA pose images (the UDP parser "
                                              "predicts their poses)", elem_id="pose-images")
                    pose_check = gr.HTML(elem_id="pose-check")
                    with gr.Row():
                        size = gr.Dropdown(list(SIZES), value=256, label="Size (px)", elem_id="size")
                        fps = gr.Number(12, minimum=1, maximum=120, label="fps", elem_id="fps")
                        background = gr.ColorPicker("#ffffff", label="Background (MP4 and frames)",
                                                    elem_id="background")
                    with gr.Row():
                        engine = gr.Radio(list(ENGINES), value=DEFAULT_ENGINE, label="Engine", elem_id="engine",
                                          info="predictor: Paddle Inference (fast after a one-off export); "
                                          "eager: dygraph (the parity reference)")
                        precision = gr.Radio(list(PRECISIONS), value="fp32", label="Precision", elem_id="precision",
                                             info="bf16: predictor only, CPUs with AVX512-BF16 or AMX")
                    with gr.Row():
                        run = gr.Button("Render", variant="primary", elem_id="render-button")
                        stop = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
                with gr.Column(scale=1):
                    status = gr.HTML(elem_id="status")
                    with gr.Row():
                        mp4 = gr.Video(label="MP4 (over the background)", autoplay=True, loop=True,
                                       elem_id="result-mp4", height=300)
                        webm = gr.Video(label="WebM with alpha", autoplay=True, loop=True, elem_id="result-webm",
                                        height=300)
                    gallery = gr.Gallery(label="Frames, as they finish", columns=6, height=240, object_fit="contain",
                                         elem_id="frames")
                    archive = gr.File(label="All frames (zip of RGBA PNGs, as the CLI writes them)",
                                      elem_id="frames-zip")
        with gr.Tab("Parity"):
            gr.Markdown(f"Runs `python -m convert verify` on the loaded weights at {PARITY_SIZE} px (sample "
                        "character, 4 views, one pose): every layer of the Paddle port against the PyTorch "
                        "reference, judged against a float64 run of the reference. "
                        + ("The reference side reads the official `.pth` files of these weights."
                           if ctx.torch_dir is not None else
                           "No official `.pth` files were given (`--torch-weights`): the reference side is the "
                           "loaded weights converted back with `paddle2torch`, so the weight check is a round trip; "
                           "the layer-by-layer comparison still tests the port."))
            parity_button = gr.Button(f"Run convert verify at {PARITY_SIZE} px", elem_id="parity-button")
            verdict = gr.HTML(elem_id="parity-verdict")
            picture = gr.Image(label="report.png", type="filepath", elem_id="parity-picture", interactive=False)

        sheet_files.upload(check_views, sheet_files, [sheet_thumbs, sheet_check, sheet_source],
                           concurrency_limit=None, show_progress="minimal")
        sheet_files.clear(lambda: ([], "", gr.update(value=SHEET_SOURCES[0])), None,
                          [sheet_thumbs, sheet_check, sheet_source], concurrency_limit=None)
        pose_files.upload(check_poses, [pose_files, pose_images], [pose_check, pose_source],
                          concurrency_limit=None, show_progress="minimal")
        pose_files.clear(lambda: ("", gr.update(value=POSE_SOURCES[0])), None, [pose_check, pose_source],
                         concurrency_limit=None)
        run.click(render, [sheet_source, sheet_files, pose_source, pose_files, pose_images, sample_frames, size,
                           engine, precision, fps, background],
                  [status, gallery, mp4, webm, archive], concurrency_limit=1, concurrency_id=WORK_GROUP,
                  show_progress="hidden")  # our own <progress> bar: Gradio's overlay would hide the frames
        stop.click(cancel, None, status, queue=False)
        parity_button.click(parity, None, [verdict, picture], concurrency_limit=1, concurrency_id=WORK_GROUP,
                            show_progress="minimal")
    return app
