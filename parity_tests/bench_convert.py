"""Benchmark of `python -m convert torch2paddle` on official-size checkpoints: time and peak memory.

    python -m parity_tests.bench_convert [--dir DIR] [--json PATH] [--repeat N]

Writes the four official-size random checkpoints (about 180 M parameters, 720 MB of .pth) to a temporary folder
(or uses/creates them in DIR), then runs, each in its own child process:
  idle      import torch and paddle, nothing else (the framework import cost);
  baseline  torch.load(weights_only=True) of each file + paddle.save of the same tensors (as numpy arrays);
  convert   the CLI's library function, convert.conversion.convert_checkpoints("torch2paddle", ...):
            validation, hashes, renaming, writing, re-reading every written file and comparing every tensor bit for bit.
Time is measured inside the child after its imports. Peak memory is the child's maximum resident set size as the
parent sees it when it reaps that child (`os.wait4`, the per-child form of getrusage(RUSAGE_CHILDREN), which
would otherwise report the largest of all children so far), minus the idle child's, so the framework import cost
is excluded. Each mode runs N times (interleaved, default 3, `os.sync()` before each run so that writeback of
an earlier run's output does not slow the next one); times are given as the best and the median of the runs
(the disk of a shared VM adds noise that only ever makes a run slower), peak memory as the median.
Targets: convert time <= 2x baseline, convert peak memory <= 2x the checkpoint size.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conr_common.contract.config import NETWORK_NAMES
from conr_common.contract.manifest import official_manifest
from parity_tests.harness import ROOT, child_env

MODES = ("idle", "baseline", "convert")


def _child(mode: str, src: Path, out: Path, result: Path) -> None:
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import paddle
        import torch

    start = time.perf_counter()
    if mode == "baseline":
        out.mkdir(parents=True, exist_ok=True)
        for name in NETWORK_NAMES:
            state = torch.load(src / official_manifest()[name].file, map_location="cpu", weights_only=True)
            paddle.save({k: v.numpy() for k, v in state.items()}, str(out / f"{name}.pdparams"), protocol=4)
            del state
    elif mode == "convert":
        from convert.conversion import convert_checkpoints

        convert_checkpoints("torch2paddle", src, out, force=True)
    seconds = time.perf_counter() - start
    result.write_text(json.dumps({"mode": mode, "seconds": seconds, "numpy": np.__version__}))


def _run_child(mode: str, src: Path, out: Path) -> dict:
    """Run one mode in a fresh interpreter; return its timing and its peak RSS in bytes (from os.wait4)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result = Path(f.name)
    cmd = [sys.executable, "-m", "parity_tests.bench_convert", "--child", mode, str(src), str(out), str(result)]
    os.sync()  # start every run with no dirty pages of earlier runs being written back (steadier times)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env())
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"error: the {mode} child failed with status {proc.returncode}")
    data = json.loads(result.read_text())
    result.unlink()
    data["peak_rss_bytes"] = usage.ru_maxrss * 1024  # Linux reports KiB
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity_tests.bench_convert", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="folder for the official-size .pth files (created if absent; kept)")
    parser.add_argument("--json", help="where to write the figures (default: bench_convert.json in the folder)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode; medians are reported")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "SRC", "OUT", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, src, out, result = args.child
        _child(mode, Path(src), Path(out), Path(result))
        return 0

    own_dir = args.dir is None
    folder = Path(args.dir or tempfile.mkdtemp(prefix="conr-bench-convert-"))
    files = [folder / official_manifest()[n].file for n in NETWORK_NAMES]
    if not all(f.is_file() for f in files):
        from conr_torch_ref.seeded import write_seeded_weights

        print(f"writing official-size random checkpoints to {folder} ...", flush=True)
        write_seeded_weights(folder)
    checkpoint_bytes = sum(f.stat().st_size for f in files)
    work = Path(tempfile.mkdtemp(prefix="out-", dir=folder))
    samples: dict[str, list[dict]] = {m: [] for m in MODES}
    try:
        for i in range(max(1, args.repeat)):
            for mode in MODES:
                samples[mode].append(_run_child(mode, folder, work / f"{mode}{i}"))
                shutil.rmtree(work / f"{mode}{i}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    runs = {
        m: {
            "seconds": min(r["seconds"] for r in rs),
            "median_seconds": statistics.median(r["seconds"] for r in rs),
            "peak_rss_bytes": statistics.median(r["peak_rss_bytes"] for r in rs),
        }
        for m, rs in samples.items()
    }
    idle = runs["idle"]["peak_rss_bytes"]
    base, conv = runs["baseline"], runs["convert"]
    figures = {
        "checkpoint_bytes": checkpoint_bytes,
        "parameters": sum(m.num_parameters for m in official_manifest().values()),
        "idle_import_peak_rss_bytes": idle,
        "baseline_seconds_best": base["seconds"],
        "convert_seconds_best": conv["seconds"],
        "time_ratio_best": conv["seconds"] / base["seconds"],
        "baseline_seconds_median": base["median_seconds"],
        "convert_seconds_median": conv["median_seconds"],
        "time_ratio_median": conv["median_seconds"] / base["median_seconds"],
        "baseline_peak_rss_above_idle_bytes": base["peak_rss_bytes"] - idle,
        "convert_peak_rss_above_idle_bytes": conv["peak_rss_bytes"] - idle,
        "baseline_peak_memory_multiple": (base["peak_rss_bytes"] - idle) / checkpoint_bytes,
        "convert_peak_memory_multiple": (conv["peak_rss_bytes"] - idle) / checkpoint_bytes,
        "runs": {m: [{"seconds": r["seconds"], "peak_rss_bytes": r["peak_rss_bytes"]} for r in rs] for m, rs in samples.items()},
        "targets": {"time_ratio_best": 2.0, "convert_peak_memory_multiple": 2.0},
        "method": f"{max(1, args.repeat)} runs per mode, interleaved, os.sync() before each; best and median seconds, median peak RSS; each run in its own child process; seconds measured in the child after importing torch and "
        "paddle; peak RSS from os.wait4 of that child minus the peak RSS of an idle child that only imports "
        "torch and paddle (framework import cost excluded)",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    mb = 1e6
    rows = [
        ("checkpoint size", f"{checkpoint_bytes / mb:,.0f} MB", ""),
        ("idle child (import torch + paddle)", f"{idle / mb:,.0f} MB peak RSS", "subtracted below"),
        ("baseline: torch.load + paddle.save", f"{base['seconds']:.2f} s best, {base['median_seconds']:.2f} s median", f"{figures['baseline_peak_memory_multiple']:.2f}x checkpoint"),
        ("convert torch2paddle (ours)", f"{conv['seconds']:.2f} s best, {conv['median_seconds']:.2f} s median", f"{figures['convert_peak_memory_multiple']:.2f}x checkpoint"),
        ("time ratio ours / baseline", f"{figures['time_ratio_best']:.2f}x best, {figures['time_ratio_median']:.2f}x median", "target <= 2x"),
        ("peak memory of ours", f"{figures['convert_peak_memory_multiple']:.2f}x", "target <= 2x"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    out_json = Path(args.json) if args.json else folder / "bench_convert.json"
    out_json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures: {out_json}")
    if own_dir:
        print(f"(checkpoints left in {folder}; pass --dir {folder} to reuse them, delete it when done)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
