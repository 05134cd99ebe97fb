"""Peak memory of a whole render per engine and size: what `conr_common.platform.memory.estimate_render_bytes` is fitted to.

    python -m parity_tests.bench --memory [--sizes 128,256,512,1024] [--views 4] [--engines eager,predictor,onnxruntime]

Each measurement is one child process, `python -m conr_app render` of one sample pose with the sample character
(`conr_common.data.samples`, 4 views) and the seeded weights (written and converted like the demo's), run one at a time;
its peak resident memory is the child's `ru_maxrss` as returned by `os.wait4` (the child alone, with any process
it waited for). The export cache is a fresh folder of this run, so the predictor and onnxruntime figures include
exporting their graphs (a user's first render at that size, the worst case).

Before each child the sizes already measured for that engine are fitted (a + b * size^2, `fit`); a size whose
fitted peak does not fit in MemAvailable with a margin (MARGIN) is not run: the bench prints the estimate instead
of letting the kernel kill the child on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from conr_common.platform.cpu import cpu_model
from conr_common.platform.memory import available_memory_bytes

ENGINES = ("eager", "predictor", "onnxruntime")
SIZES = (128, 256, 512, 1024)
# measure a size only if its fitted peak stays under this share of MemAvailable (other work shares the machine)
MARGIN = 0.6
GB = 1 << 30


def fit(sizes: list[int], peaks: list[float]) -> tuple[float, float] | None:
    """(a, b) of peak = a + b * size^2 by least squares over >= 2 sizes, else None."""
    if len(sizes) < 2:
        return None
    design = np.stack([np.ones(len(sizes)), np.asarray(sizes, np.float64) ** 2], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(peaks, np.float64), rcond=None)
    return float(a), float(b)


def _inputs(root: Path) -> tuple[Path, Path, Path]:
    """(paddle weights folder, sheet folder, pose folder with one pose) under `root`."""
    from conr_common.data.samples import ensure_samples
    from conr_app.rendering.demo import prepare_weights

    samples = ensure_samples(root / "samples", size=256, frames=1, seed=0)
    _, paddle_dir = prepare_weights(root / "weights")
    return paddle_dir, samples.character_sheet, samples.poses


def measure(engine: str, size: int, inputs: tuple[Path, Path, Path], work: Path) -> dict:
    """One render child: {"peak_bytes", "seconds", "exit"} (and "stderr" on failure)."""
    weights, sheet, poses = inputs
    out = work / f"out-{engine}-{size}"
    cmd = [sys.executable, "-m", "conr_app", "render", "--weights", str(weights), "--character-sheet", str(sheet),
           "--poses", str(poses), "--out", str(out), "--size", str(size), "--engine", engine, "--quiet",
           "--cache-dir", str(work / "cache")]
    t = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace").strip()
    result = {"peak_bytes": usage.ru_maxrss * 1024, "seconds": time.perf_counter() - t, "exit": proc.returncode}
    if proc.returncode != 0:
        result["stderr"] = stderr.splitlines()[-1] if stderr else ""
    return result


def _measure_engine(engine: str, sizes: list[int], inputs, work: Path) -> dict[int, dict]:
    done: dict[int, dict] = {}
    for size in sizes:
        measured = [s for s, r in done.items() if "peak_bytes" in r and r["exit"] == 0]
        coeffs = fit(measured, [done[s]["peak_bytes"] for s in measured])
        available = available_memory_bytes()
        if coeffs is not None and available is not None:
            estimate = coeffs[0] + coeffs[1] * size * size
            if estimate > MARGIN * available:
                done[size] = {"skipped": f"estimate {estimate / GB:.1f} GB from {measured} px does not fit in "
                                         f"{MARGIN:.0%} of MemAvailable {available / GB:.1f} GB",
                              "estimate_bytes": estimate}
                print(f"[bench-memory] {engine} {size} px: not run, {done[size]['skipped']}", file=sys.stderr)
                continue
        print(f"[bench-memory] {engine} {size} px ...", file=sys.stderr, flush=True)
        done[size] = measure(engine, size, inputs, work)
        print(f"[bench-memory] {engine} {size} px: {json.dumps(done[size])}", file=sys.stderr, flush=True)
    return done


def table(results: dict[str, dict[int, dict]], sizes: list[int], views: int) -> str:
    head = f"| engine | " + " | ".join(f"{s} px" for s in sizes) + " | fitted a + b * size^2 |"
    lines = [f"Peak RSS of one `render` ({views} views, 1 frame, export included), {cpu_model()}, "
             f"{os.cpu_count()} cores:", "", head, "| --- |" + " ---: |" * len(sizes) + " --- |"]
    for engine, rows in results.items():
        cells = []
        for s in sizes:
            r = rows.get(s, {})
            if r.get("exit") == 0:
                cells.append(f"{r['peak_bytes'] / GB:.2f} GB")
            elif "estimate_bytes" in r:
                cells.append(f"not run (estimate {r['estimate_bytes'] / GB:.1f} GB)")
            else:
                cells.append(f"failed: {r.get('stderr', '?')}" if r else "-")
        measured = [s for s in sizes if rows.get(s, {}).get("exit") == 0]
        coeffs = fit(measured, [rows[s]["peak_bytes"] for s in measured])
        cells.append("-" if coeffs is None else f"a = {coeffs[0] / GB:.3f} GB, b = {coeffs[1]:.1f} B/px^2")
        lines.append(f"| {engine} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity_tests.bench --memory", description=__doc__.splitlines()[0])
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--views", type=int, default=4, choices=[4], help="the sample character's 4 views")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    engines = [e for e in args.engines.split(",") if e]
    results: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="conr-bench-memory-") as tmp:
        work = Path(tmp)
        inputs = _inputs(work)
        for engine in engines:
            results[engine] = _measure_engine(engine, sizes, inputs, work)
    text = table(results, sizes, args.views)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "views": args.views, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
