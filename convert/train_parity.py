"""`python -m convert train-parity`: N optimizer steps of CoNR in torch and in the Paddle port from the same weights,
each also in float64, and whether Paddle's float32 loss curve stays as close to its float64 run as torch's does.

The legs (`convert.train_legs`: what trains, the loss, the target) run one after another. Verdicts, on the loss
before each step k (issue 22: "the loss curves of both frameworks stay within the float32 drift that torch shows
against its own float64 run"):
- precision: max_k |L_paddle32 - L_torch32| at most max_k |L_torch32 - L_torch64| + CURVE_FLOOR_SCALED x
  max_k |L_torch64| (both start from the same weights; the floor covers step 0's one float32 forward pass);
- structure: the float64 curves agree to STEP_STRUCTURE_FP64 x max loss at every step, or, from the first step
  where they part, within the run's own sensitivity: a fifth leg (only run when they part) trains torch in
  float64 from the weights times (1 +- PERTURB_REL), a few float64 ulps; Paddle's curve must part no earlier than
  one step before it and stay within SENSITIVITY_LIMIT x the run's own chaotic amplitude (`_fp64_verdict`). A
  Paddle curve that parts where torch's own perturbed run does not is a port difference.
Paddle's own float32 drift against its float64 run and its ratio to torch's are reported as information: in a
chaotic run (Adam, README "Optimizer and training run") both drifts are the saturated chaotic amplitude.
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

from conr_common.platform.errors import ConrInputError
from portcheck.errors import PortInputError
from portcheck.metrics import scaled_error
from portcheck.optim import KINDS, OptimizerSpec, mapping_rows
from portcheck.steps import STEP_STRUCTURE_FP64
from portcheck.verdicts import TRUTH_FLOOR_SCALED

from convert.train_legs import PERTURB_REL, TRAIN_CHOICES

__all__ = ["add_train_parity_parser", "train_parity", "plan_train", "judge_curves", "LEGS"]

LEGS = ("torch32", "torch64", "paddle32", "paddle64")
DEFAULT_LR = {"adam": 1e-4, "adamw": 1e-4, "sgd": 1e-2}
# Both curves start from the same weights, so at step 0 they differ by one float32 forward pass: the forward
# referee's floor (1e-6 of the output scale; measured at step 0: 1.5e-7 / 0.26 = 5.7e-7).
CURVE_FLOOR_SCALED = TRUTH_FLOOR_SCALED
# Where the float64 curves part, the perturbed torch run and torch's float32 run measure how far rounding-level
# differences carry in this run; another draw of a chaotic run lands at another distance of the same order (Adam,
# measured: 4.4e-4 from weights x (1 +- 1e-15), 9.4e-4 from 1e-12, 9.1e-4 float32), hence a factor, 2 like the
# forward referee's ratio.
SENSITIVITY_LIMIT = 2.0


@dataclass(frozen=True)
class TrainPlan:
    torch_dir: Path | None
    out: Path
    size: int
    views: int
    steps: int
    seed: int
    optimizer: OptimizerSpec
    trained: tuple[str, ...]


def plan_train(torch_dir, out, *, size: int, views: int, steps: int, seed: int, optimizer: str,
               lr: float | None, momentum: float, weight_decay: float, train: str = "all") -> TrainPlan:
    """Every argument checked before a model is built (ConrInputError, one line)."""
    from conr_common.data.checks import check_positive_int
    from conr_common.data.pipeline import check_size

    check_size(size)
    check_positive_int("--views", views)
    check_positive_int("--steps", steps)
    if train not in TRAIN_CHOICES:
        raise ConrInputError(f"--train must be one of {', '.join(TRAIN_CHOICES)}, got {train!r}")
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
    return TrainPlan(torch_dir, out, size, views, steps, seed, spec, TRAIN_CHOICES[train])


def load_data(size: int, views: int, seed: int, work: Path) -> tuple[dict, dict]:
    """Sheet, pose (xyz, alpha) and the target RGBA of the procedural sample, float64, and where they came from."""
    from conr_common.data.pipeline import crop_and_resize, load_udp_pose, read_rgba
    from conr_common.data.samples import ensure_samples

    from convert.verify import load_inputs

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
    from conr_common.weights.checkpoints import load_folder
    from conr_common.contract.manifest import torch_to_paddle

    if torch_dir is not None:
        states, what = load_folder(torch_dir, "torch"), str(torch_dir)
    else:
        from conr_torch_ref.seeded import seeded_state_dicts

        states = {n: {k: v.numpy() for k, v in s.items()} for n, s in seeded_state_dicts().items()}
        what = "seeded official-format weights (conr_torch_ref.seeded, draw 'seeded')"
    return states, {n: torch_to_paddle(n, s) for n, s in states.items()}, what


def _max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def first_parting(a, b, tol: float) -> int | None:
    """The first step where two loss curves differ by more than `tol`, None when they never do."""
    over = np.flatnonzero(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) > tol)
    return int(over[0]) if over.size else None


def _fp64_verdict(losses: dict, tol: float) -> dict:
    """Structure: the float64 curves agree to `tol` at every step, or, where they part, the parting is the run's
    own sensitivity, measured by torch's float64 run from weights x (1 +- PERTURB_REL) (losses["torch64_perturbed"]):
    - when: Paddle's float64 curve parts no earlier than one step before the perturbed one does (one step of lead:
      the two seeds differ in size, and a chaotic difference grows 30-1000x a step);
    - how far: max_k |L_paddle64 - L_torch64| within SENSITIVITY_LIMIT x the chaotic amplitude the run shows by
      itself, the larger of max_k |L_perturbed - L_torch64| and torch's float32 drift max_k |L_torch32 - L_torch64|
      (two draws of where a rounding-level difference carries the same trajectory)."""
    t64 = losses["torch64"]
    part = first_parting(losses["paddle64"], t64, tol)
    out = {"fp64_first_parting": part, "self_first_parting": None, "sensitivity_max_abs": None,
           "parting_within_sensitivity": None}
    if part is None:
        return {**out, "structure": True}
    if "torch64_perturbed" not in losses:
        return {**out, "structure": False}
    self_part = first_parting(losses["torch64_perturbed"], t64, tol)
    amplitude = max(_max_abs(losses["torch64_perturbed"], t64), _max_abs(losses["torch32"], t64))
    within = (self_part is not None and part >= self_part - 1
              and _max_abs(losses["paddle64"], t64) <= SENSITIVITY_LIMIT * amplitude)
    out.update(self_first_parting=self_part, sensitivity_max_abs=amplitude, parting_within_sensitivity=bool(within))
    return {**out, "structure": bool(within)}


def judge_curves(losses: dict[str, list[float]]) -> dict:
    """Both verdicts on the loss curves (module docstring), with every figure."""
    scale = float(np.max(np.abs(losses["torch64"])))
    drift_t, drift_p = _max_abs(losses["torch32"], losses["torch64"]), _max_abs(losses["paddle32"], losses["paddle64"])
    cross = _max_abs(losses["paddle32"], losses["torch32"])
    fp64 = _max_abs(losses["paddle64"], losses["torch64"])
    floor = CURVE_FLOOR_SCALED * scale
    out = {
        "loss_scale": scale, "fp64_max_abs": fp64, "fp64_scaled": fp64 / scale if scale else fp64,
        "torch32_vs_torch64": drift_t, "paddle32_vs_paddle64": drift_p, "torch32_vs_paddle32": cross,
        "paddle32_vs_torch64": _max_abs(losses["paddle32"], losses["torch64"]),
        "torch32_vs_paddle64": _max_abs(losses["torch32"], losses["paddle64"]),
        "drift_ratio": drift_p / drift_t if drift_t else (0.0 if drift_p == 0 else float("inf")),
        "precision_bound": drift_t + floor, "structure_bound": STEP_STRUCTURE_FP64,
        "rule": (f"max over steps |Paddle fp32 - torch fp32| <= max over steps |torch fp32 - torch fp64| + "
                 f"{CURVE_FLOOR_SCALED:g} x max loss; fp64 curves within {STEP_STRUCTURE_FP64:g} x max loss, or, "
                 f"where they part, no earlier than 1 step before torch's fp64 run from weights x (1 +- "
                 f"{PERTURB_REL:g}) parts from it and within {SENSITIVITY_LIMIT:g} x the larger of that run's "
                 f"distance and torch's fp32 drift"),
        **_fp64_verdict(losses, STEP_STRUCTURE_FP64 * scale),
    }
    out["precision"] = bool(cross <= out["precision_bound"])
    out["passed"] = out["structure"] and out["precision"]
    return out


def judge_updates(legs: dict, trained: tuple[str, ...]) -> list[dict]:
    """Per trained network: the sampled parameter updates of each leg against the float64 ones (scaled)."""
    rows = []
    for net in trained:
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


def _leg(plan: TrainPlan, key: str, states: dict, paddle_states: dict, data: dict, idx: dict):
    from convert.train_legs import paddle_leg, torch_leg

    dtype = "float32" if key.endswith("32") else "float64"
    if key.startswith("torch"):
        return torch_leg(states, data, plan.optimizer, plan.steps, dtype, idx, plan.trained,
                         perturb=PERTURB_REL if key == "torch64_perturbed" else 0.0)
    return paddle_leg(states, paddle_states, data, plan.optimizer, plan.steps, dtype, idx, plan.trained)


def _run_legs(plan: TrainPlan, states: dict, paddle_states: dict, data: dict, say) -> dict:
    """The four legs; then, only when the float64 curves part, torch's float64 run from perturbed weights (the
    run's own sensitivity, `_fp64_verdict`)."""
    from convert.train_legs import sample_indices

    idx = sample_indices(states, plan.seed, plan.trained)
    legs, rss = {}, {}
    for key in LEGS + ("torch64_perturbed",):
        if key == "torch64_perturbed":
            scale = float(np.max(np.abs(legs["torch64"].losses)))
            if first_parting(legs["paddle64"].losses, legs["torch64"].losses, STEP_STRUCTURE_FP64 * scale) is None:
                break
            say(f"the float64 curves part: torch64 again from weights x (1 +- {PERTURB_REL:g}) to measure the "
                "run's own sensitivity")
        say(f"{key}: {plan.steps} {plan.optimizer.kind} steps")
        legs[key] = _leg(plan, key, states, paddle_states, data, idx)
        rss[key] = peak_rss_gb()
        say(f"{key}: {legs[key].seconds:.1f} s, final loss {legs[key].losses[-1]:.6f}, peak RSS {rss[key]:.2f} GB")
    return {"legs": legs, "peak_rss_gb": rss}


def train_parity(torch_dir=None, out="train-parity-report", *, size: int = 128, views: int = 1, steps: int = 20,
                 seed: int = 0, optimizer: str = "sgd", lr: float | None = None, momentum: float = 0.9,
                 weight_decay: float = 0.0, train: str = "all", stdout=None) -> dict:
    """Run the four legs, judge them, write the report folder, return the report (ConrInputError on bad input)."""
    from conr_common.weights.checkpoints import import_paddle, import_torch

    from convert.environment import environment
    from convert.train_legs import frozen

    stdout = stdout or sys.stdout
    started = time.perf_counter()
    plan = plan_train(torch_dir, out, size=size, views=views, steps=steps, seed=seed, optimizer=optimizer, lr=lr,
                      momentum=momentum, weight_decay=weight_decay, train=train)
    torch, paddle = import_torch(), import_paddle()
    say = lambda msg: print(f"train-parity: {msg}", file=stdout, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="conr-train-") as work:
        data, source = load_data(plan.size, plan.views, plan.seed, Path(work))
    states, paddle_states, weights = load_weights(plan.torch_dir)
    run = _run_legs(plan, states, paddle_states, data, say)
    legs = run["legs"]
    losses = {k: leg.losses for k, leg in legs.items()}
    report = {
        "tool": "python -m convert train-parity", "format_version": 1,
        "settings": {"size": plan.size, "views": int(data["sheet"].shape[0]), "steps": plan.steps, "seed": plan.seed,
                     "optimizer": {**plan.optimizer.__dict__, "betas": list(plan.optimizer.betas)},
                     "trained": list(plan.trained), "frozen": list(frozen(plan.trained)),
                     "loss": "mean |render - target| over premultiplied RGBA (4 x S x S), before each step"},
        "optimizer_mapping": mapping_rows(plan.optimizer),
        "inputs": source, "weights": weights, "losses": losses, "curves": judge_curves(losses),
        "updates": judge_updates(legs, plan.trained), "peak_rss_gb": run["peak_rss_gb"],
        "timings": {f"{k}_s": leg.seconds for k, leg in legs.items()}, "environment": environment(torch, paddle, "cpu"),
    }
    report["passed"] = report["curves"]["passed"]
    report["timings"]["total_s"] = time.perf_counter() - started
    from convert.train_report import write_train_report

    write_train_report(plan.out, report)
    return report


def verdict_line(report: dict) -> str:
    c = report["curves"]
    part = c["fp64_first_parting"]
    fp64 = ("agree at every step" if part is None else
            f"part at step {part} ({'within' if c['parting_within_sensitivity'] else 'NOT within'} the run's own "
            f"sensitivity {_fmt(c['sensitivity_max_abs'])}, self parting at step {c['self_first_parting']})")
    return (f"{'PASS' if report['passed'] else 'FAIL'}: {report['settings']['steps']} steps; Paddle fp32 vs torch "
            f"fp32 {c['torch32_vs_paddle32']:.3e} (bound: torch's fp32 drift {c['torch32_vs_torch64']:.3e} + floor "
            f"= {c['precision_bound']:.3e}; Paddle's own drift {c['paddle32_vs_paddle64']:.3e}, ratio "
            f"{c['drift_ratio']:.2f}); fp64 curves {c['fp64_max_abs']:.2e} apart, {fp64}")


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2e}"


def _run(args: argparse.Namespace) -> int:
    report = train_parity(args.torch, args.report, size=args.size, views=args.views, steps=args.steps,
                          seed=args.seed, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay, train=args.train)
    print(verdict_line(report))
    print(f"report: {Path(args.report) / 'report.md'} ({report['timings']['total_s']:.1f} s, peak RSS "
          f"{max(report['peak_rss_gb'].values()):.2f} GB)")
    return 0 if report["passed"] else 1


def add_train_parity_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train-parity", help="N training steps of CoNR in torch and Paddle (fp32 and fp64): loss curves compared",
        description="Train CoNR's shader and RGBA decoder (parser and pose encoder frozen) for N steps on the "
        "procedural sample, with an L1 loss against the character's own render in the pose, in torch and in "
        "Paddle, each in float32 and float64, from the same weights. Exit status: 0 when Paddle's float32 curve "
        "stays within the float32 drift torch shows against its own float64 run (+ 1e-6 x the loss) and the "
        "float64 curves agree (or part no more than torch's float64 run from weights perturbed by 1e-15 does: "
        "that fifth leg runs only when they part), 1 otherwise, 2 bad input. The default optimizer is SGD with "
        "momentum: its step is linear in the gradient, so the run is well conditioned. Adam/AdamW normalise "
        "every element's step (m / sqrt(v)): at lr 1e-4 the CoNR run is chaotic (torch's float64 run from "
        "weights x (1 +- 1e-15) parts from itself at step 5 and is 4e-4 away by step 8, as Paddle's float64 run "
        "is), so their curves can only agree to that sensitivity.")
    p.add_argument("--torch", metavar="DIR", help="folder with the four official .pth files (default: seeded weights)")
    p.add_argument("--report", required=True, metavar="OUT", help="output folder for report.{json,md,png}")
    p.add_argument("--size", type=int, default=128, help="working size S, a multiple of 128 (default 128)")
    p.add_argument("--views", type=int, default=1, help="character sheet views, the first ones (default 1)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample data and the parameter sample (default 0)")
    p.add_argument("--optimizer", choices=KINDS, default="sgd", help="optimizer (default sgd, with --momentum; "
                   "adam/adamw make the run chaotic, see the description)")
    p.add_argument("--train", choices=tuple(TRAIN_CHOICES), default="all", help="what trains: all = shader and "
                   "RGBA decoder (default), decoder = the RGBA decoder only (a cheap run)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-4 for adam/adamw, 1e-2 for sgd)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (coupled for sgd/adam, decoupled "
                   "for adamw; default 0)")
    p.add_argument("--verbose", action="store_true", help="show the traceback of an internal error")
    p.set_defaults(func=_run)
