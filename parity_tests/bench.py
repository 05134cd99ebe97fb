"""Speed, memory and agreement of the CoNR inference paths on one machine, each in its own child process.

    python -m parity_tests.bench [--size 256] [--views 4] [--frames N] [--batch N] [--draw seeded]
                                 [--no-custom-ops] [--no-truth] [--json out.json]
                                 [--weights PDPARAMS_DIR --torch-weights PTH_DIR]
    python -m parity_tests.bench --memory [--sizes 128,256,512,1024]   (peak RSS per engine: bench_memory.py)

Contenders: the PyTorch reference (eager), the eager Paddle port, Paddle Inference fp32 and bf16
(`conr_engines.inference.predictor.PredictorRunner`; bf16 is skipped with the reason on a CPU without bfloat16), and
the fp32 predictor with Paddle's native float32 instance norm (`predictor_fp32_native_norm`: what the accurate norm
costs, `conr_paddle.layers.AccurateInstanceNorm2D`), and onnxruntime on the Paddle port's ONNX graphs
(`conr_engines.onnx.runner.OnnxRunner`, the sheet parsed by the eager parser in float64 as `render --engine
onnxruntime` does; skipped with the reason when the [onnx] extra is absent). All use one weight draw
(`conr_common.verification.draws`, default the project's seeded weights; or, with --weights/--torch-weights, one
checkpoint's .pdparams and official .pth folders, whose exported graphs are then cached under the same key as
`render`'s) and the same procedural sample data (`conr_common.data.samples`: character sheet views and a UDP walk
cycle). Sheet features are computed once (timed apart); the per-frame step is timed over `--frames` frames after one
warm-up call. Peak RSS is the child's VmHWM. The machine's ceiling is a torch Conv2d 224->224 3x3 on 4x64x64 in the
same run; GFLOP/s come from `conr_engines.flops` (convs only).
Accuracy: every contender's frames against the float64 truth (the torch reference run in float64 on the same
inputs, its own child; `--no-truth` skips it): max abs and PSNR (range 1); also max abs against the eager Paddle
output and bf16's PSNR against fp32.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from conr_common.verification.compare import psnr_db
from conr_common.verification.draws import DRAWS, WeightDraw, draw_named
from conr_common.platform.errors import ConrInputError
from conr_common.cli.options import RenderOptions

CONTENDERS = ("torch", "paddle_eager", "predictor_fp32", "predictor_fp32_native_norm", "predictor_bf16", "onnxruntime")
CEILING_SHAPE = (4, 224, 64, 64)


# ------------------------------------------------------------------------------------------------ inputs


def make_inputs(size: int, views: int, frames: int) -> dict[str, np.ndarray]:
    """Sheet (views, 4, S, S) and UDP frames xyz (F, 3, S, S), alpha (F, 1, S, S), float32 in [0, 1]."""
    from conr_common.data.pipeline import load_character_sheet, sheet_array
    from conr_common.data.samples import make_character_sheet, udp_frame

    with tempfile.TemporaryDirectory() as tmp:
        make_character_sheet(tmp, size=size, seed=0)
        sheet = sheet_array(load_character_sheet(tmp, size))  # (4, 4, S, S)
    sheet = np.concatenate([sheet] * math.ceil(views / len(sheet)))[:views]
    cycle = max(frames, 8)
    udp = np.stack([udp_frame(i, cycle, size, seed=0) for i in range(frames)]).transpose(0, 3, 1, 2)
    return {
        "sheet": np.ascontiguousarray(sheet),
        "xyz": np.ascontiguousarray(udp[:, :3]),
        "alpha": np.ascontiguousarray(udp[:, 3:4]),
    }


# ------------------------------------------------------------------------------------------------ children


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


@dataclasses.dataclass(frozen=True)
class BenchWeights:
    """What every contender loads: a weight draw, or one checkpoint's folders (`paddle_dir` of .pdparams for the
    Paddle contenders, `torch_dir` of official .pth for the torch reference and the truth)."""

    draw: WeightDraw
    paddle_dir: Path | None = None
    torch_dir: Path | None = None

    def label(self) -> str:
        """The exported-graph cache's weights field: `render`'s (sha256 of the files) for a checkpoint folder."""
        if self.paddle_dir is None:
            return f"bench-{self.draw!r}"
        from conr_common.weights.checkpoints import check_weights_dir, weights_hash

        return weights_hash(check_weights_dir(self.paddle_dir))


def _paddle_model(weights: BenchWeights):
    from conr_paddle.model import load_networks, load_pdparams, unloaded

    # `unloaded`: declared, then filled by the strict loader (no random draw that the load overwrites: ~3-5 s)
    if weights.paddle_dir is not None:  # torch is not imported (1.6 s of each Paddle contender's child)
        return load_pdparams(unloaded(), weights.paddle_dir)
    from conr_common.contract.manifest import torch_to_paddle
    from conr_torch_ref.seeded import seeded_state_dicts

    states = seeded_state_dicts(weights.draw)
    model = unloaded()
    load_networks(model, {n: torch_to_paddle(n, {k: v.numpy() for k, v in s.items()}) for n, s in states.items()})
    del states
    return model


class _TorchRunner:
    """The torch reference; `float64=True` is the truth (weights and inputs widened to float64)."""

    def __init__(self, weights: BenchWeights, float64: bool = False) -> None:
        import torch

        from conr_torch_ref.model import load_networks, load_official, unloaded
        from conr_torch_ref.seeded import seeded_state_dicts

        self.torch = torch
        if weights.torch_dir is not None:
            self.model = load_official(unloaded(), weights.torch_dir)
        else:
            states = {n: {k: v.numpy() for k, v in s.items()} for n, s in seeded_state_dicts(weights.draw).items()}
            self.model = load_networks(unloaded(), states)
            del states
        self.model.eval()
        self.dtype = np.float64 if float64 else np.float32
        if float64:
            self.model.double()

    def _t(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a, dtype=self.dtype))

    def parse_sheet(self, sheet):
        with self.torch.no_grad():
            return self.model.parse_sheet(self._t(sheet))

    def render(self, sheet, xyz, alpha):
        with self.torch.no_grad():
            return self.model.render(sheet, self._t(xyz), self._t(alpha)).numpy()


def _child_ceiling() -> dict:
    import torch

    conv = torch.nn.Conv2d(CEILING_SHAPE[1], CEILING_SHAPE[1], 3, padding=1)
    x = torch.rand(*CEILING_SHAPE)
    flop = 2 * CEILING_SHAPE[1] ** 2 * 9 * CEILING_SHAPE[0] * CEILING_SHAPE[2] * CEILING_SHAPE[3]
    best = float("inf")
    with torch.no_grad():
        conv(x)
        for _ in range(5):
            t = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - t)
    return {"gflops": flop / best / 1e9, "threads": torch.get_num_threads()}


def _child_flops(size: int, views: int) -> dict:
    from conr_engines.flops import count

    c = count(size, views)
    return {"frame": c.frame, "sheet": c.sheet, "first_frame": c.first_frame, "pose_parse": c.pose_parse}


def _child_contender(name: str, work: Path, options: RenderOptions, views: int, weights: BenchWeights,
                     custom_ops: bool = True) -> dict:
    """One contender's run in this (child) process at `options.size` px, `options.batch` frames per call.
    The engine and precision are the contender's (its name)."""
    data = np.load(work / "inputs.npz")
    sheet_in, xyz, alpha = data["sheet"], data["xyz"], data["alpha"]
    info: dict = {}
    t = time.perf_counter()
    if name in ("torch", "truth"):
        runner = _TorchRunner(weights, float64=name == "truth")
    elif name == "paddle_eager":
        from conr_engines.runner import EagerRunner

        runner = EagerRunner(_paddle_model(weights))
    elif name == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
            import paddle2onnx  # noqa: F401

            from conr_engines.onnx.runner import OnnxRunner
        except ImportError as e:
            return {"skipped": f"[onnx] extra not installed ({e})", "peak_rss_mb": _peak_rss_mb()}
        model = _paddle_model(weights)
        t_export = time.perf_counter()
        runner = OnnxRunner(model, weights.label(), size=options.size, views=views, batch=options.batch)
        info.update(export_seconds=time.perf_counter() - t_export, exported=runner.exported,
                    cache=str(runner.folder), warp=runner.warp_kind)
        del model
    else:
        from conr_common.platform.cpu import bf16_support
        from conr_engines.inference.predictor import PredictorRunner
        from conr_paddle.layers import set_norm_statistics

        precision = name.split("_")[1]
        if precision == "bf16":
            ok, why = bf16_support()
            if not ok:
                return {"skipped": why, "peak_rss_mb": _peak_rss_mb()}
        model = _paddle_model(weights)
        if name.endswith("_native_norm"):
            set_norm_statistics(model, "native")
        t_export = time.perf_counter()
        runner = PredictorRunner(
            model, weights.label(), size=options.size, views=views, batch=options.batch, precision=precision,
            custom_warp=custom_ops,
        )
        info.update(export_seconds=time.perf_counter() - t_export, exported=runner.exported,
                    cache=str(runner.folder), warp=runner.warp_kind)
        del model
    info["setup_seconds"] = time.perf_counter() - t

    batch = options.batch
    t = time.perf_counter()
    sheet = runner.parse_sheet(sheet_in)
    info["sheet_seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    runner.render(sheet, xyz[:batch], alpha[:batch])  # warm-up: first-call allocations, oneDNN primitive caches
    info["warmup_seconds"] = time.perf_counter() - t

    outs = []
    t = time.perf_counter()
    for start in range(0, len(xyz), batch):
        outs.append(runner.render(sheet, xyz[start:start + batch], alpha[start:start + batch]))
    elapsed = time.perf_counter() - t
    np.save(work / f"{name}.npy", np.concatenate(outs).astype(np.float64 if name == "truth" else np.float32))
    info.update(seconds_per_frame=elapsed / len(xyz), frames=len(xyz), peak_rss_mb=_peak_rss_mb())
    return info


def _run_child(kind: str, work: Path, args) -> dict:
    out = work / f"{kind}.json"
    cmd = [sys.executable, "-m", "parity_tests.bench", "--child", kind, "--work", str(work),
           "--size", str(args.size), "--views", str(args.views), "--batch", str(args.batch), "--draw", args.draw]
    if args.no_custom_ops:
        cmd.append("--no-custom-ops")
    if args.weights is not None:
        cmd += ["--weights", str(args.weights), "--torch-weights", str(args.torch_weights)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
        print(f"[bench] {kind} failed (exit {proc.returncode}):\n{tail}", file=sys.stderr)
        return {"error": f"exit {proc.returncode}: {tail.splitlines()[-1] if tail else ''}", "wall_seconds": wall}
    result = json.loads(out.read_text())
    result["wall_seconds"] = wall
    return result


# ------------------------------------------------------------------------------------------------ report


def summarise(results: dict, work: Path, flops: dict, ceiling: float) -> None:
    outputs = {n: np.load(work / f"{n}.npy") for n in CONTENDERS if (work / f"{n}.npy").is_file()}
    eager = outputs.get("paddle_eager")
    truth = np.load(work / "truth.npy") if (work / "truth.npy").is_file() else None
    torch_fps = None
    if "seconds_per_frame" in results.get("torch", {}):
        torch_fps = 1.0 / results["torch"]["seconds_per_frame"]
    for name in CONTENDERS:
        r = results[name]
        if "seconds_per_frame" not in r:
            continue
        spf = r["seconds_per_frame"]
        r["fps"] = 1.0 / spf
        if flops:
            r["gflops_per_s"] = flops["frame"] / spf
            r["fraction_of_ceiling"] = r["gflops_per_s"] / ceiling if ceiling else None
        r["speed_vs_torch"] = r["fps"] / torch_fps if torch_fps else None
        if eager is not None and name in outputs:
            r["max_abs_vs_paddle_eager"] = float(np.abs(outputs[name] - eager).max())
        if truth is not None and name in outputs:
            r["max_abs_vs_fp64"] = float(np.abs(outputs[name] - truth).max())
            r["psnr_vs_fp64_db"] = psnr_db(truth, outputs[name])
    native = results.get("predictor_fp32_native_norm", {})
    if "seconds_per_frame" in native and "seconds_per_frame" in results.get("predictor_fp32", {}):
        # what the accurate (float64-statistics) instance norm adds to the fp32 predictor's time per frame
        results["predictor_fp32"]["accurate_norm_cost"] = (
            results["predictor_fp32"]["seconds_per_frame"] / native["seconds_per_frame"] - 1.0)
    if "predictor_bf16" in outputs and "predictor_fp32" in outputs:
        results["predictor_bf16"]["psnr_vs_fp32_db"] = psnr_db(outputs["predictor_fp32"], outputs["predictor_bf16"])


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(report: dict) -> str:
    head = ("contender", "s/frame", "fps", "GFLOP/s", "% ceil", "x torch", "peak RSS MB", "max|d| eager",
            "max|d| fp64 truth", "PSNR fp64 truth", "PSNR fp32", "note")
    rows = [head]
    for name in CONTENDERS:
        r = report["results"][name]
        if "seconds_per_frame" not in r:
            rows.append((name, "-", "-", "-", "-", "-", _fmt(r.get("peak_rss_mb"), ".0f"), "-", "-", "-", "-",
                         "skipped: " + r["skipped"] if "skipped" in r else "error: " + r.get("error", "?")))
            continue
        frac = r.get("fraction_of_ceiling")
        note = ""
        if "exported" in r:
            note = f"export {r['export_seconds']:.0f} s" if r["exported"] else "export cached"
            note += f", {r['warp']}"
        if "accurate_norm_cost" in r:
            note += f", accurate norm {100 * r['accurate_norm_cost']:+.1f}% vs native"
        rows.append((
            name, f"{r['seconds_per_frame']:.2f}", f"{r['fps']:.3f}", _fmt(r.get("gflops_per_s"), ".1f"),
            _fmt(None if frac is None else 100 * frac, ".0f"), _fmt(r.get("speed_vs_torch"), ".2f"),
            f"{r['peak_rss_mb']:.0f}", _fmt(r.get("max_abs_vs_paddle_eager"), ".2e"),
            _fmt(r.get("max_abs_vs_fp64"), ".2e"), _fmt(r.get("psnr_vs_fp64_db"), ".1f"),
            _fmt(r.get("psnr_vs_fp32_db"), ".1f"), note,
        ))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    cfg = report["config"]
    flops = report.get("flops") or {}
    lines.insert(0, f"CoNR {cfg['size']} px, {cfg['views']} views, {cfg['frames']} frames, batch {cfg['batch']}, "
                    f"weights draw {cfg.get('draw', 'seeded')}; "
                    f"{_fmt(flops.get('frame'), '.1f')} GFLOP/frame (sheet cached); ceiling "
                    f"{_fmt(report.get('ceiling_gflops'), '.1f')} GFLOP/s (torch conv 224->224 3x3, 4x64x64)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from conr_common.platform.cpu import prepare_math_libraries

    prepare_math_libraries()  # eager Paddle as under the command line, in this process and its children
    words = sys.argv[1:] if argv is None else list(argv)
    if "--memory" in words:  # peak memory per engine and size (parity_tests.bench_memory), its own options
        from parity_tests.bench_memory import main as memory_main

        return memory_main(words)
    parser = argparse.ArgumentParser(prog="python -m parity_tests.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the results (default: bench-<size>px-<views>v.json in the cache dir)")
    parser.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated subset of " + ",".join(CONTENDERS))
    parser.add_argument("--draw", default="seeded", choices=sorted(DRAWS),
                        help="weight draw (conr_common.verification.draws; default the project's seeded weights)")
    parser.add_argument("--no-truth", action="store_true",
                        help="skip the float64 truth run (torch reference in float64; about 3x a torch fp32 run)")
    parser.add_argument("--no-custom-ops", action="store_true",
                        help="export the predictor graphs with Paddle's grid_sample/resizes (conr_engines.inference.ext not used)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="a folder of .pdparams (python -m convert torch2paddle) for the Paddle contenders, "
                             "instead of --draw; needs --torch-weights")
    parser.add_argument("--torch-weights", type=Path, default=None,
                        help="the official .pth folder the --weights were converted from (torch reference, truth)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        RenderOptions(size=args.size, batch=args.batch)  # the renderer's bounds, checked once before any child
    except ConrInputError as exc:
        parser.error(str(exc))
    if (args.weights is None) != (args.torch_weights is None):
        parser.error("--weights and --torch-weights go together (one checkpoint, both formats)")
    weights = BenchWeights(draw_named(args.draw), args.weights, args.torch_weights)

    if args.child:
        if args.child == "ceiling":
            result = _child_ceiling()
        elif args.child == "flops":
            result = _child_flops(args.size, args.views)
        else:
            result = _child_contender(args.child, args.work, RenderOptions(size=args.size, batch=args.batch),
                                      args.views, weights, custom_ops=not args.no_custom_ops)
        (args.work / f"{args.child}.json").write_text(json.dumps(result, indent=1))
        return 0

    wanted = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(wanted) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown contenders {unknown}")
    if args.json is None:
        cache = os.environ.get("CONR_PADDLE_CACHE") or Path.home() / ".cache" / "conr_paddle"  # as conr_engines.export.cache.cache_root
        args.json = Path(cache) / f"bench-{args.size}px-{args.views}v.json"
    with tempfile.TemporaryDirectory(prefix="conr-bench-") as tmp:
        work = Path(tmp)
        np.savez(work / "inputs.npz", **make_inputs(args.size, args.views, args.frames))
        ceiling = _run_child("ceiling", work, args)
        flops = _run_child("flops", work, args)
        results = {}
        for name in CONTENDERS:
            if name not in wanted:
                results[name] = {"skipped": "not requested (--only)"}
                continue
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            results[name] = _run_child(name, work, args)
        if not args.no_truth:
            print("[bench] float64 truth (torch reference in float64) ...", file=sys.stderr, flush=True)
            results_truth = _run_child("truth", work, args)
        else:
            results_truth = {"skipped": "--no-truth"}
        flops_ok = flops if "frame" in flops else {}
        summarise(results, work, flops_ok, ceiling.get("gflops"))
    report = {
        "truth": results_truth,
        "config": {"size": args.size, "views": args.views, "frames": args.frames, "batch": args.batch, "draw": args.draw,
                   "weights": None if args.weights is None else str(args.weights),
                   "custom_ops": not args.no_custom_ops, "cpu_count": os.cpu_count()},
        "ceiling_gflops": ceiling.get("gflops"),
        "flops": flops_ok or None,
        "results": results,
    }
    text = table(report)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"[bench] JSON: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
