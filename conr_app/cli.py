"""Command line: `python -m conr_app render ...` (a sequence in Paddle), `python -m conr_app demo`,
`python -m conr_app serve` (the local web app, package conr_app.web) and `python -m conr_app cache` (list and
prune the exported-graph cache, `conr_engines.cache_entries`).

Bad input: one line `error: ...` on stderr, exit status 2, nothing written. Ctrl-C: exit status 130, every
finished frame kept, no partial file; rerun with --resume. Nothing happens at import time; Paddle is imported
only when a subcommand runs.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from conr_common.cli.args import (EXIT_INPUT, MAX_BATCH, OneLineParser, bounded_int, frame_rate, one_line, positive_int,
                             one_line_warnings)
from conr_common.platform.cpu import prepare_math_libraries
from conr_common.platform.errors import ConrInputError, ConrNonFiniteError, internal_error_line

if TYPE_CHECKING:
    from conr_common.cli.options import RenderOptions

EXIT_INTERRUPTED = 130



def _add_render_parser(subparsers) -> None:
    from conr_common.cli.options import DEFAULT_ENGINE, ENGINES, PRECISIONS

    p = subparsers.add_parser(
        "render",
        help="render a pose sequence with a character sheet",
        description="Render every pose of --poses (UDP .npz/.exr/.png/.tif frames, or RGBA pose images with "
        "--pose-images) with the character of --character-sheet into --out/<pose name>.png (premultiplied RGBA, "
        "the pose frame's size). With --pose-images the predicted UDP is saved too as <name>_udp.png (preview) "
        "and <name>_udp.npz (key 'i', reusable as a UDP input).",
    )
    p.add_argument("--weights", required=True, type=Path,
                   help="folder with the four <network>.pdparams (python -m convert torch2paddle OFFICIAL_DIR)")
    p.add_argument("--character-sheet", required=True, type=Path, help="folder of RGBA sheet images")
    p.add_argument("--poses", required=True, type=Path, help="folder of pose frames (natural order)")
    p.add_argument("--out", required=True, type=Path, help="output folder for the frames")
    p.add_argument("--size", type=int, default=256, help="working size S, a multiple of 128 (default 256)")
    p.add_argument("--pose-images", action="store_true",
                   help="poses are RGBA pose images: predict their UDP with the parser (official test_pose_use_parser_udp)")
    p.add_argument("--video", type=Path,
                   help="also write an H.264 MP4 (and, without --background, a VP9 WebM with alpha beside it); "
                   "frames of another size than the first are resized to it")
    p.add_argument("--fps", type=frame_rate, default=30.0, help="video frame rate (default 30)")
    p.add_argument("--background", help="video background: #RRGGBB or an image file (default white)")
    p.add_argument("--resume", action="store_true",
                   help="skip the frames finished by the render recorded in --out (refused if it had other settings)")
    p.add_argument("--batch", type=bounded_int(1, MAX_BATCH), default=1,
                   help=f"frames per model call, 1 to {MAX_BATCH} (default 1)")
    p.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                   help=f"predictor: Paddle Inference (fast); eager: dygraph (reference); onnxruntime: the exported ONNX "
                   f"graphs on onnxruntime (needs the [onnx] extra) (default {DEFAULT_ENGINE})")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp32 (default) or bf16 (predictor only)")
    p.add_argument("--cache-dir", type=Path,
                   help="exported-graph cache of --engine predictor/onnxruntime (default $CONR_PADDLE_CACHE or ~/.cache/conr_paddle)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="show the traceback of an internal error")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="render with N processes on this machine, started through paddle.distributed.launch "
                   "(default 1; at most the cores this process may use); under the launcher itself, each rank renders its shard without this option")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads per process (default: every core for one process; under the launcher or "
                   "--workers, this machine's cores divided among its ranks)")
    p.set_defaults(func=_run_render)


def _add_demo_parser(subparsers) -> None:
    from conr_app.rendering.demo import add_demo_arguments

    p = subparsers.add_parser(
        "demo",
        help="render the built-in sample (seeded weights, no download) and compare with the PyTorch reference",
        description="Generate the procedural sample and seeded random weights (no download), convert the weights "
        "to Paddle, render the sequence in Paddle, encode an MP4 and a WebM, render the same frames with the "
        "PyTorch reference and print how far apart they are.",
    )
    add_demo_arguments(p)
    p.add_argument("--verbose", action="store_true", help="show the traceback of an internal error")
    p.set_defaults(func=_run_demo)


def _add_serve_parser(subparsers) -> None:
    # Lazily: the web app (conr_app.web, drawn below this command line) imports gradio, which `render` never needs.
    from conr_app.web.serve import SERVE_DESCRIPTION, SERVE_HELP, add_serve_arguments

    p = subparsers.add_parser("serve", help=SERVE_HELP, description=SERVE_DESCRIPTION)
    add_serve_arguments(p)
    p.set_defaults(func=_run_serve)


def _add_cache_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "cache",
        help="list the exported-graph cache, and --prune what this installation never reads again",
        description="List every folder of the graph cache of the predictor and onnxruntime engines: what it holds, "
        "its size and, when it is stale, why (another Paddle version or export format, a parameter folder no graph "
        "reads, an export that never finished, a killed writer's temporary folder). --prune removes the stale "
        "folders, each under its lock; one whose lock another process holds (an export under way) is passed over. "
        "Prune while no render uses the cache: a render that is starting may be about to read a parameter folder "
        "whose graph folder it has not written yet. The compiled operators and the web app's weights stay.",
    )
    p.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                   help="the cache (default $CONR_PADDLE_CACHE or ~/.cache/conr_paddle)")
    p.add_argument("--prune", action="store_true", help="remove the stale folders")
    p.set_defaults(func=_run_cache)


def _run_cache(args: argparse.Namespace) -> int:
    from conr_engines.cache_entries import cache_entries, prune
    from conr_engines.export.cache import cache_root

    root = cache_root(args.cache_dir)
    if root.exists() and not root.is_dir():
        raise ConrInputError(f"--cache-dir {root}: is a file, not a cache folder")
    entries = cache_entries(root)
    gb = 1024 ** 3
    for entry in entries:
        state = f"stale: {entry.stale}" if entry.stale else "current"
        print(f"{entry.path.name}  {entry.kind}  {entry.bytes / 1024 ** 2:.1f} MB  {entry.what}  [{state}]")
    stale = [e for e in entries if e.stale]
    print(f"{root}: {len(entries)} folder(s), {sum(e.bytes for e in entries) / gb:.2f} GB; "
          f"{len(stale)} stale, {sum(e.bytes for e in stale) / gb:.2f} GB")
    if args.prune:
        removed, busy = prune(entries)
        print(f"removed {len(removed)} folder(s), {sum(e.bytes for e in removed) / gb:.2f} GB"
              + (f"; passed over {len(busy)} in use by another process" if busy else ""))
    elif stale:
        print("remove them with: python -m conr_app cache --prune" + (f" --cache-dir {root}" if args.cache_dir else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m conr_app",
                            description="CoNR in PaddlePaddle: character sheet + pose sequence -> animation.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_render_parser(subparsers)
    _add_demo_parser(subparsers)
    _add_serve_parser(subparsers)
    _add_cache_parser(subparsers)
    return parser


def render_options(args: argparse.Namespace, threads: int | None) -> RenderOptions:
    """The validated RenderOptions of a parsed `render` command line (ConrInputError on a bad value)."""
    from conr_common.cli.options import RenderOptions

    return RenderOptions(size=args.size, batch=args.batch, engine=args.engine, precision=args.precision,
                         fps=args.fps, workers=args.workers, threads=threads, cache_dir=args.cache_dir)


def _run_render(args: argparse.Namespace) -> int:
    from conr_app.rendering.distributed import rank_info, threads_per_rank
    from conr_app.rendering.render import Renderer

    info = rank_info()
    threads = threads_per_rank(info, args.threads) if (info.distributed or args.threads) else None
    renderer = Renderer(args.weights, render_options(args, threads))
    if info.distributed:
        return _run_render_rank(args, renderer, info)
    summary = renderer.render(args.character_sheet, args.poses, args.out, pose_images=args.pose_images,
                              resume=args.resume, video=args.video, background=args.background,
                              progress=not args.quiet)
    print(f"{summary.frames_written} frame(s) written, {summary.frames_skipped} already complete, "
          f"{summary.frames_total} in the sequence -> {args.out}")
    if summary.frames_written:
        print(f"{summary.seconds:.1f} s, {summary.fps:.3f} frames/s ({summary.engine})")
    for video in summary.videos:
        print(f"video: {video}")
    return 0


def _run_render_rank(args: argparse.Namespace, renderer, info) -> int:
    """One rank of `paddle.distributed.launch` (conr_app.rendering.distributed): its shard; rank 0 also the video."""
    from conr_app.rendering.distributed import PaddleCollective, render_sharded, stop_on_sigterm

    stop_on_sigterm()
    summary = render_sharded(renderer, args.character_sheet, args.poses, args.out, info=info,
                             collective=PaddleCollective(), pose_images=args.pose_images, resume=args.resume,
                             video=args.video, background=args.background, progress=not args.quiet)
    if info.rank != 0:
        print(f"{info.prefix} {summary.frames_written} frame(s) written, {summary.seconds:.1f} s, "
              f"{summary.fps:.3f} frames/s ({summary.engine}, {renderer.options.threads} thread(s))")
        return 0
    print(f"{summary.frames_written} frame(s) written by {summary.ranks} ranks, {summary.frames_skipped} already "
          f"complete, {summary.frames_total} in the sequence -> {args.out}")
    if summary.frames_written:
        print(f"{summary.seconds:.1f} s, {summary.fps:.3f} frames/s over all {summary.ranks} ranks "
              f"({summary.engine}, {renderer.options.threads} thread(s) per rank)")
    for video in summary.videos:
        print(f"video: {video}")
    return 0


def _start_workers(args: argparse.Namespace, argv: list[str]) -> int:
    """--workers N > 1: check what can be checked without the model, then run the ranks through the launcher."""
    from conr_common.platform.quiet import import_paddle

    import_paddle()  # first: the render's modules import Paddle, whose ccache warning stays off the user's stderr
    from conr_app.rendering.distributed import rank_info
    from conr_app.rendering.launch import run_launcher
    from conr_app.rendering.render import Renderer

    if rank_info().distributed:
        raise ConrInputError("--workers: already running under paddle.distributed.launch; drop --workers there")
    renderer = Renderer(args.weights, render_options(args, args.threads))
    plan = renderer.plan(args.character_sheet, args.poses, args.out, pose_images=args.pose_images, video=args.video,
                         background=args.background, resume=args.resume)
    renderer.check_memory(plan)  # every rank holds its own model: refused here rather than killed there
    return run_launcher(args.workers, argv)


def _run_demo(args: argparse.Namespace) -> int:
    from conr_app.rendering.demo import run_demo_from_args

    return run_demo_from_args(args)


def _run_serve(args: argparse.Namespace) -> int:
    from conr_app.web.serve import run_serve_from_args

    return run_serve_from_args(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    one_line_warnings()
    words = list(sys.argv[1:] if argv is None else argv)
    if args.command == "render" and args.workers > 1:
        try:
            return _start_workers(args, words)
        except ConrInputError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return EXIT_INPUT
    if args.command == "render":
        from conr_app.rendering.distributed import rank_info, threads_per_rank

        try:
            info = rank_info()
        except ConrInputError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return EXIT_INPUT
        if info.distributed or args.threads:
            # the launcher hands every rank OMP_NUM_THREADS=1: this rank's share of the cores instead
            os.environ["OMP_NUM_THREADS"] = str(threads_per_rank(info, args.threads))
    prepare_math_libraries()  # threads and MKL's code path, before paddle is imported
    from conr_common.platform.quiet import import_paddle

    import_paddle()  # first, so that its OMP_NUM_THREADS / ccache chatter stays off the user's stderr
    from conr_app.rendering.render import RenderInterrupted
    from conr_app.rendering.video import VideoError

    try:
        return int(args.func(args))
    except ConrInputError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_INPUT
    except RenderInterrupted as exc:
        if "--resume" not in words:
            words.append("--resume")
        command = "python -m conr_app " + " ".join(shlex.quote(str(w)) for w in words)
        if os.environ.get("PADDLE_TRAINERS_NUM", "1") not in ("", "1"):
            command = "the same launch command (any number of ranks) with --resume"
        print(f"interrupted: {exc.skipped + exc.written} of {exc.total} frames are complete in {exc.out}; "
              f"to render the rest run: {command}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted: no partial file was left; rerun the same command with --resume to continue",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except (VideoError, ConrNonFiniteError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # disk full, permission denied: not the input's fault, still one line
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or a library failure: one line and exit 1, the traceback with --verbose
        if getattr(args, "verbose", False):
            raise
        print(internal_error_line(exc, f"{args.command}"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
