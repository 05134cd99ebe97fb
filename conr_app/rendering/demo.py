"""`python -m conr_app demo` (`make demo`): the whole path on this machine, no download.

procedural sample (conr_common.data.samples) -> seeded random weights in the official .pth format -> converted by
`convert.conversion` (what `python -m convert torch2paddle` runs) -> render the sequence in Paddle -> MP4 over a colour + WebM with alpha -> the same frames with the
PyTorch reference (conr_torch_ref.render) -> element-wise comparison of the uint8 frames.

The weights are random, so the frames are not a drawing of the character: the demo proves the plumbing and the
Paddle/PyTorch agreement, not the picture. Defaults (128 px, 24 frames) keep it to a few minutes on a 2-core CPU
with the eager engine.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from conr_common.weights.checkpoints import holds_networks, network_files
from conr_common.cli.args import MAX_BATCH, MAX_FRAMES, bounded_int, frame_rate
from conr_common.verification.draws import SEEDED, WeightDraw
from conr_common.platform.errors import ConrInputError
from conr_common.cli.options import DEFAULT_ENGINE, ENGINES, RenderOptions
from conr_common.platform.outputs import check_output, check_own_files

# what the demo writes into its --out folder: all it replaces there (anything else makes it refuse the folder)
DEMO_ENTRIES = frozenset({"samples", "weights", "frames", "predictor_cache", "demo.mp4", "demo_alpha.webm"})
DEMO_BACKGROUND = "#3A6EA5"  # a colour (not white) so that the MP4 shows the composite
# the render engines the demo offers: all but onnxruntime, which needs the optional [onnx] extra
DEMO_ENGINES = tuple(engine for engine in ENGINES if engine != "onnxruntime")


@dataclass(frozen=True)
class FrameComparison:
    frames: int
    pixels: int
    identical_pixels: int  # all four channels equal
    max_diff: int  # largest |a - b| in uint8 levels over every channel
    worst_frame: str | None

    @property
    def identical_fraction(self) -> float:
        return self.identical_pixels / self.pixels if self.pixels else 1.0

    def __str__(self) -> str:
        return (f"{self.frames} frame(s): {100 * self.identical_fraction:.4f}% of pixels identical, "
                f"max difference {self.max_diff} level(s)" + (f" (frame {self.worst_frame})" if self.max_diff else ""))


def compare_frames(reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray]) -> FrameComparison:
    """Compare uint8 RGBA frames by name (every reference frame must be in `other`, same shape)."""
    pixels = identical = worst = 0
    worst_name = None
    for name, ref in reference.items():
        if name not in other:
            raise KeyError(f"frame {name} missing from the compared set")
        got = other[name]
        if got.shape != ref.shape:
            raise ValueError(f"frame {name}: shape {got.shape} vs reference {ref.shape}")
        d = np.abs(ref.astype(np.int16) - got.astype(np.int16))
        pixels += d.shape[0] * d.shape[1]
        identical += int(np.count_nonzero(d.max(axis=2) == 0))
        if d.size and int(d.max()) > worst:
            worst, worst_name = int(d.max()), name
    return FrameComparison(len(reference), pixels, identical, worst, worst_name)


def read_frames(paths) -> dict[str, np.ndarray]:
    """Output PNGs -> {stem: uint8 RGBA (H, W, 4)} (stored BGRA on disk)."""
    out = {}
    for path in paths:
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ConrInputError(f"{path}: cannot decode this frame")
        out[Path(path).stem] = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return out


def prepare_weights(root: Path, draw: WeightDraw = SEEDED) -> tuple[Path, Path]:
    """Seeded official .pth files under root/official and their conversion under root/paddle (each step skipped
    when already done). Returns (official_dir, paddle_dir)."""
    from convert import conversion
    from conr_torch_ref.seeded import write_seeded_weights

    official = write_seeded_weights(root / "official", draw)
    paddle_dir = root / "paddle"
    if not holds_networks(paddle_dir, "paddle") or _older(paddle_dir, official):
        conversion.convert_checkpoints("torch2paddle", official, paddle_dir, force=True)
    return official, paddle_dir


def _older(paddle_dir: Path, official: Path) -> bool:
    newest_src = max((p.stat().st_mtime for p in official.glob("*.pth")), default=0.0)
    return any(p.stat().st_mtime < newest_src for p in network_files(paddle_dir, "paddle"))


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    p.add_argument("--size", type=int, default=128, help="working size, a multiple of 128 (default 128)")
    p.add_argument("--frames", type=bounded_int(1, MAX_FRAMES), default=24,
                   help="frames of the sample sequence (default 24)")
    p.add_argument("--reference-frames", type=bounded_int(0, MAX_FRAMES), default=None,
                   help="frames also rendered with the PyTorch reference (default all; 0 skips the comparison)")
    p.add_argument("--fps", type=frame_rate, default=12.0, help="video frame rate (default 12)")
    p.add_argument("--engine", choices=DEMO_ENGINES, default=None,
                   help="predictor (Paddle Inference, default) or eager (dygraph, several times slower)")
    p.add_argument("--batch", type=bounded_int(1, MAX_BATCH), default=1,
                   help=f"frames per model call, 1 to {MAX_BATCH} (default 1)")


def run_demo(out: Path = Path("demo_out"), size: int = 128, frames: int = 24, reference_frames: int | None = None,
             fps: float = 12.0, engine: str | None = None, batch: int = 1, progress: bool = True) -> dict:
    from conr_common.data.samples import ensure_samples

    from conr_app.rendering.render import Renderer
    from conr_app.rendering.video import encode_videos, parse_background

    out = Path(out)
    # every argument is checked before anything is written (issue #13): the render's by RenderOptions, the
    # predictor's graphs are cached inside the demo folder (make clean removes them)
    options = RenderOptions(size=size, batch=batch, engine=engine or DEFAULT_ENGINE, fps=fps,
                            cache_dir=out / "predictor_cache")
    if not 1 <= frames <= MAX_FRAMES:
        raise ConrInputError(f"--frames must be an integer in [1, {MAX_FRAMES}], got {frames}")
    check_output(out, {}, "--out")  # the demo has no input of the user's: its folder only must be writable...
    check_own_files(out, DEMO_ENTRIES, "--out", why="the demo replaces only its own files")  # ...and its own
    t_start = time.perf_counter()
    samples = ensure_samples(out / "samples", size=max(256, size), frames=frames, seed=0)
    t = time.perf_counter()
    official, paddle_dir = prepare_weights(out / "weights")
    t_weights = time.perf_counter() - t

    renderer = Renderer(paddle_dir, options)
    t = time.perf_counter()
    summary = renderer.render(samples.character_sheet, samples.poses, out / "frames", progress=progress)
    t_paddle = time.perf_counter() - t  # includes model load, graph export (first run only) and sheet parse
    mp4, webm = out / "demo.mp4", out / "demo_alpha.webm"
    encode_videos(summary.frames, mp4, fps=fps, background=parse_background(DEMO_BACKGROUND), webm=webm)

    comparison = None
    t_ref = 0.0
    n_ref = frames if reference_frames is None else max(0, min(reference_frames, frames))
    if n_ref:
        import torch

        from conr_torch_ref.render import load_reference_model, render_reference_frames

        t = time.perf_counter()
        with torch.no_grad():
            model = load_reference_model(official)
            names = [p.stem for p in summary.frames[:n_ref]]
            reference = render_reference_frames(model, samples.character_sheet, samples.poses, size, names=names)
        t_ref = time.perf_counter() - t
        comparison = compare_frames(reference, read_frames(summary.frames[:n_ref]))
    return {
        "samples": samples.root, "official_weights": official, "paddle_weights": paddle_dir,
        "frames_dir": out / "frames", "mp4": mp4, "webm": webm, "summary": summary, "comparison": comparison,
        "seconds_weights": t_weights, "seconds_paddle": t_paddle, "seconds_reference": t_ref,
        "reference_frames": n_ref, "seconds_total": time.perf_counter() - t_start,
    }


def run_demo_from_args(args: argparse.Namespace) -> int:
    result = run_demo(args.out, args.size, args.frames, args.reference_frames, args.fps, args.engine, args.batch)
    s = result["summary"]
    print("CoNR demo (procedural sample, seeded random weights: the images show the plumbing, not a drawing)")
    print(f"  sample:           {result['samples']}")
    print(f"  weights:          {result['official_weights']} (official .pth) -> {result['paddle_weights']} "
          f"({result['seconds_weights']:.1f} s)")
    print(f"  Paddle frames:    {result['frames_dir']} ({s.frames_total} frames, {s.engine}, {args.size} px)")
    print(f"  Paddle speed:     {s.fps:.3f} frames/s ({s.seconds:.1f} s for {s.frames_written} frames; "
          f"{result['seconds_paddle']:.1f} s with model load and graph export)")
    print(f"  MP4:              {result['mp4']} (over {DEMO_BACKGROUND})")
    print(f"  WebM with alpha:  {result['webm']}")
    if result["comparison"] is not None:
        n = result["reference_frames"]
        print(f"  PyTorch reference: {n} frames in {result['seconds_reference']:.1f} s "
              f"({n / result['seconds_reference']:.3f} frames/s with model load)")
        print(f"  Paddle vs PyTorch: {result['comparison']}")
    print(f"  total:            {result['seconds_total']:.1f} s")
    return 0
