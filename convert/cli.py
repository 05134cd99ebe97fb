"""Command line of the checkpoint converter: `python -m convert torch2paddle|paddle2torch|inspect ...`
(and `verify`, `verify-pair`, `train-parity`, `export-onnx`).

Every input problem is reported as one line `error: <message>` on stderr with exit status 2, and no output file
is left behind. Subcommands are added by `add_*_parser(subparsers)` functions; a `verify` subcommand plugs in
through the hook in `build_parser` (module `convert.verify`, function `add_verify_parser`).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from conr_common.cli.args import OneLineParser, one_line, one_line_warnings
from conr_common.platform.cpu import prepare_math_libraries
from conr_common.platform.errors import ConrInputError, internal_error_line
from portcheck.errors import PortInputError

__all__ = ["main", "build_parser", "add_torch2paddle_parser", "add_paddle2torch_parser", "add_inspect_parser"]



def _run_torch2paddle(args: argparse.Namespace) -> int:
    from convert.run import convert_and_print

    convert_and_print("torch2paddle", args.src, args.out, fmt=args.format, force=args.force, verbose=args.verbose,
                      allow_nonfinite=args.allow_nonfinite)
    return 0


def _run_paddle2torch(args: argparse.Namespace) -> int:
    from convert.run import convert_and_print

    convert_and_print("paddle2torch", args.src, args.out, force=args.force, verbose=args.verbose,
                      allow_nonfinite=args.allow_nonfinite)
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    from convert.run import inspect_paths

    return inspect_paths(args.path)


def add_torch2paddle_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "torch2paddle",
        help="official PyTorch checkpoints -> Paddle .pdparams (or .safetensors with Paddle names)",
        description="Convert a folder of official CoNR checkpoints (udpparsernet.pth, target_pose_encoder.pth, "
        "shader.pth, rgbadecodernet.pth; some may be absent) or one .pth/.pt/.safetensors file, whose network is "
        "found from its tensor names. Writes <network>.pdparams and conversion_report.json.",
    )
    p.add_argument("src", help="folder of official files, or one checkpoint file")
    p.add_argument("-o", "--out", help="output folder (default: <folder of SRC>/paddle)")
    p.add_argument("--format", choices=("pdparams", "safetensors"), default="pdparams", help="output format")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.add_argument("--verbose", action="store_true", help="print 'src -> dst [shape] dtype' for every tensor")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="convert tensors holding NaN/Inf instead of refusing them (debugging a damaged checkpoint; "
                        "the renderer still refuses such weights)")
    p.set_defaults(func=_run_torch2paddle)


def add_paddle2torch_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "paddle2torch",
        help="Paddle .pdparams/.safetensors -> official PyTorch .pth files",
        description="Convert a folder of <network>.pdparams (or .safetensors with Paddle names) or one such file "
        "back to the official PyTorch files, loadable by strict load_state_dict.",
    )
    p.add_argument("src", help="folder of <network>.pdparams files, or one file")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.add_argument("--verbose", action="store_true", help="print 'src -> dst [shape] dtype' for every tensor")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="convert tensors holding NaN/Inf instead of refusing them (debugging a damaged checkpoint; "
                        "the renderer still refuses such weights)")
    p.set_defaults(func=_run_paddle2torch)


def add_inspect_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="table of the checkpoints in a file or folder and their differences from the official manifest",
        description="Exit status: 0 if every file matches the manifest, 1 if one differs, 2 on unreadable input.",
    )
    p.add_argument("path", help="checkpoint file or folder")
    p.set_defaults(func=_run_inspect)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m convert",
        description="Convert CoNR checkpoints between the official PyTorch files and PaddlePaddle, strictly.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_torch2paddle_parser(subparsers)
    add_paddle2torch_parser(subparsers)
    add_inspect_parser(subparsers)
    # ---- HOOK: optional subcommands living in their own modules, imported only when present. ----
    # `verify`: convert/verify.py defines `add_verify_parser(subparsers)`, which adds its parser and sets
    # `func=<callable(args) -> int>` with `set_defaults`. Errors inside it surface (no ImportError swallowing).
    if importlib.util.find_spec(f"{__package__}.verify") is not None:
        importlib.import_module(f"{__package__}.verify").add_verify_parser(subparsers)
    # `export-onnx`: convert/onnx_export.py (its dependencies, the [onnx] extra, are imported only when it runs)
    if importlib.util.find_spec(f"{__package__}.onnx_export") is not None:
        importlib.import_module(f"{__package__}.onnx_export").add_export_onnx_parser(subparsers)
    # `train-parity`: N training steps of CoNR in both frameworks against float64 runs (convert/train_parity.py)
    from convert.train_parity import add_train_parity_parser

    add_train_parity_parser(subparsers)
    # `verify-pair`: any torch module against its Paddle port (portcheck, the framework-neutral engine)
    from portcheck.cli import add_verify_pair_parser

    add_verify_pair_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    one_line_warnings()
    prepare_math_libraries()  # threads and MKL's code path for eager Paddle, before paddle is imported
    try:
        return int(args.func(args))
    except (ConrInputError, PortInputError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied, ...: not the input's fault, still one line
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the conversion stages every output and removes it on any interruption
        print("interrupted: nothing was written (outputs are renamed into place only when every network is done)",
              file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or a library failure: one line and exit 1, the traceback with --verbose
        if getattr(args, "verbose", False):
            raise
        print(internal_error_line(exc, args.command), file=sys.stderr)
        return 1
