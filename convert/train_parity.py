"""`python -m convert train-parity`: N optimizer steps of CoNR in torch and in the Paddle port from the same weights,
each also in float64, and whether Paddle's float32 loss curve stays as close to its float64 run as torch's does.

The legs (`convert.train_legs`: what trains, the loss, the target) run one after another. Verdicts, on the loss
before each step k:
- structure: the float64 curves of both frameworks agree, max_k |L_paddle64 - L_torch64| / max_k |L_torch64| at
  most STEP_STRUCTURE_FP64 (a port or optimizer-mapping bug shows here whatever float32 does);
- precision (the rule of the exit status): Paddle's float32 drift from its own float64 run,
  max_k |L_paddle32 - L_paddle64|, at most TRUTH_RATIO_LIMIT x torch's, max_k |L_torch32 - L_torch64|, plus
  TRUTH_FLOOR_SCALED x max_k |L_torch64| (the forward referee's rule, `portcheck.verdicts`).
Also reported: each float32 curve against the other framework's float64 run, and per trained network the sampled
parameter updates of every leg against the float64 ones.

Writes OUT/report.json, report.md, report.png (atomically, as one folder). Exit status 0 both verdicts pass, 1 one
fails, 2 bad input (one line `error: ...`).
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conr_common.errors import ConrInputError
from portcheck.errors import PortInputError
from portcheck.metrics import scaled_error
from portcheck.optim import KINDS, OptimizerSpec, mapping_rows
from portcheck.steps import STEP_STRUCTURE_FP64
from portcheck.verdicts import TRUTH_FLOOR_SCALED, TRUTH_RATIO_LIMIT

__all__ = ["add_train_parity_parser", "train_parity", "plan_train", "judge_curves", "LEGS"]

LEGS = ("torch32", "torch64", "paddle32", "paddle64")
DEFAULT_LR = {"adam": 1e-4, "adamw": 1e-4, "sgd": 1e-2}


@dataclass(frozen=True)
class TrainPlan:
    torch_dir: Path | None
    out: Path
    size: int
    views: int
    steps: int
    seed: int
    optimizer: OptimizerSpec


def plan_train(torch_dir, out, *, size: int, views: int, steps: int, seed: int, optimizer: str,
               lr: float | None, momentum: float, weight_decay: float) -> TrainPlan:
    """Every argument checked before a model is built (ConrInputError, one line)."""
    from conr_common.checks import check_positive_int
    from conr_common.pipeline import check_size

    check_size(size)
    check_positive_int("--views", views)
    check_positive_int("--steps", steps)
    if optimizer not in KINDS:
        raise ConrInputError(f"--optimizer must be one of {', '.join(KINDS)}, got {optimizer!r}")
    try:
        spec = OptimizerSpec(optimizer, lr=DEFAULT_LR[optimizer] if lr is None else lr,
                             momentum=momentum if optimizer == "sgd" else 0.0, weight_decay=weight_decay)
    except PortInputError as exc:
        raise ConrInputError(f"--optimizer {optimizer}: {exc}") from None
    if torch_dir is not None:
        torch_dir = Path(torch_dir)
        if not torch_dir.is_dir():
            raise ConrInputError(f"{torch_dir}: --torch must be a folder with the four official .pth files")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConrInputError(f"{out}: --report must be a folder (it exists and is a file)")
    return TrainPlan(torch_dir, out, size, views, steps, seed, spec)


def load_data(size: int, views: int, seed: int, work: Path) -> tuple[dict, dict]:
    """Sheet, pose (xyz, alpha) and the target RGBA of the procedural sample, float64, and where they came from."""
    from conr_common.pipeline import crop_and_resize, load_udp_pose, read_rgba
    from conr_common.samples import ensure_samples

    from .verify import load_inputs

    sheet, xyz, alpha, source = load_inputs(size, views, None, None, seed, work)
    pose = load_udp_pose(Path(source["pose_frame"]), size)
    samples = ensure_samples(work / "samples", size=max(256, size), frames=1, seed=seed)
    image_path = samples.pose_images / f"{Path(source['pose_frame']).stem}.png"
    target = crop_and_resize(read_rgba(image_path), pose.crop, size).astype(np.float64) / 255.0
    source["target"] = (f"{image_path.name}: the sample character's textured render in the pose of "
                        f"{Path(source['pose_frame']).name}, cropped like it (premultiplied RGBA)")
    data = {"sheet": sheet, "xyz": xyz, "alpha": alpha, "target": target.transpose(2, 0, 1)[None].copy()}
    return data, source


def load_weights(torch_dir: Path | None) -> tuple[dict, dict, str]:
    """Official-named and Paddle-named numpy states: `--torch` files, or the project's seeded draw."""
    from conr_common.checkpoints import load_folder
    from conr_common.manifest import torch_to_paddle

    if torch_dir is not None:
        states, what = load_folder(torch_dir, "torch"), str(torch_dir)
    else:
        from conr_torch_ref.seeded import seeded_state_dicts

        states = {n: {k: v.numpy() for k, v in s.items()} for n, s in seeded_state_dicts().items()}
        what = "seeded official-format weights (conr_torch_ref.seeded, draw 'seeded')"
    return states, {n: torch_to_paddle(n, s) for n, s in states.items()}, what


def _max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def judge_curves(losses: dict[str, list[float]]) -> dict:
    """Both verdicts on the four loss curves (module docstring), with every figure."""
    scale = float(np.max(np.abs(losses["torch64"])))
    drift_t, drift_p = _max_abs(losses["torch32"], losses["torch64"]), _max_abs(losses["paddle32"], losses["paddle64"])
    fp64 = _max_abs(losses["paddle64"], losses["torch64"])
    bound = TRUTH_RATIO_LIMIT * drift_t + TRUTH_FLOOR_SCALED * scale
    out = {
        "loss_scale": scale, "fp64_max_abs": fp64, "fp64_scaled": fp64 / scale if scale else fp64,
        "torch32_vs_torch64": drift_t, "paddle32_vs_paddle64": drift_p,
        "paddle32_vs_torch64": _max_abs(losses["paddle32"], losses["torch64"]),
        "torch32_vs_paddle64": _max_abs(losses["torch32"], losses["paddle64"]),
        "torch32_vs_paddle32": _max_abs(losses["torch32"], losses["paddle32"]),
        "drift_ratio": drift_p / drift_t if drift_t else (0.0 if drift_p == 0 else float("inf")),
        "precision_bound": bound, "structure_bound": STEP_STRUCTURE_FP64,
        "rule": (f"Paddle's fp32 drift from its own fp64 curve <= {TRUTH_RATIO_LIMIT:g} x torch's + "
                 f"{TRUTH_FLOOR_SCALED:g} x max loss; fp64 curves within {STEP_STRUCTURE_FP64:g} x max loss"),
    }
    out["structure"] = bool(out["fp64_scaled"] <= STEP_STRUCTURE_FP64)
    out["precision"] = bool(drift_p <= bound)
    out["passed"] = out["structure"] and out["precision"]
    return out


def judge_updates(legs: dict) -> list[dict]:
    """Per trained network: the sampled parameter updates of each leg against the float64 ones (scaled)."""
    from .train_legs import TRAINED

    rows = []
    for net in TRAINED:
        u = {k: np.concatenate([v for n, v in legs[k].updates.items() if n.startswith(net + ".")]) for k in LEGS}
        rows.append({"network": net, "elements": int(u["torch64"].size),
                     "update_max_abs": float(np.abs(u["torch64"]).max()),
                     "paddle64_vs_torch64": scaled_error(u["torch64"], u["paddle64"]),
                     "torch32_vs_torch64": scaled_error(u["torch64"], u["torch32"]),
                     "paddle32_vs_paddle64": scaled_error(u["paddle64"], u["paddle32"]),
                     "paddle32_vs_torch64": scaled_error(u["torch64"], u["paddle32"])})
    return rows


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _run_legs(plan: TrainPlan, states: dict, paddle_states: dict, data: dict, say) -> dict:
    from .train_legs import paddle_leg, sample_indices, torch_leg

    idx = sample_indices(states, plan.seed)
    legs, rss = {}, {}
    for key in LEGS:
        dtype = "float64" if key.endswith("64") else "float32"
        say(f"{key}: {plan.steps} {plan.optimizer.kind} steps in {dtype}")
        if key.startswith("torch"):
            legs[key] = torch_leg(states, data, plan.optimizer, plan.steps, dtype, idx)
        else:
            legs[key] = paddle_leg(states, paddle_states, data, plan.optimizer, plan.steps, dtype, idx)
        rss[key] = peak_rss_gb()
        say(f"{key}: {legs[key].seconds:.1f} s, final loss {legs[key].losses[-1]:.6f}, peak RSS {rss[key]:.2f} GB")
    return {"legs": legs, "peak_rss_gb": rss}


def train_parity(torch_dir=None, out="train-parity-report", *, size: int = 128, views: int = 1, steps: int = 20,
                 seed: int = 0, optimizer: str = "adam", lr: float | None = None, momentum: float = 0.9,
                 weight_decay: float = 0.0, stdout=None) -> dict:
    """Run the four legs, judge them, write the report folder, return the report (ConrInputError on bad input)."""
    from conr_common.checkpoints import import_paddle, import_torch

    from .environment import environment
    from .train_legs import FROZEN, TRAINED

    stdout = stdout or sys.stdout
    started = time.perf_counter()
    plan = plan_train(torch_dir, out, size=size, views=views, steps=steps, seed=seed, optimizer=optimizer, lr=lr,
                      momentum=momentum, weight_decay=weight_decay)
    torch, paddle = import_torch(), import_paddle()
    say = lambda msg: print(f"train-parity: {msg}", file=stdout, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="conr-train-") as work:
        data, source = load_data(plan.size, plan.views, plan.seed, Path(work))
    states, paddle_states, weights = load_weights(plan.torch_dir)
    run = _run_legs(plan, states, paddle_states, data, say)
    legs = run["legs"]
    losses = {k: legs[k].losses for k in LEGS}
    report = {
        "tool": "python -m convert train-parity", "format_version": 1,
        "settings": {"size": plan.size, "views": int(data["sheet"].shape[0]), "steps": plan.steps, "seed": plan.seed,
                     "optimizer": {**plan.optimizer.__dict__, "betas": list(plan.optimizer.betas)},
                     "trained": list(TRAINED), "frozen": list(FROZEN),
                     "loss": "mean |render - target| over premultiplied RGBA (4 x S x S), before each step"},
        "optimizer_mapping": mapping_rows(plan.optimizer),
        "inputs": source, "weights": weights, "losses": losses, "curves": judge_curves(losses),
        "updates": judge_updates(legs), "peak_rss_gb": run["peak_rss_gb"],
        "timings": {**{f"{k}_s": legs[k].seconds for k in LEGS}}, "environment": environment(torch, paddle, "cpu"),
    }
    report["passed"] = report["curves"]["passed"]
    report["timings"]["total_s"] = time.perf_counter() - started
    from .train_report import write_train_report

    write_train_report(plan.out, report)
    return report


def verdict_line(report: dict) -> str:
    c = report["curves"]
    return (f"{'PASS' if report['passed'] else 'FAIL'}: {report['settings']['steps']} steps; fp32 loss drift from "
            f"its own fp64 run: torch {c['torch32_vs_torch64']:.3e}, Paddle {c['paddle32_vs_paddle64']:.3e} "
            f"(ratio {c['drift_ratio']:.2f}, bound {c['precision_bound']:.3e}); fp64 curves "
            f"{c['fp64_scaled']:.2e} apart (scaled, bound {c['structure_bound']:g})")


def _run(args: argparse.Namespace) -> int:
    report = train_parity(args.torch, args.report, size=args.size, views=args.views, steps=args.steps,
                          seed=args.seed, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay)
    print(verdict_line(report))
    print(f"report: {Path(args.report) / 'report.md'} ({report['timings']['total_s']:.1f} s, peak RSS "
          f"{max(report['peak_rss_gb'].values()):.2f} GB)")
    return 0 if report["passed"] else 1


def add_train_parity_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train-parity", help="N training steps of CoNR in torch and Paddle (fp32 and fp64): loss curves compared",
        description="Train CoNR's shader and RGBA decoder (parser and pose encoder frozen) for N steps on the "
        "procedural sample, with an L1 loss against the character's own render in the pose, in torch and in "
        "Paddle, each in float32 and float64, from the same weights. Exit status: 0 when the float64 curves agree "
        "and Paddle's float32 curve drifts from its float64 run no more than 2x torch's (+ 1e-6 x the loss), 1 "
        "otherwise, 2 bad input.")
    p.add_argument("--torch", metavar="DIR", help="folder with the four official .pth files (default: seeded weights)")
    p.add_argument("--report", required=True, metavar="OUT", help="output folder for report.{json,md,png}")
    p.add_argument("--size", type=int, default=128, help="working size S, a multiple of 128 (default 128)")
    p.add_argument("--views", type=int, default=1, help="character sheet views, the first ones (default 1)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample data and the parameter sample (default 0)")
    p.add_argument("--optimizer", choices=KINDS, default="adam", help="optimizer (default adam)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-4 for adam/adamw, 1e-2 for sgd)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (coupled for sgd/adam, decoupled "
                   "for adamw; default 0)")
    p.add_argument("--verbose", action="store_true", help="show the traceback of an internal error")
    p.set_defaults(func=_run)
