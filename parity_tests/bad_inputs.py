"""The bad-input matrix (issue #13): hostile or careless inputs to `render`, `demo` and `convert`, each with the
one line it gets. The README's table is generated from these probes and `test_bad_input_matrix.py` checks that it
matches, so it cannot drift:

    python -m parity_tests.bad_inputs --write-readme   # regenerate the README table (builds seeded weights once)

Every probe runs the CLI in-process on a scene of its own (a copy of the sample character, poses and seeded
weights under one folder) and must: exit with its status (2 for bad input), print exactly one line on stderr, no
traceback, write nothing new (only what the probe itself created) and leave every input file unchanged.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import pickle
import re
import shutil
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"
NETWORKS = ("udpparsernet", "target_pose_encoder", "shader", "rgbadecodernet")


@dataclass(frozen=True)
class Scene:
    """One probe's world: sheet, poses, Paddle weights, official weights, all under `root`."""

    root: Path
    sheet: Path
    poses: Path
    weights: Path
    official: Path

    def render(self, *extra: str, weights: Path | None = None, sheet: Path | None = None,
               poses: Path | None = None, out: Path | None = None) -> list[str]:
        return ["render", "--weights", str(weights or self.weights), "--character-sheet", str(sheet or self.sheet),
                "--poses", str(poses or self.poses), "--out", str(out or self.root / "out"), "--size", "128",
                "--engine", "eager", "--quiet", *extra]


class _RunsCode:
    """A pickle payload that would create a file if unpickled by a permissive loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _image(path: Path, rgba: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgba)
    return path


def _folder(scene: Scene, name: str) -> Path:
    folder = scene.root / name
    folder.mkdir()
    return folder


def _poses_with(scene: Scene, name: str, data: bytes | None = None, array: np.ndarray | None = None) -> Path:
    poses = _folder(scene, "bad_poses")
    shutil.copy(next(iter(sorted(scene.poses.glob("*.npz")))), poses / "0.npz")
    if array is not None:
        np.savez_compressed(poses / name, **{"x" if name.startswith("nokey") else "i": array})
    else:
        (poses / name).write_bytes(data or b"")
    return poses


def _sheet_with(scene: Scene, name: str, rgba: np.ndarray | None = None, data: bytes | None = None) -> Path:
    sheet = _folder(scene, "bad_sheet")
    shutil.copy(next(iter(sorted(scene.sheet.glob("*.png")))), sheet / "0_front.png")
    if rgba is not None:
        _image(sheet / name, rgba)
    else:
        (sheet / name).write_bytes(data or b"")
    return sheet


def _weights_with(scene: Scene, network: str, mutate: Callable[[dict], dict] | None = None,
                  data: bytes | None = None) -> Path:
    from conr_common.weights import checkpoints as cio

    weights = _folder(scene, "bad_weights")
    for name in NETWORKS:
        if name != network:
            os.symlink(scene.weights / f"{name}.pdparams", weights / f"{name}.pdparams")
    if data is not None:
        (weights / f"{network}.pdparams").write_bytes(data)
    elif mutate is not None:
        state = dict(cio.load_paddle_file(scene.weights / f"{network}.pdparams"))
        cio.save_pdparams(_half(mutate(state)), weights / f"{network}.pdparams")
    return weights


def _half(state: dict) -> dict:
    """The float32 tensors of a mutated weight file as float16: a dtype both loaders and the converter accept and
    keep (`conr_common.contract.manifest.ALLOWED_DTYPES`), and the probes check the refusal, not the numbers. A NaN
    stays a NaN, other dtypes (the int64 probe) are kept; a shader file is 190 MB instead of 385 MB."""
    def half(value):
        if getattr(value, "dtype", None) is not None and str(value.dtype) in ("float32", "torch.float32"):
            return value.half() if hasattr(value, "half") else np.asarray(value, np.float16)
        return value

    return {k: half(v) for k, v in state.items()}


def _weights_not_regular(scene: Scene, network: str, plant: Callable[[Path], None], naming: str = "paddle") -> Path:
    """A weights folder (Paddle or official naming) whose `network` file is what `plant(path)` makes of it (a
    FIFO, a link to a device), the other networks linked."""
    source, pattern = (scene.weights, "*.pdparams") if naming == "paddle" else (scene.official, "*.pth")
    weights = _folder(scene, f"odd_{naming}")
    for f in source.glob(pattern):
        if f.stem != network:
            os.symlink(f.resolve(), weights / f.name)
    plant(weights / f"{network}{pattern[1:]}")
    return weights


def _rendered_before(scene: Scene, size: int = 128, weights: Path | None = None) -> Path:
    """An output folder holding the record of an earlier render of the scene (conr_app.rendering.resume) at `size`, with
    the weights of `weights` (default: the scene's)."""
    from conr_common.weights import checkpoints as cio
    from conr_common.data.pipeline import load_character_sheet
    from conr_app.rendering.resume import RenderIdentity, begin_record, sheet_sha256

    out = _folder(scene, "out")
    files = cio.check_weights_dir(weights) if weights is not None else cio.check_weights_dir(scene.weights)
    identity = RenderIdentity(size=size, engine="eager", precision="fp32", pose_images=False, views=4,
                              sheet_sha256=sheet_sha256(load_character_sheet(scene.sheet, size)),
                              weights_sha256=cio.weights_hash(files))
    begin_record(out, identity, resume=False)
    return out


def _official_with(scene: Scene, network: str, mutate: Callable[[dict], dict]) -> Path:
    """The scene's official folder with `network`.pth rewritten by `mutate` (the other files linked)."""
    import torch

    official = _folder(scene, "bad_official")
    for f in scene.official.glob("*.pth"):
        if f.stem != network:
            os.symlink(f, official / f.name)
    state = torch.load(scene.official / f"{network}.pth", map_location="cpu", weights_only=True)
    torch.save(_half(mutate(state)), official / f"{network}.pth")
    return official


def _set(state: dict, key: str, value) -> dict:
    state[key] = value
    return state


def _nan_in(key: str) -> Callable[[dict], dict]:
    """A mutation putting one NaN into the first element of tensor `key` (a copy: the loaded state is not shared)."""
    def mutate(state: dict) -> dict:
        state[key] = state[key].clone() if hasattr(state[key], "clone") else np.array(state[key])
        state[key].reshape(-1)[0] = float("nan")
        return state

    return mutate


# The probes' damaged weight files are the smallest that show each refusal (they check the refusal, not the
# network): rgbadecodernet (0.3 MB) where the file is refused before anything is written, udpparsernet for the
# converter's NaN check, which runs while converting, network by network in NETWORK_NAMES order, so the first
# network fails before any other is converted (the converter's clean-up after a later network's NaN is
# test_weight_values' test_converter_refuses_nan_weights_naming_file_and_tensor).
SMALL_NETWORK, SMALL_TENSOR = "rgbadecodernet", "conv_rgba.0.weight"
FIRST_NETWORK, FIRST_TENSOR = "udpparsernet", "backbone.0.weight"


def _opaque() -> np.ndarray:
    image = np.full((64, 64, 4), 200, np.uint8)
    image[:, :, 3] = 255
    image[:1, :1, 3] = 0  # one transparent pixel: still 95% or more opaque
    return image


def _huge_npz() -> np.ndarray:
    return np.zeros((1, 100000, 4), np.float32)


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed RGBA PNG of a few dozen bytes (signature, IHDR with its CRC, a tiny IDAT, IEND) whose header
    claims width x height: decoding it would take width * height * 4 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _faint() -> np.ndarray:
    image = np.full((64, 64, 4), 200, np.uint8)
    image[:, :, 3] = 1 + np.add.outer(np.arange(64), np.arange(64)) % 3  # alpha 1 to 3 everywhere
    return image


def _tiny() -> np.ndarray:
    image = np.zeros((2, 2, 4), np.uint8)
    image[0, 0] = 255  # one opaque pixel
    return image


def _udp_with(channel: int, value: float) -> np.ndarray:
    label = np.zeros((32, 32, 4), np.float32)
    label[8:24, 8:24] = 0.5
    label[10, 10, channel] = value
    return label


@dataclass(frozen=True)
class Probe:
    """One bad input: `args(scene)` builds the command line (its first word picks the CLI: convert or render/
    demo); `expect` must appear in the printed line."""

    what: str
    args: Callable[[Scene], list[str]]
    expect: str
    status: int = 2


def _beyond_usable_cores() -> str:
    """One more process than the cores this process may use (what `render --workers` is bounded by)."""
    from conr_common.platform.cpu import usable_cores

    return str(usable_cores() + 1)


PROBES: list[Probe] = [
    # ---- the character sheet
    Probe("sheet folder missing", lambda s: s.render(sheet=s.root / "nope"), "not found"),
    Probe("sheet folder empty", lambda s: s.render(sheet=_folder(s, "empty")), "no"),
    Probe("sheet view 95% or more opaque", lambda s: s.render(sheet=_sheet_with(s, "1.png", _opaque())), "opaque"),
    Probe("sheet view truncated", lambda s: s.render(sheet=_sheet_with(s, "1.png", data=(
        s.sheet / "0_front.png").read_bytes()[:200])), "1.png"),
    Probe("sheet view not an image", lambda s: s.render(sheet=_sheet_with(s, "1.png", data=b"hello")), "1.png"),
    Probe("sheet view grayscale", lambda s: s.render(sheet=_sheet_with(s, "1.png", np.zeros((64, 64), np.uint8))),
          "grayscale"),
    Probe("sheet view 16-bit", lambda s: s.render(sheet=_sheet_with(s, "1.png", np.zeros((64, 64, 4), np.uint16))),
          "8-bit"),
    Probe("sheet view 10 x 20000 pixels", lambda s: s.render(sheet=_sheet_with(s, "1.png", np.zeros(
        (10, 20000, 4), np.uint8))), "largest side"),
    # inputs group (issue 23): sizes from headers, faint and tiny views
    Probe("sheet view whose PNG header claims 60000 x 60000", lambda s: s.render(sheet=_sheet_with(
        s, "1.png", data=png_claiming(60000, 60000))), "largest side"),
    Probe("sheet view that is a PPM named .png", lambda s: s.render(sheet=_sheet_with(
        s, "1.png", data=b"P6\n60000 60000\n255\n" + bytes(64))), "not a PNG, JPEG"),
    Probe("sheet view with alpha 1 to 3 everywhere", lambda s: s.render(sheet=_sheet_with(s, "1.png", _faint())),
          "alpha channel is nearly empty"),
    Probe("sheet view 2 x 2 pixels", lambda s: s.render(sheet=_sheet_with(s, "1.png", _tiny())), "at least 16"),
    # ---- the poses
    Probe("pose folder missing", lambda s: s.render(poses=s.root / "nope"), "not found"),
    Probe("pose folder empty", lambda s: s.render(poses=_folder(s, "empty")), "no"),
    Probe("UDP .npz without key i", lambda s: s.render(poses=_poses_with(s, "nokey.npz", array=np.zeros(
        (8, 8, 4), np.float32))), "no array 'i'"),
    Probe("UDP frame with 3 channels", lambda s: s.render(poses=_poses_with(s, "1.npz", array=np.zeros(
        (8, 8, 3), np.float32))), "4"),
    Probe("UDP .npz truncated", lambda s: s.render(poses=_poses_with(s, "1.npz", b"PK\x03\x04 truncated")),
          "1.npz"),
    Probe("UDP .npz holding a pickled object", lambda s: s.render(poses=_poses_with(s, "1.npz", array=np.array(
        [{"a": 1}], dtype=object))), "1.npz"),
    Probe("UDP frame 1 x 100000", lambda s: s.render(poses=_poses_with(s, "1.npz", array=_huge_npz())),
          "largest side"),
    # inputs group (issue 23): UDP ranges, sizes from headers
    Probe("UDP xyz of 100", lambda s: s.render(poses=_poses_with(s, "1.npz", array=_udp_with(0, 100.0))),
          "UDP xyz values range from 0 to 100"),
    Probe("UDP xyz of 3e38", lambda s: s.render(poses=_poses_with(s, "1.npz", array=_udp_with(2, 3e38))),
          "outside [0, 1]"),
    Probe("UDP visibility negative", lambda s: s.render(poses=_poses_with(s, "1.npz", array=_udp_with(3, -1.0))),
          "UDP visibility values range from -1"),
    Probe("UDP .png whose header claims 13400 x 13400", lambda s: s.render(poses=_poses_with(
        s, "1.png", png_claiming(13400, 13400))), "largest side"),
    # ---- the weights
    Probe("weights folder missing", lambda s: s.render(weights=s.root / "nope"), "not found"),
    Probe("weights folder missing a network", lambda s: s.render(weights=_weights_with(s, "shader")), "missing"),
    Probe("weights folder holding the official .pth", lambda s: s.render(weights=s.official), "torch2paddle"),
    Probe("weights file that is a code-carrying pickle", lambda s: s.render(weights=_weights_with(
        s, "rgbadecodernet", data=pickle.dumps({"w": _RunsCode(s.root / "pwned")}, protocol=4))), "refused"),
    Probe("weights with a NaN", lambda s: s.render(weights=_weights_with(s, SMALL_NETWORK, _nan_in(SMALL_TENSOR))),
          "NaN"),
    Probe("weights with an int64 tensor", lambda s: s.render(weights=_weights_with(
        s, "rgbadecodernet", lambda st: _set(st, "conv_rgba.0.bias", np.zeros(4, np.int64)))), "floating"),
    # resume group (issue 23, findings 15 and 16): a weights name that is not a regular file is never "missing"
    Probe("weights file that is a FIFO", lambda s: s.render(weights=_weights_not_regular(s, "shader", os.mkfifo)),
          "not a regular file (a FIFO)"),
    Probe("weights file linked to /dev/zero", lambda s: s.render(weights=_weights_not_regular(
        s, "udpparsernet", lambda p: os.symlink("/dev/zero", p))), "not a regular file (a character device"),
    # ---- render options
    Probe("--size not a multiple of 128", lambda s: s.render("--size", "200"), "--size"),
    Probe("--size 1280000", lambda s: s.render("--size", "1280000"), "at most"),
    Probe("--batch 0", lambda s: s.render("--batch", "0"), "--batch"),
    Probe("--fps 0", lambda s: s.render("--fps", "0"), "--fps"),
    Probe("--out equal to --poses", lambda s: s.render(out=s.poses), "folder of its own"),
    Probe("--out inside --poses", lambda s: s.render(out=s.poses / "frames"), "folder of its own"),
    Probe("--out containing --poses", lambda s: s.render(out=s.root), "folder of its own"),
    Probe("--out is a file", lambda s: s.render(out=_file(s, "out.txt")), "not a folder"),
    Probe("--cache-dir is a file", lambda s: s.render("--cache-dir", str(_file(s, "cache.txt"))), "--cache-dir"),
    Probe("--video not .mp4", lambda s: s.render("--video", str(s.root / "v.avi")), ".mp4"),
    Probe("--video is a folder", lambda s: s.render("--video", str(_folder(s, "v.mp4"))), "folder"),
    Probe("--background image missing", lambda s: s.render("--video", str(s.root / "v.mp4"), "--background",
                                                          str(s.root / "nothing.png")), "nothing.png"),
    # inputs group (issue 23): --background's size from its header
    Probe("--background image whose header claims 60000 x 60000", lambda s: s.render(
        "--video", str(s.root / "v.mp4"), "--background", str(_file_bytes(s, "back.png", png_claiming(60000, 60000)))),
        "largest side"),
    Probe("--precision bf16 with --engine eager", lambda s: s.render("--precision", "bf16"), "bf16"),
    Probe("--workers 0", lambda s: s.render("--workers", "0"), "--workers"),
    # ---- guard group (issue 23): every output path through conr_common.platform.outputs.check_output
    Probe("--video equal to the --background image", lambda s: s.render(
        "--video", str(_image_file(s, "bg.mp4")), "--background", str(s.root / "bg.mp4")), "is the --background file"),
    Probe("--out frame name taken by a folder", lambda s: s.render(out=_frame_folder(s)),
          "is a folder"),
    Probe("--out with a 256-character name", lambda s: s.render(out=s.root / ("a" * 256)), "at most 255"),
    Probe("--out path over 4096 characters", lambda s: s.render(out=s.root.joinpath(*["b" * 200] * 21)),
          "longest this system opens"),
    # resume group (issue 23, finding 10): --resume refuses a folder that records a render of other settings
    Probe("--resume into a render made at another --size", lambda s: s.render(
        "--resume", out=_rendered_before(s, size=256)), "--size 256, not --size 128"),
    Probe("--resume into a render made with other weights", lambda s: s.render(
        "--resume", out=_rendered_before(s, weights=_weights_with(s, "rgbadecodernet", lambda st: _set(
            st, "conv_rgba.0.bias", np.asarray(st["conv_rgba.0.bias"]) + 1)))), "rendered with other weights"),
    # issue 23, runtime group: --workers is bounded by the cores this process may use
    Probe("--workers one more than the usable cores", lambda s: s.render("--workers", _beyond_usable_cores()),
          "more processes than"),
    # ---- demo
    Probe("demo --batch 0", lambda s: ["demo", "--out", str(s.root / "demo"), "--batch", "0"], "--batch"),
    Probe("demo --fps 0", lambda s: ["demo", "--out", str(s.root / "demo"), "--fps", "0"], "--fps"),
    Probe("demo --frames 0", lambda s: ["demo", "--out", str(s.root / "demo"), "--frames", "0"], "--frames"),
    # ---- guard group (issue 23)
    Probe("demo --out holding other files", lambda s: ["demo", "--out", str(s.root)], "did not write"),
    # ---- convert
    Probe("convert: source missing", lambda s: ["convert", "torch2paddle", str(s.root / "nope")], "nope"),
    Probe("convert: -o equal to the source", lambda s: ["convert", "torch2paddle", str(s.official), "-o",
                                                        str(s.official)], "source folder"),
    Probe("convert: -o containing the source", lambda s: ["convert", "paddle2torch", str(s.weights), "-o",
                                                          str(s.root), "--force"], "contains the source"),
    Probe("convert: NaN in a checkpoint", lambda s: ["convert", "torch2paddle", str(_official_with(
        s, FIRST_NETWORK, _nan_in(FIRST_TENSOR))), "-o", str(s.root / "conv")], "NaN"),
    Probe("convert: a tensor of the wrong shape", lambda s: ["convert", "torch2paddle", str(_official_with(
        s, SMALL_NETWORK, lambda st: _set(st, SMALL_TENSOR, st[SMALL_TENSOR][:1]))), "-o", str(s.root / "conv")],
          "shape"),
    Probe("convert: an unexpected key", lambda s: ["convert", "torch2paddle", str(_official_with(
        s, SMALL_NETWORK, lambda st: _set(st, "extra.weight", st[SMALL_TENSOR][:1]))), "-o", str(s.root / "conv")],
          "unexpected"),
    # ---- guard group (issue 23): -o, --report and --force
    Probe("convert: one network into a folder holding a whole set", lambda s: [
        "convert", "torch2paddle", str(s.official / "udpparsernet.pth"), "-o", str(s.weights), "--force"],
          "earlier weight set"),
    Probe("convert: --force onto files it did not write", lambda s: [
        "convert", "torch2paddle", str(s.official), "-o", str(_foreign_set(s)), "--force"], "did not write"),
    Probe("convert export-onnx: -o equal to the weights, --force", lambda s: [
        "convert", "export-onnx", "--paddle", str(s.weights), "-o", str(s.weights), "--force"],
          "is the --paddle folder"),
    Probe("convert export-onnx: -o containing the weights, --force", lambda s: [
        "convert", "export-onnx", "--paddle", str(s.weights), "-o", str(s.root), "--force"],
          "contains the --paddle folder"),
    Probe("convert verify: --report equal to --poses", lambda s: [
        "convert", "verify", "--torch", str(s.official), "--paddle", str(s.weights), "--poses", str(s.poses),
        "--report", str(s.poses), "--size", "128"], "is the --poses folder"),
    Probe("convert verify: --report a folder of other files", lambda s: [
        "convert", "verify", "--torch", str(s.official), "--paddle", str(s.weights), "--report", str(s.poses),
        "--size", "128"], "did not write"),
    # resume group (issue 23, findings 14 and 15)
    Probe("convert inspect: shader.pth is a FIFO", lambda s: ["convert", "inspect", str(_weights_not_regular(
        s, "shader", os.mkfifo, naming="torch"))], "shader.pth: not a regular file (a FIFO)"),
    Probe("convert torch2paddle: shader.pth is a FIFO", lambda s: ["convert", "torch2paddle", str(
        _weights_not_regular(s, "shader", os.mkfifo, naming="torch")), "-o", str(s.root / "conv")],
        "shader.pth: not a regular file (a FIFO)"),
    Probe("convert verify: --views 100 (the sample has 4)", lambda s: ["convert", "verify", "--torch", str(
        s.official), "--paddle", str(s.weights), "--report", str(s.root / "rep"), "--size", "128", "--views", "100"],
        "only 4 view(s)"),
    Probe("convert verify: --size 100", lambda s: ["convert", "verify", "--torch", str(s.official), "--paddle",
                                                   str(s.weights), "--report", str(s.root / "rep"), "--size", "100"],
          "--size"),
    # ---- issue 21 (engine): convert verify-pair, any torch module against its Paddle port
    Probe("convert verify-pair: a SPEC without ':'", lambda s: [
        "convert", "verify-pair", "torchvision.models.resnet18", "paddle.vision.models:resnet18", "--input-shape",
        "1,3,224,224", "--report", str(s.root / "pair")], "TORCH_SPEC"),
    Probe("convert verify-pair: --input-shape 1,3,x", lambda s: [
        "convert", "verify-pair", "parity_tests.portcheck_pairs:TorchNet", "parity_tests.portcheck_pairs:PaddleNet",
        "--input-shape", "1,3,x", "--report", str(s.root / "pair")], "--input-shape"),
    Probe("convert verify-pair: --rename not a JSON object", lambda s: [
        "convert", "verify-pair", "parity_tests.portcheck_pairs:TorchNet", "parity_tests.portcheck_pairs:PaddleNet",
        "--input-shape", "2,3,6,6", "--rename", str(_file(s, "rename.json")), "--report", str(s.root / "pair")],
        "--rename"),
    # ---- issue 22 (training engineer): convert train-parity
    Probe("convert train-parity: --steps 0", lambda s: [
        "convert", "train-parity", "--steps", "0", "--report", str(s.root / "train")], "--steps"),
    Probe("convert train-parity: --size 100", lambda s: [
        "convert", "train-parity", "--size", "100", "--report", str(s.root / "train")], "128"),
    Probe("convert train-parity: --optimizer sgd --momentum -1", lambda s: [
        "convert", "train-parity", "--optimizer", "sgd", "--momentum", "-1", "--report", str(s.root / "train")],
        "momentum"),
    Probe("convert train-parity: --torch folder missing", lambda s: [
        "convert", "train-parity", "--torch", str(s.root / "nope"), "--report", str(s.root / "train")], "--torch"),
    # ---- portcheck fixes (wp-pcfix): an input the torch model itself rejects is a bad --input-shape
    Probe("convert verify-pair: --input-shape the torch model rejects", lambda s: [
        "convert", "verify-pair", "parity_tests.portcheck_pairs:TorchNet", "parity_tests.portcheck_pairs:PaddleNet",
        "--input-shape", "2,3,8,8", "--report", str(s.root / "pair")], "the torch model does not accept this input"),
]


def _file_bytes(scene: Scene, name: str, data: bytes) -> Path:
    path = scene.root / name
    path.write_bytes(data)
    return path


def _image_file(scene: Scene, name: str) -> Path:
    """A sheet view's PNG bytes under another name (an image file is an image whatever its suffix)."""
    path = scene.root / name
    path.write_bytes(next(iter(sorted(scene.sheet.iterdir()))).read_bytes())
    return path


def _frame_folder(scene: Scene) -> Path:
    """An output folder where the first pose's frame name, 0.png, is a folder."""
    (scene.root / "out" / "0.png").mkdir(parents=True)
    return scene.root / "out"


def _foreign_set(scene: Scene) -> Path:
    """A folder holding a network file of the output's name that no conversion of this toolkit wrote (no report)."""
    folder = _folder(scene, "foreign")
    (folder / "shader.pdparams").write_bytes(b"someone else's file")
    return folder


def _file(scene: Scene, name: str) -> Path:
    path = scene.root / name
    path.write_text("not a folder")
    return path


def make_scene(root: Path, sample_root: Path, weights: Path, official: Path) -> Scene:
    """A private copy of the inputs for one probe, every path under `root` (weight files as symlinks), so that the
    printed lines do not depend on where the shared inputs live."""
    root.mkdir(parents=True)
    sheet, poses = root / "sheet", root / "poses"
    shutil.copytree(sample_root / "character_sheet", sheet)
    poses.mkdir()
    for f in sorted((sample_root / "poses").glob("*.npz"))[:2]:
        shutil.copy(f, poses / f.name)
    links = {}
    for name, source, pattern in (("weights", weights, "*.pdparams"), ("official", official, "*.pth")):
        links[name] = root / name
        links[name].mkdir()
        for f in Path(source).glob(pattern):
            os.symlink(f.resolve(), links[name] / f.name)
    return Scene(root, sheet, poses, links["weights"], links["official"])


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (not following links into the shared weights) with its sha256."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@dataclass(frozen=True)
class Outcome:
    status: int
    stderr: str
    written: list[str]  # files that appeared or changed, besides what the probe's setup created

    @property
    def line(self) -> str:
        return self.stderr.strip()


def run_probe(probe: Probe, scene: Scene) -> Outcome:
    args = probe.args(scene)  # setup: may create the probe's own bad files
    before = _snapshot(scene.root)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            if args[0] == "convert":
                from convert.cli import main as convert_main

                status = convert_main(args[1:])
            else:
                from conr_app.cli import main as paddle_main

                status = paddle_main(args)
        except SystemExit as e:  # argparse's own errors
            status = int(e.code)
    after = _snapshot(scene.root)
    written = sorted(k for k in after if before.get(k) != after[k])
    return Outcome(int(status), err.getvalue(), written)


def message(outcome: Outcome, scene: Scene) -> str:
    """The printed line with the scene's folder replaced by `…`, so the table does not depend on where it ran. The
    over-long path probes also print the whole path's length, which contains the scene's folder: that count becomes
    `…` too (the name's own length, which does not depend on the folder, stays); so does the number of cores."""
    line = outcome.line.replace(str(scene.root), "…").replace(sys.executable, "python")
    line = re.sub(r"\(\d+ characters\): the", "(… characters): the", line)
    # shown up to 60 characters, so how many of the name's letters show depends on the folder's length (one under an
    # xdist worker's longer base folder)
    line = re.sub(r"([ab])\1*…\(… characters\)", r"\1\1\1…(… characters)", line)
    line = re.sub(r"the path needs \d+ characters", "the path needs … characters", line)
    # the cores this process may use: the machine's, or an xdist worker's share of them
    return re.sub(r"--workers \d+: more processes than the \d+ core\(s\)(.*) use --workers \d+ or fewer",
                  r"--workers …: more processes than the … core(s)\1 use --workers … or fewer", line)


def markdown(rows: list[tuple[str, str, int]]) -> str:
    lines = ["| bad input | what is printed (one line) | exit |", "| --- | --- | ---: |"]
    for what, text, status in rows:
        lines.append(f"| {what} | `{text.replace('|', '/').replace('`', chr(39))}` | {status} |")
    return "\n".join(lines)


def readme_table(readme: str) -> str | None:
    if START not in readme or END not in readme:
        return None
    return readme.split(START, 1)[1].split(END, 1)[0].strip()


def _build_inputs(root: Path) -> tuple[Path, Path, Path]:
    from conr_common.data.samples import ensure_samples
    from conr_torch_ref.seeded import write_seeded_weights
    from convert.conversion import convert_checkpoints

    samples = ensure_samples(root / "samples", size=256, frames=4, seed=0)
    official = write_seeded_weights(root / "official")
    paddle_dir = root / "paddle"
    convert_checkpoints("torch2paddle", official, paddle_dir, fmt="pdparams", force=True)
    return samples.root, paddle_dir, official


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m parity_tests.bad_inputs", description=__doc__.splitlines()[0])
    parser.add_argument("--write-readme", action="store_true", help="replace the README table with a fresh one")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="conr-bad-inputs-") as tmp:
        sample_root, paddle_dir, official = _build_inputs(Path(tmp))
        rows = []
        for i, probe in enumerate(PROBES):
            scene = make_scene(Path(tmp) / f"probe{i}", sample_root, paddle_dir, official)
            outcome = run_probe(probe, scene)
            rows.append((probe.what, message(outcome, scene), outcome.status))
    table = markdown(rows)
    if args.write_readme:
        text = README.read_text()
        if readme_table(text) is None:
            raise SystemExit(f"{README}: markers {START} / {END} not found")
        head, rest = text.split(START, 1)
        README.write_text(head + START + "\n" + table + "\n" + END + rest.split(END, 1)[1])
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
