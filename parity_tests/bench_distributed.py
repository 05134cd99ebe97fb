"""Frames per second of `python -m conr_app render` with 1 and 2 (or more) workers on the same inputs, one run.

    python -m parity_tests.bench_distributed [--size 256] [--frames 8] [--workers 1 2] [--weights DIR]
                                             [--engine predictor] [--keep DIR]

Inputs: the procedural sample (4 sheet views, a UDP walk cycle of --frames poses) and, without --weights, the
project's seeded official-format weights converted to Paddle. A warm-up render exports the predictor graphs into a
cache shared by every contender, so no contender pays for the export. Each contender renders the whole sequence
into a fresh folder in its own process(es) and prints the frames/s from its summary (over all ranks: from the
moment every rank had loaded its model to the last frame), the wall time of the whole command (imports and model
loading included) and the threads per worker. Frames of every contender are checked byte-identical to the first.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conr_common.platform.cpu import cpu_model
from conr_app.rendering.distributed import RankInfo, threads_per_rank


def _prepare(root: Path, size: int, frames: int, weights: Path | None) -> tuple[Path, Path, Path]:
    from conr_common.data.samples import ensure_samples

    samples = ensure_samples(root / "samples", size=max(size, 256), frames=frames, seed=0)
    if weights is None:
        from conr_app.rendering.demo import prepare_weights

        _, weights = prepare_weights(root)  # root/official (seeded .pth) converted into root/paddle
    return weights, samples.character_sheet, samples.poses


def _render(workers: int, base: list[str], out: Path) -> tuple[float, float, str]:
    """(frames/s from the summary, wall seconds, summary line)."""
    command = [sys.executable, "-m", "conr_app", *base, "--out", str(out), "--quiet", "--workers", str(workers)]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"workers={workers} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    line = next(l for l in proc.stdout.splitlines() if "frames/s" in l and "[rank" not in l)
    return float(re.search(r"([0-9.]+) frames/s", line).group(1)), wall, line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity_tests.bench_distributed", description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--weights", type=Path, help="Paddle weights folder (default: seeded weights)")
    parser.add_argument("--engine", default="predictor", choices=("predictor", "eager"))
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        weights, sheet, poses = _prepare(root, args.size, args.frames, args.weights)
        base = ["render", "--weights", str(weights), "--character-sheet", str(sheet), "--poses", str(poses),
                "--size", str(args.size), "--engine", args.engine, "--cache-dir", str(root / "cache")]
        warm = root / "warmup_poses"
        warm.mkdir(exist_ok=True)
        first = sorted(poses.glob("*.npz"))[0]
        (warm / first.name).write_bytes(first.read_bytes())
        warm_base = list(base)
        warm_base[warm_base.index("--poses") + 1] = str(warm)
        _render(1, warm_base, root / "warmup")  # exports the graphs once, outside every measurement

        print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; size {args.size}, {args.frames} frames, engine {args.engine}")
        print(f"{'workers':>7} {'threads/worker':>14} {'frames/s':>9} {'s/frame':>8} {'wall s':>7}  bytes")
        reference = None
        for workers in args.workers:
            out = root / f"out_{workers}"
            fps, wall, _ = _render(workers, base, out)
            frames = {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}
            reference = reference or frames
            same = "identical" if frames == reference else "DIFFERENT"
            threads = threads_per_rank(RankInfo(world=workers, local_world=workers)) if workers > 1 else os.cpu_count()
            print(f"{workers:>7} {threads:>14} {fps:>9.3f} {1 / fps:>8.2f} {wall:>7.1f}  {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
