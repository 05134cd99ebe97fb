"""Bounded inputs and early checks (issue #13): oversized images and UDP frames are refused from their headers
before decoding, numeric options have documented bounds checked at parse time, and every check of `demo` and
`render` runs before any file is written or a model loaded. Each case: exit 2, one line naming the file or option,
nothing written."""
from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from conr_common.platform.errors import ConrInputError
from conr_common.data.headers import MAX_FRAME_SIDE, header_shape


def _main(args: list[str]) -> int:
    """The CLI in-process; argparse's own errors exit through SystemExit."""
    from conr_app.cli import main

    try:
        return main(args)
    except SystemExit as e:
        return int(e.code)


def _one_line_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture()
def long_png(tmp_path) -> Path:
    """A 10 x 20000 RGBA PNG: tiny on disk, a 20000^2 square crop once decoded (1.6 GB)."""
    path = tmp_path / "long.png"
    image = np.zeros((10, 20000, 4), np.uint8)
    image[:, :100, 3] = 255
    assert cv2.imwrite(str(path), image)
    return path


def test_headers_give_sizes_without_decoding(tmp_path, long_png):
    assert header_shape(long_png) == (10, 20000)
    npz = tmp_path / "0.npz"
    np.savez_compressed(npz, i=np.zeros((7, 9, 4), np.float32))
    assert header_shape(npz) == (7, 9, 4)
    # an OpenEXR header written by hand (this OpenCV build writes no EXR): magic, version, then attributes
    # (name\0 type\0 int32 size, value) ending with an empty name; dataWindow is box2i (xmin, ymin, xmax, ymax)
    import struct

    def attr(name: bytes, kind: bytes, value: bytes) -> bytes:
        return name + b"\0" + kind + b"\0" + struct.pack("<i", len(value)) + value

    exr = tmp_path / "0.exr"
    exr.write_bytes(b"\x76\x2f\x31\x01" + struct.pack("<I", 2) + attr(b"compression", b"compression", b"\0")
                    + attr(b"dataWindow", b"box2i", struct.pack("<4i", 2, 3, 12, 7)) + b"\0")
    assert header_shape(exr) == (5, 11)


def test_oversized_sheet_view_is_refused_before_decoding(long_png, monkeypatch):
    from conr_common.data import pipeline

    monkeypatch.setattr(pipeline.cv2, "imdecode", lambda *a: pytest.fail("decoded before the size check"))
    with pytest.raises(ConrInputError, match=rf"long\.png: image is 10x20000 pixels; the largest side .* {MAX_FRAME_SIDE}"):
        pipeline.read_rgba(long_png)


def test_oversized_udp_npz_is_refused_from_its_header(tmp_path):
    """(1, 100000, 4) used to request 37 GiB; the check must not even decompress the array."""
    from conr_common.data.pipeline import read_udp

    path = tmp_path / "0.npz"
    np.savez_compressed(path, i=np.zeros((1, 100000, 4), np.float32))
    with zipfile.ZipFile(path) as z:
        assert z.getinfo("i.npy").compress_size < 100_000  # small file, huge array
    with pytest.raises(ConrInputError, match=r"0\.npz: UDP frame is 1x100000 pixels"):
        read_udp(path)


@pytest.mark.parametrize("args,needle", [
    (["--size", "1280000"], "at most 1024"),
    (["--batch", "0"], "--batch"),
    (["--batch", "100000"], "--batch"),
    (["--fps", "0"], "--fps"),
    (["--frames", "0"], "--frames"),
])
def test_demo_arguments_checked_before_anything_is_written(tmp_path, capsys, args, needle):
    out = tmp_path / "demo"
    rc = _main(["demo", "--out", str(out), *args])
    _one_line_error(capsys, rc, needle)
    assert not out.exists(), "the demo wrote files before refusing its arguments"


def test_render_cache_dir_that_is_a_file_is_refused_before_loading(tmp_path, capsys, samples, monkeypatch):
    from conr_app.rendering import render as render_module

    monkeypatch.setattr(render_module, "make_runner", lambda *a, **k: pytest.fail("model loaded before the check"))
    cache = tmp_path / "cache.txt"
    cache.write_text("not a folder")
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("udpparsernet", "target_pose_encoder", "shader", "rgbadecodernet"):
        (weights / f"{name}.pdparams").write_bytes(b"x")
    out = tmp_path / "out"
    rc = _main(["render", "--weights", str(weights), "--character-sheet", str(samples.character_sheet),
               "--poses", str(samples.poses), "--out", str(out), "--size", "128", "--cache-dir", str(cache)])
    _one_line_error(capsys, rc, "--cache-dir", "not a folder")
    assert not out.exists()


def test_output_in_a_read_only_folder_is_refused_before_loading(tmp_path, capsys, samples, monkeypatch):
    """Root may write anywhere, so the read-only folder is what os.access reports for it here (on a read-only mount
    access(2) says the same to root)."""
    import os

    from conr_app.rendering import render as render_module

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode))
    monkeypatch.setattr(render_module, "make_runner", lambda *a, **k: pytest.fail("model loaded before the check"))
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("udpparsernet", "target_pose_encoder", "shader", "rgbadecodernet"):
        (weights / f"{name}.pdparams").write_bytes(b"x")
    rc = _main(["render", "--weights", str(weights), "--character-sheet", str(samples.character_sheet),
                "--poses", str(samples.poses), "--out", str(locked / "frames"), "--size", "128"])
    _one_line_error(capsys, rc, "--out", "cannot write in", str(locked))
    assert not (locked / "frames").exists()


def test_python_warnings_are_one_line():
    """In a child process: pytest records warnings itself, which would hide the format the CLIs install."""
    import subprocess
    import sys

    code = ("from conr_common.cli.args import one_line_warnings; one_line_warnings(); import warnings; "
            "warnings.warn('overflow encountered\\nin cast', RuntimeWarning)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.stderr == "warning: overflow encountered in cast\n", proc.stderr


@pytest.mark.parametrize("field, value, needle", [
    ("size", 200, "--size must be a positive multiple of 128"),
    ("size", 1280000, "--size must be at most 1024"),
    ("batch", 0, "--batch must be a positive integer, got 0"),
    ("batch", True, "--batch must be a positive integer, got True"),
    ("engine", "tensorrt", "--engine must be one of predictor, eager, onnxruntime, got 'tensorrt'"),
    ("precision", "fp16", "--precision must be one of fp32, bf16, got 'fp16'"),
    ("threads", 0, "--threads must be a positive integer, got 0"),
    ("workers", -1, "--workers must be a positive integer, got -1"),
    ("fps", 0, "--fps must be a number in (0, 1000], got 0"),
    ("fps", 1001.0, "--fps must be a number in (0, 1000], got 1001.0"),
])
def test_render_options_are_checked_once_with_the_cli_message(field, value, needle):
    from conr_common.cli.options import RenderOptions

    with pytest.raises(ConrInputError) as info:
        RenderOptions(**{field: value})
    assert str(info.value).startswith(needle), str(info.value)


def test_render_options_bf16_needs_the_predictor_and_defaults_are_valid():
    from dataclasses import FrozenInstanceError

    from conr_common.cli.options import DEFAULT_ENGINE, RenderOptions

    with pytest.raises(ConrInputError, match=r"--precision bf16 needs --engine predictor \(eager runs fp32 only\)"):
        RenderOptions(engine="eager", precision="bf16")
    options = RenderOptions(cache_dir="cache")
    assert options.engine == DEFAULT_ENGINE and options.cache_dir == Path("cache")
    with pytest.raises(FrozenInstanceError):
        options.size = 128  # type: ignore[misc]
