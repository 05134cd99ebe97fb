"""`python -m convert verify`: layer-by-layer parity report of a converted Paddle weight set against the official
PyTorch checkpoints, on one real inference step (character sheet + one target pose).

What it proves, in order:
1. the weights: every official tensor, renamed through the converter's table (`conr_common.contract.rename`), is present in the
   Paddle files with the same shape and the same values (max abs difference per tensor; the converter is bit-exact,
   so the tolerance is 0). A perturbed tensor is named directly.
2. the computation: both models run the same numpy input; forward hooks on every named layer of the four networks
   (containers and leaves, call-indexed keys `name#k`, see `portcheck.record`) record each output, paired by name,
   and compared element-wise (`conr_common.verification.compare.diff`). Every layer is held to the parity suite's tolerance
   (scaled error for every layer output, max abs for the final RGBA; see `tolerances_for`) and the first layer, in
   execution order, over its tolerance is named: that is where a port bug starts.
3. with `--single-step`, every Paddle leaf layer is also run alone on the reference's own recorded input, so its
   "local" error excludes anything carried in from upstream layers.

Writes OUT/report.json, OUT/report.md and OUT/report.png (atomically). Exit status 0 when everything is within
tolerance, 1 when something is not (CI gate), 2 on bad input (one line `error: ...`).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from conr_common.platform.errors import ConrInputError
from conr_common.platform.outputs import FILE, check_output, check_own_files

from convert.environment import environment, numerics_pinned
from convert.judge import judge, numerics_ok, tolerances_for, verdicts
from convert.passes import build_models, paddle_pass, paddle_place, predictor_accuracy, single_step, torch_pass, truth_pass
from convert.report import REPORT_FILES
from convert.weights import check_parameters, load_weight_states

__all__ = ["add_verify_parser", "verify", "plan_verify", "verdict_lines", "REPORT_FILES"]

REPORT_FILES = ("report.json", "report.md", "report.png")
REPORT_FORMAT_VERSION = 1


TRUTHS = ("auto", "fp64", "none")
VERIFY_ENGINES = ("eager", "predictor")  # the engines a report can add (the renderer has more)
# `--truth auto` runs the float64 referee up to this size (a float64 torch pass costs about 3x the float32 one and
# keeps every layer output in memory); above it, only when the fixed per-stage bounds fail (the referee then
# decides whether Paddle or the network's conditioning is to blame).
AUTO_TRUTH_MAX_SIZE = 128


# ------------------------------------------------------------------------------------------------------ inputs
def _check_folder(path: Path, what: str) -> Path:
    if not path.exists():
        raise ConrInputError(f"{path}: {what} folder not found")
    if not path.is_dir():
        raise ConrInputError(f"{path}: {what} must be a folder")
    return path


def load_inputs(size: int, views: int, character_sheet: Path | None, poses: Path | None, seed: int,
                work: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """sheet (M, 4, S, S), xyz (1, 3, S, S), alpha (1, 1, S, S) in float64 [0, 1], and where they came from."""
    from conr_common.data.pipeline import list_pose_files, load_character_sheet, load_udp_pose, sheet_array, udp_arrays
    from conr_common.data.samples import ensure_samples

    source = {}
    if character_sheet is None or poses is None:
        samples = ensure_samples(work / "samples", size=max(256, size), frames=1, seed=seed)
        source["samples"] = f"built-in procedural sample (conr_common.data.samples, seed {seed})"
    sheet_dir = character_sheet if character_sheet is not None else samples.character_sheet
    pose_dir = poses if poses is not None else samples.poses
    sheet_u8 = load_character_sheet(sheet_dir, size)
    if views > sheet_u8.shape[0]:  # never compare fewer views than asked for without a word
        where = "the built-in sample's character sheet" if character_sheet is None else f"{sheet_dir}"
        raise ConrInputError(f"--views {views}: {where} has only {sheet_u8.shape[0]} view(s); pass --views "
                             f"{sheet_u8.shape[0]} or fewer")
    sheet_u8 = sheet_u8[:views]
    pose_files = list_pose_files(pose_dir, images=False)
    pose = load_udp_pose(pose_files[0], size)
    if pose.crop is None:
        raise ConrInputError(f"{pose_files[0]}: the first pose frame is empty (no visible pixel); nothing to compare")
    sheet = sheet_array(sheet_u8, np.float64)
    xyz, alpha = udp_arrays([pose], np.float64)
    source.update({"character_sheet": str(sheet_dir), "views_used": int(sheet.shape[0]),
                   "pose_frame": str(pose_files[0])})
    return sheet, xyz, alpha, source


# -------------------------------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class VerifyPlan:
    """The checked arguments of one report (what `verify()` will do), before torch or Paddle is imported."""

    torch_dir: Path
    paddle_dir: Path
    out: Path
    size: int
    views: int
    character_sheet: Path | None
    poses: Path | None
    fp64: bool
    single_step: bool
    seed: int
    device: str
    truth: str
    engine: str
    onnx_dir: Path | None
    onnx_meta: dict | None

    @property
    def dtype(self) -> str:
        return "float64" if self.fp64 else "float32"

    @property
    def truth_first(self) -> bool:
        return _truth_from_start(self.fp64, self.truth, self.size)


def _truth_from_start(fp64: bool, truth: str, size: int) -> bool:
    """Whether the float64 referee runs from the start (else, with auto, only when the fixed bounds fail)."""
    return not fp64 and (truth == "fp64" or (truth == "auto" and size <= AUTO_TRUTH_MAX_SIZE))


def _check_values(size: int, views: int, device: str, truth: str, engine: str) -> None:
    from conr_common.data.checks import check_positive_int
    from conr_common.data.pipeline import check_size

    check_size(size)
    check_positive_int("--views", views)
    if device not in ("cpu", "gpu"):
        raise ConrInputError(f"--device must be cpu or gpu, got {device!r}")
    if truth not in TRUTHS:
        raise ConrInputError(f"--truth must be one of {', '.join(TRUTHS)}, got {truth!r}")
    if engine not in VERIFY_ENGINES:
        raise ConrInputError(f"--engine must be one of {', '.join(VERIFY_ENGINES)}, got {engine!r}")


def plan_verify(torch_dir: str | Path, paddle_dir: str | Path, out: str | Path, *, size: int, views: int,
                character_sheet: str | Path | None, poses: str | Path | None, fp64: bool, single_step: bool,
                seed: int, device: str, truth: str, engine: str, onnx_dir: str | Path | None) -> VerifyPlan:
    """Check every argument that needs no model (ConrInputError, one line) and return the VerifyPlan."""
    _check_values(size, views, device, truth, engine)
    if engine == "predictor" and not _truth_from_start(fp64, truth, size):
        raise ConrInputError("--engine predictor reports accuracy against the float64 truth: use it with --truth fp64 "
                             f"(or --truth auto at {AUTO_TRUTH_MAX_SIZE} px)")
    torch_dir = _check_folder(Path(torch_dir), "--torch")
    paddle_dir = _check_folder(Path(paddle_dir), "--paddle")
    character_sheet = _check_folder(Path(character_sheet), "--character-sheet") if character_sheet else None
    poses = _check_folder(Path(poses), "--poses") if poses else None
    onnx_meta = None
    if onnx_dir is not None:
        from convert.onnx_verify import read_onnx_dir

        onnx_dir = _check_folder(Path(onnx_dir), "--onnx")
        onnx_meta = read_onnx_dir(onnx_dir, size, views)
    out = Path(out)
    inputs = {"--torch": torch_dir, "--paddle": paddle_dir, "--character-sheet": character_sheet, "--poses": poses,
              "--onnx": onnx_dir}
    check_output(out, inputs, "--report")
    for name in REPORT_FILES:
        check_output(out / name, inputs, "--report", kind=FILE)
    # a folder of other files (a pose folder) would take report.png as one of its own at the next render
    check_own_files(out, REPORT_FILES, "--report", why="verify writes only into a folder of its own reports")
    return VerifyPlan(torch_dir, paddle_dir, out, size, views, character_sheet, poses, fp64, single_step, seed,
                      device, truth, engine, onnx_dir, onnx_meta)


@dataclass
class _Passes:
    """What the passes of one report found (filled in as they run)."""

    calls: list
    ref_rgba: np.ndarray
    rows: list = field(default_factory=list)
    paddle_only: list = field(default_factory=list)
    pd_rgba: np.ndarray | None = None
    truth_calls: list | None = None
    truth_rgba: np.ndarray | None = None
    use_truth: bool = False
    escalated: bool = False
    predictors: dict = field(default_factory=dict)
    onnx_column: dict | None = None


def _paddle_timed(paddle, pm, passes: _Passes, sheet, xyz, alpha, timings: dict, key: str) -> None:
    t0 = time.perf_counter()
    passes.rows, passes.paddle_only, passes.pd_rgba = paddle_pass(paddle, pm, passes.calls, sheet, xyz, alpha,
                                                                   passes.truth_calls)
    timings[key] = time.perf_counter() - t0


def _compare_passes(plan: VerifyPlan, torch, paddle, tm, pm, inputs: tuple, tol: dict, say, timings: dict) -> _Passes:
    """The torch reference, the float64 truth (from the start, or called in when the fixed bounds fail) and the
    Paddle pass comparing every layer."""
    sheet, xyz, alpha = inputs
    say(f"reference pass (torch, {plan.dtype}, {plan.size} px, {sheet.shape[0]} views)")
    t0 = time.perf_counter()
    calls, ref_rgba = torch_pass(torch, tm, sheet, xyz, alpha, plan.device, keep_inputs=plan.single_step)
    timings["torch_pass_s"] = time.perf_counter() - t0
    passes = _Passes(calls, ref_rgba, use_truth=plan.truth_first)
    if passes.use_truth:
        passes.truth_calls, passes.truth_rgba = truth_pass(torch, tm, sheet, xyz, alpha, plan.device, say, timings)
    say("Paddle pass, comparing every layer")
    _paddle_timed(paddle, pm, passes, sheet, xyz, alpha, timings, "paddle_pass_s")
    render = judge(passes.rows, ref_rgba, passes.pd_rgba, tol)
    if plan.truth == "auto" and not passes.use_truth and not plan.fp64 and not numerics_ok(passes.rows, render):
        # the fixed per-stage bounds failed: call in the referee to tell Paddle's error from the network's
        # conditioning (torch's own float32 error), then judge again
        say("fixed tolerances exceeded: calling in the float64 referee")
        passes.use_truth, passes.escalated = True, True
        passes.truth_calls, passes.truth_rgba = truth_pass(torch, tm, sheet, xyz, alpha, plan.device, say, timings)
        say("Paddle pass again, against the truth")
        _paddle_timed(paddle, pm, passes, sheet, xyz, alpha, timings, "paddle_pass_truth_s")
    return passes


def _extra_passes(plan: VerifyPlan, torch, paddle, tm, pm, inputs: tuple, passes: _Passes, say,
                  timings: dict) -> None:
    """The optional columns: the predictor against the truth, onnxruntime, and each leaf layer run alone."""
    sheet, xyz, alpha = inputs
    if plan.engine == "predictor":
        say("predictor passes (Paddle Inference fp32, and bf16 where the CPU has it)")
        t0 = time.perf_counter()
        passes.predictors = predictor_accuracy(pm, sheet, xyz, alpha, passes.truth_rgba)
        timings["predictor_s"] = time.perf_counter() - t0
    if plan.onnx_meta is not None:
        from convert.onnx_verify import onnx_column as _onnx_column

        say(f"onnxruntime pass ({plan.onnx_meta['framework']} ONNX graphs in {plan.onnx_dir})")
        t0 = time.perf_counter()
        passes.onnx_column = _onnx_column(plan.onnx_dir, plan.onnx_meta, tm, pm, sheet, xyz, alpha, passes.use_truth)
        timings["onnxruntime_s"] = time.perf_counter() - t0
    if plan.single_step:
        say("single-step pass: each Paddle leaf layer on the reference's own input")
        t0 = time.perf_counter()
        single_step(torch, paddle, pm, passes.calls, passes.rows)
        timings["single_step_s"] = time.perf_counter() - t0


def _summary(passes: _Passes, params: list[dict], v: dict) -> dict:
    rows, render = passes.rows, v["render"]
    return {
        "layers": len(rows),
        "layers_failing": sum(not r["ok"] for r in rows),
        "first_failing_layer": v["first"]["key"] if v["first"] else None,
        "first_failing_local": v["first_local"]["key"] if v["first_local"] else None,
        "worst_local_scaled": max((r["local"].get("scaled", 0.0) for r in rows if "local" in r), default=None),
        "worst_scaled": max((r.get("scaled", 0.0) for r in rows if "error" not in r), default=0.0),
        "worst_truth_ratio": max((r["truth"]["ratio"] for r in rows if "truth" in r), default=None),
        "parameters": len(params),
        "parameters_differing": [f"{p['network']}.{p['paddle_key']}" for p in v["bad_params"]],
        "render_max_abs": render.get("max_abs"),
        "unpaired_paddle_keys": passes.paddle_only,
    }


def _report(plan: VerifyPlan, passes: _Passes, params: list[dict], tol: dict, source: dict, files: dict,
            env: dict, timings: dict, views_used: int, started: float) -> dict:
    """The report.json document (its key order is the file's)."""
    v = verdicts(passes.rows, params, tol, passes.ref_rgba, passes.pd_rgba, truth_rgba=passes.truth_rgba,
                 predictors=passes.predictors, unpaired=passes.paddle_only)
    timings["total_s"] = time.perf_counter() - started
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "tool": "python -m convert verify",
        "passed": v["passed"],
        "settings": {"size": plan.size, "views": views_used, "views_requested": plan.views, "dtype": plan.dtype,
                     "seed": plan.seed, "single_step": plan.single_step, "device": plan.device,
                     "truth": "fp64" if passes.use_truth else "none", "truth_escalated": passes.escalated,
                     "engine": plan.engine},
        "accuracy": v["accuracy"],
        "onnxruntime": passes.onnx_column,
        "inputs": source,
        "weights": files,
        "tolerances": tol,
        "summary": _summary(passes, params, v),
        "render": v["render"],
        "layers": passes.rows,
        "parameters": params,
        "environment": env,
        "timings": timings,
    }


def _load_models(plan: VerifyPlan, torch, paddle, say, timings: dict):
    """Read both weight sets, compare them tensor by tensor and build both models: (params rows, files, tm, pm)."""
    t0 = time.perf_counter()
    say(f"reading weights from {plan.torch_dir} and {plan.paddle_dir}")
    torch_states, paddle_states, files = load_weight_states(plan.torch_dir, plan.paddle_dir)
    params = check_parameters(torch_states, paddle_states)
    tm, pm = build_models(torch, paddle, torch_states, paddle_states, plan.dtype, plan.device)
    del torch_states, paddle_states
    timings["load_weights_s"] = time.perf_counter() - t0
    return params, files, tm, pm


def _backward(tm, pm, inputs: tuple, plan: VerifyPlan, say, timings: dict) -> dict:
    """--backward: portcheck's gradient comparison of the four networks (convert.backward), against the float64
    truth when the forward report uses it."""
    from convert.backward import conr_backward

    truth = "fp64" if plan.truth_first or plan.truth == "fp64" else "none"
    say(f"backward passes (torch and Paddle float32{', and both in float64' if truth == 'fp64' else ''})")
    t0 = time.perf_counter()
    g = conr_backward(tm, pm, tuple(a.astype("float32") for a in inputs), truth=truth, seed=plan.seed)
    timings["backward_s"] = time.perf_counter() - t0
    return g


def verify(
    torch_dir: str | Path,
    paddle_dir: str | Path,
    out: str | Path,
    *,
    size: int = 256,
    views: int = 4,
    character_sheet: str | Path | None = None,
    poses: str | Path | None = None,
    fp64: bool = False,
    single_step: bool = False,
    seed: int = 0,
    device: str = "cpu",
    truth: str = "auto",
    engine: str = "eager",
    onnx_dir: str | Path | None = None,
    stdout: TextIO | None = None,
    backward: bool = False,
) -> dict:
    """Build the parity report, write it to `out`, return it. Raises ConrInputError on bad input."""
    from conr_common.weights.checkpoints import import_paddle, import_torch

    stdout = stdout or sys.stdout
    started = time.perf_counter()
    plan = plan_verify(torch_dir, paddle_dir, out, size=size, views=views, character_sheet=character_sheet,
                       poses=poses, fp64=fp64, single_step=single_step, seed=seed, device=device, truth=truth,
                       engine=engine, onnx_dir=onnx_dir)
    torch, paddle = import_torch(), import_paddle()
    if device == "gpu" and not (torch.cuda.is_available() and paddle.device.is_compiled_with_cuda()
                                and paddle.device.cuda.device_count() > 0):
        raise ConrInputError("--device gpu: no CUDA device visible to both torch and Paddle")
    tol = tolerances_for(plan.dtype)
    timings: dict[str, float] = {}

    def say(msg: str) -> None:
        print(f"verify: {msg}", file=stdout, flush=True)

    with tempfile.TemporaryDirectory(prefix="conr-verify-") as work:
        sheet, xyz, alpha, source = load_inputs(size, views, plan.character_sheet, plan.poses, seed, Path(work))
    # every run sees the same input values: the float32 inputs, widened for the float64 truth
    inputs = tuple(a.astype(plan.dtype) for a in (sheet, xyz, alpha))
    params, files, tm, pm = _load_models(plan, torch, paddle, say, timings)
    with numerics_pinned(torch, paddle) as pinned, paddle_place(paddle, device):
        env = environment(torch, paddle, device)
        env["numerics_pinned"] = pinned
        passes = _compare_passes(plan, torch, paddle, tm, pm, inputs, tol, say, timings)
        _extra_passes(plan, torch, paddle, tm, pm, inputs, passes, say, timings)
    passes.calls, passes.truth_calls = [], None
    gradients = _backward(tm, pm, inputs, plan, say, timings) if backward else None
    report = _report(plan, passes, params, tol, source, files, env, timings, int(inputs[0].shape[0]), started)
    if gradients is not None:
        report["backward"] = gradients
        report["passed"] = report["passed"] and gradients["summary"]["passed"]
    from convert.report import write_report

    plan.out.mkdir(parents=True, exist_ok=True)
    write_report(plan.out, report, passes.ref_rgba[0], passes.pd_rgba[0])
    return report


# ------------------------------------------------------------------------------------------------------- CLI
def verdict_lines(report: dict) -> list[str]:
    """The verdict of a report as the CLI prints it (also shown by the web app's parity tab)."""
    s = report["summary"]
    verdict = "PASS" if report["passed"] else "FAIL"
    lines = [f"{verdict}: {s['layers']} layer outputs, {s['layers_failing']} over tolerance; "
             f"first failing layer: {s['first_failing_layer'] or 'none'}; "
             f"parameters differing: {len(s['parameters_differing'])}/{s['parameters']}; "
             f"render max abs {report['render'].get('max_abs', float('nan')):.3e} vs torch fp32 "
             + ("(judged against the float64 truth)" if report["render"].get("judged_by") == "float64 truth"
                else f"(tolerance {report['render']['tolerance']:g})")]
    if report["settings"].get("truth_escalated"):
        lines.append("the fixed per-stage bounds failed, so the float64 referee was called in and judged")
    acc = report.get("accuracy")
    if acc:
        line = (f"against the float64 truth: torch fp32 {acc['torch_fp32_vs_fp64']:.3e}, Paddle fp32 "
                f"{acc['paddle_fp32_vs_fp64']:.3e} (ratio {acc['ratio']:.2f})")
        for precision in ("fp32", "bf16"):
            if f"predictor_{precision}_vs_fp64" in acc:
                line += (f", predictor {precision} {acc[f'predictor_{precision}_vs_fp64']:.3e} "
                         f"({acc[f'predictor_{precision}_psnr_db']:.1f} dB)")
        lines.append(line)
    if report.get("onnxruntime"):
        from convert.onnx_verify import onnx_verdict_line

        lines.append(onnx_verdict_line(report["onnxruntime"]))
    if s["first_failing_local"]:
        lines.append(f"first leaf layer over tolerance when run alone: {s['first_failing_local']}")
    if report.get("backward"):
        from convert.backward import backward_lines

        lines += backward_lines(report["backward"])
    return lines


def _run_verify(args: argparse.Namespace) -> int:
    report = verify(
        args.torch, args.paddle, args.report, size=args.size, views=args.views,
        character_sheet=args.character_sheet, poses=args.poses, fp64=args.fp64, single_step=args.single_step,
        seed=args.seed, device=args.device, truth=args.truth, engine=args.engine, onnx_dir=args.onnx,
        backward=args.backward,
    )
    for line in verdict_lines(report):
        print(line)
    print(f"report: {Path(args.report) / 'report.md'} ({report['timings']['total_s']:.1f} s)")
    return 0 if report["passed"] else 1


def add_verify_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify",
        help="layer-by-layer parity report: converted Paddle weights vs the official PyTorch checkpoints",
        description="Run the PyTorch reference and the Paddle port on the same character sheet and pose, record "
        "every layer's output on both sides (paired by layer name and call index), check every converted weight "
        "tensor, and write OUT/report.json, OUT/report.md and OUT/report.png. The first layer over tolerance (in "
        "execution order) is where a port error starts. Exit status: 0 all within tolerance, 1 a tolerance "
        "failed, 2 bad input.",
    )
    p.add_argument("--torch", required=True, metavar="DIR", help="folder with the four official .pth files")
    p.add_argument("--paddle", required=True, metavar="DIR", help="folder with the four converted .pdparams files")
    p.add_argument("--report", required=True, metavar="OUT", help="output folder for report.{json,md,png}")
    p.add_argument("--size", type=int, default=256, help="working size S, a multiple of 128 (default 256)")
    p.add_argument("--views", type=int, default=4, help="character sheet views to use, the first ones (default 4)")
    p.add_argument("--character-sheet", metavar="DIR", help="your character sheet folder (default: built-in sample)")
    p.add_argument("--poses", metavar="DIR", help="your UDP pose folder; its first frame is used (default: built-in sample)")
    p.add_argument("--fp64", action="store_true", help="run both sides in float64 (tolerances of float64)")
    p.add_argument("--single-step", action="store_true",
                   help="also run each Paddle leaf layer alone on the reference's input (local error)")
    p.add_argument("--seed", type=int, default=0, help="seed of the built-in sample data (default 0)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="where both frameworks run (default cpu); on GPU, TF32 is pinned off on both sides")
    p.add_argument("--verbose", action="store_true", help="show the traceback of an internal error")
    p.add_argument("--truth", choices=TRUTHS, default="auto",
                   help="float64 referee: also run the torch reference in float64 and judge each layer by Paddle's "
                        "error against it relative to torch's own float32 error (auto: at 128 px and below)")
    p.add_argument("--engine", choices=VERIFY_ENGINES, default="eager",
                   help="predictor: also report the Paddle Inference predictor's final RGBA (fp32, and bf16 where "
                        "the CPU has it) against the float64 truth")
    p.add_argument("--onnx", metavar="DIR",
                   help="also run the ONNX graphs in DIR (python -m convert export-onnx, same --size/--views, batch 1) "
                        "on onnxruntime: a third column, every exported output (sheet features, each shader level's "
                        "fused message, RGBA) against torch, eager Paddle and the float64 truth")
    p.add_argument("--backward", action="store_true",
                   help="also compare gradients (portcheck's backward comparison): a fixed random projection of the "
                        "RGBA as the loss, every layer output's, parameter's and input's gradient, against the "
                        "float64 truth when the report uses it (--truth fp64, or auto at 128 px)")
    p.set_defaults(func=_run_verify)
