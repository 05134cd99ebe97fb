"""`python -m convert verify-pair TORCH_SPEC PADDLE_SPEC --input-shape 1,3,224,224 ...`: compare any torch module
with its Paddle port (`portcheck.compare`), print the verdict and the time the comparison took, and write the
report folder and a JUnit file when asked. Exit 0 pass, 1 fail (the first differing layer named in one line),
2 bad input (`PortInputError`, one line; the host command line prints it).

Weights: the torch model is built with `torch.manual_seed(--seed)`; `--torch-weights FILE` (torch.load with
weights_only=True, or .safetensors) replaces its weights, strictly; without it `portcheck.exercise.exercise_norms`
draws BatchNorm statistics so eval-mode BatchNorm is not the identity. Then `portcheck.transfer.transfer_weights`
moves every tensor to the Paddle side. A pair whose weights cannot be moved (not the same network) is still
compared, each side with its own weights, and fails naming its first differing layer.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from portcheck.declared import check_unpaired_ok
from portcheck.errors import ForwardError, PortInputError
from portcheck.pairing import PAIRINGS, check_rename

__all__ = ["add_verify_pair_parser", "run_verify_pair", "parse_shapes", "read_rename", "load_torch_weights"]

TRUTH_CHOICES = ("fp64", "none")


def parse_shapes(texts: list[str]) -> list[tuple[int, ...]]:
    """"1,3,224,224" (one per input) -> shapes; PortInputError naming --input-shape otherwise."""
    shapes = []
    for text in texts:
        try:
            shape = tuple(int(x) for x in text.split(","))
        except ValueError:
            raise PortInputError(f"--input-shape {text!r}: expected comma-separated integers, e.g. 1,3,224,224") from None
        if not shape or any(d <= 0 for d in shape):
            raise PortInputError(f"--input-shape {text!r}: every dimension must be a positive integer")
        shapes.append(shape)
    return shapes


def read_rename(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        table = json.loads(Path(path).read_text())
    except OSError as exc:
        raise PortInputError(f"--rename {path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PortInputError(f"--rename {path}: not JSON ({exc})") from None
    return check_rename(table, f"--rename {path}")


def load_torch_weights(module, path: str) -> None:
    """Load FILE into the torch module, strictly (every key, every shape)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise PortInputError(f"--torch-weights {path}: file not found")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure is the file's fault here
        raise PortInputError(f"--torch-weights {path}: cannot read ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise PortInputError(f"--torch-weights {path}: expected a state dict, got {type(state).__name__}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PortInputError(f"--torch-weights {path}: does not fit the model ({str(exc).splitlines()[0]})") from None


def _models(args: argparse.Namespace, say):
    """Both models built, weights in place; returns (torch module, Paddle layer, weights note)."""
    import paddle
    import torch

    from portcheck.spec import build, parse_spec

    tspec, pspec = parse_spec(args.torch_spec, "TORCH_SPEC"), parse_spec(args.paddle_spec, "PADDLE_SPEC")
    torch.manual_seed(args.seed)
    paddle.seed(args.seed)
    tm, pm = build(tspec, "TORCH_SPEC"), build(pspec, "PADDLE_SPEC")
    if not isinstance(tm, torch.nn.Module):
        raise PortInputError(f"TORCH_SPEC {tspec}: returned {type(tm).__name__}, not a torch.nn.Module")
    if not isinstance(pm, paddle.nn.Layer):
        raise PortInputError(f"PADDLE_SPEC {pspec}: returned {type(pm).__name__}, not a paddle.nn.Layer")
    if args.torch_weights:
        load_torch_weights(tm, args.torch_weights)
        note = f"torch weights from {args.torch_weights}"
    else:
        from portcheck.exercise import exercise_norms

        exercise_norms(tm, args.seed)
        note = (f"no --torch-weights: the torch model's own seeded initialisation (seed {args.seed}) with BatchNorm "
                "statistics drawn by portcheck.exercise.exercise_norms")
        say(note)
    return tm, pm, note + "; " + _move(tm, pm, read_rename(args.rename), say)


def _move(tm, pm, rename: dict, say) -> str:
    from portcheck.transfer import TransferError, transfer_weights

    try:
        report = transfer_weights(tm, pm, rename=rename or None)
    except TransferError as exc:
        note = (f"weights NOT moved ({str(exc).splitlines()[0]}): each side keeps its own, so the comparison shows "
                "where the networks differ")
        say(note)
        return note
    return f"weights moved torch -> Paddle by portcheck.transfer ({len(getattr(report, 'moves', []) or [])} tensors)"


def _inputs(shapes: list[tuple[int, ...]], seed: int):
    """Standard normal inputs (float64, each pass casts them), one per --input-shape, from --seed."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in shapes]
    return arrays[0] if len(arrays) == 1 else tuple(arrays)


def _check_outputs(args: argparse.Namespace) -> None:
    if args.report is not None and Path(args.report).exists() and not Path(args.report).is_dir():
        raise PortInputError(f"{args.report}: --report must be a folder (it exists and is a file)")
    if args.junit is not None:
        junit = Path(args.junit)
        if junit.is_dir() or not junit.parent.is_dir():
            raise PortInputError(f"--junit {args.junit}: must be a file in an existing folder")


def _forward_failed(exc: ForwardError, args: argparse.Namespace) -> int:
    """A model's forward raised. The torch model's float32 pass rejecting the input means the input is wrong for the
    network being ported: a bad --input-shape (exit 2). Anything else is the pair's own failure on a valid input
    (exit 1): one line, no traceback (--verbose shows it)."""
    if getattr(args, "verbose", False):
        raise exc
    shapes = " ".join(args.input_shape)
    if exc.side == "torch" and exc.dtype == "float32":
        raise PortInputError(f"--input-shape {shapes}: {exc}; the torch model does not accept this input") from None
    if exc.side == "torch":
        hint = "its float64 truth cannot run: retry with --truth none"
    else:
        hint = "torch ran on this input, so the pair is not the same network on it"
    print(f"error: --input-shape {shapes}: {exc}; {hint}", file=sys.stderr)
    return 1


def run_verify_pair(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """The subcommand: 0 pass, 1 fail; bad input raises PortInputError (the host prints one line, exit 2)."""
    from portcheck.engine import compare
    from portcheck.report import report_document, write_junit, write_report

    out = stdout or sys.stdout

    def say(msg: str) -> None:
        print(f"verify-pair: {msg}", file=out, flush=True)

    shapes = parse_shapes(args.input_shape)
    rename = read_rename(args.rename)
    _check_outputs(args)
    tm, pm, weights = _models(args, say)
    unpaired_ok = check_unpaired_ok(args.allow_unpaired, tm, pm, "--allow-unpaired")
    t0 = time.perf_counter()
    try:
        result = compare(tm, pm, _inputs(shapes, args.seed), rename=rename, pairing=args.pairing, truth=args.truth,
                         train=args.train, backward=args.backward, unpaired_ok=unpaired_ok,
                         precision="informative" if args.precision_informative else "gate")
    except ForwardError as exc:
        return _forward_failed(exc, args)
    seconds = time.perf_counter() - t0
    context = {"torch": args.torch_spec, "paddle": args.paddle_spec, "input_shapes": [list(s) for s in shapes],
               "seed": args.seed, "weights": weights}
    doc = report_document(result, context)
    if args.report:
        write_report(args.report, doc)
    if args.junit:
        write_junit(args.junit, doc)
    s = result.summary()
    print(f"{'PASS' if result.passed else 'FAIL'}: {s['layer_outputs']} layer outputs paired, unpaired calls "
          f"torch {s['unpaired_torch']} / Paddle {s['unpaired_paddle']} ({s['unpaired_declared']} declared); "
          f"structure failing {s['structure_failing']}, "
          f"precision failing {s['precision_failing']}; parameters differing {s['parameters_differing']}/"
          f"{s['parameters']}", file=out)
    g = s["gradients"]
    if g:
        print(f"backward: {g['layer_gradients']} layer-output, {g['parameter_gradients']} parameter, "
              f"{g['input_gradients']} input gradients; structure failing {g['structure_failing']}, kinks "
              f"{len(g['kinks'])}; median parameter-gradient ratio "
              f"{g['median_parameter_ratio'] if g['median_parameter_ratio'] is None else round(g['median_parameter_ratio'], 3)}"
              f" (limit {g['median_ratio_limit']}); rows above the per-row ratio limit (information) "
              f"{len(g['rows_above_ratio_limit'])}", file=out)
    if result.failure_line():  # with --precision-informative a less precise layer is printed, as a finding
        print(("" if not result.passed else "finding (precision informative): ") + result.failure_line(), file=out)
    print(f"comparison time: {seconds:.1f} s ({'4 passes: float32 and float64' if args.truth == 'fp64' else '2 float32 passes, no float64 truth'})"
          + (f"; report: {Path(args.report) / 'report.md'}" if args.report else ""), file=out)
    return 0 if result.passed else 1


def add_verify_pair_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "verify-pair",
        help="compare any torch module with its Paddle port, layer by layer, against a float64 truth",
        description="Build TORCH_SPEC and PADDLE_SPEC (package.module:callable, optionally called with literal "
        "arguments, e.g. 'paddle.vision.models:vgg11(batch_norm=True)'), move the torch weights to Paddle, run both "
        "in float32 and float64 on the same random input, pair every layer call and judge each twice: structure "
        "(the float64 runs agree) and precision (Paddle's float32 distance to the truth against torch's). Exit "
        "status: 0 pass, 1 fail, 2 bad input.")
    p.add_argument("torch_spec", metavar="TORCH_SPEC", help="package.module:callable building the torch module")
    p.add_argument("paddle_spec", metavar="PADDLE_SPEC", help="package.module:callable building the Paddle layer")
    p.add_argument("--input-shape", action="append", required=True, metavar="N,C,H,W",
                   help="shape of a standard-normal input (repeat for several inputs)")
    p.add_argument("--torch-weights", metavar="FILE", help="torch state dict (.pt/.pth, read with weights_only=True, "
                   "or .safetensors); default: the seeded initialisation with drawn BatchNorm statistics")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and of the input (default 0)")
    p.add_argument("--truth", choices=TRUTH_CHOICES, default="fp64",
                   help="fp64: run both sides in float64 too (the two verdicts); none: float32 only, fixed tolerance")
    p.add_argument("--pairing", choices=PAIRINGS, default="name",
                   help="name: by qualified name after --rename, execution order where names differ; order: by "
                        "execution order inside each paired parent only")
    p.add_argument("--rename", metavar="FILE.json", help="JSON object mapping torch name prefixes to Paddle ones")
    p.add_argument("--allow-unpaired", action="append", default=[], metavar="NAME",
                   help="a parameter-free layer (qualified name, either side) whose calls are expected to have no "
                        "counterpart, e.g. a pooling layer where the other side calls a function (repeatable); "
                        "listed as declared; a layer holding parameters is refused")
    p.add_argument("--precision-informative", action="store_true",
                   help="report a structurally exact but less precise layer as a finding about the pair without "
                        "failing it (default: it fails, exit 1)")
    p.add_argument("--train", action="store_true",
                   help="BatchNorm in train mode (batch statistics); compares the running statistics after the pass")
    p.add_argument("--backward", action="store_true",
                   help="also compare gradients: a fixed random projection of the outputs as the loss, backward on "
                        "all four passes; every layer output's, parameter's and input's gradient judged twice")
    p.add_argument("--report", metavar="DIR", help="write DIR/report.{json,md,png}")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML file, one test case per layer output")
    p.add_argument("--verbose", action="store_true", help="show the traceback of an internal error")
    p.set_defaults(func=run_verify_pair)
