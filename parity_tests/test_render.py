"""`python -m conr_app render`: frames equal to the PyTorch reference loop, resume after Ctrl-C, videos, and a
one-line exit-2 error (nothing written) for every kind of bad input.

Small on purpose (128 px, one sheet view, three rendered frames): eager Paddle needs seconds per frame here.
The CLI runs in-process through `conr_app.cli.main`; only `--help` runs in a subprocess.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conr_common.contract.config import NETWORK_NAMES
from conr_common.platform.errors import ConrInputError
from conr_common.verification.tolerances import PIXEL_MAX_LEVELS, PIXEL_MIN_IDENTICAL
from conr_app.cli import main
from parity_tests.harness import child_env

SIZE = 128
# The sequence: natural order puts 10 after 2; 2 is empty (transparent output, no model call); 10 has another size.
POSE_ORDER = ["0", "1", "2", "10"]


# --------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def inputs(samples, tmp_path_factory):
    """One-view sheet and four UDP poses (see POSE_ORDER), plus one RGBA pose image."""
    root = tmp_path_factory.mktemp("render_inputs")
    sheet = root / "sheet"
    sheet.mkdir()
    shutil.copy(samples.character_sheet / "0_front.png", sheet / "0_front.png")
    poses = root / "poses"
    poses.mkdir()
    shutil.copy(samples.poses / "0.npz", poses / "0.npz")
    shutil.copy(samples.poses / "1.npz", poses / "1.npz")
    np.savez_compressed(poses / "2.npz", i=np.zeros((200, 200, 4), np.float32))
    with np.load(samples.poses / "2.npz") as f:
        tall = np.pad(f["i"], ((30, 14), (0, 0), (0, 0)))  # 300 x 256: another (non-square) size
    np.savez_compressed(poses / "10.npz", i=tall)
    images = root / "pose_images"
    images.mkdir()
    shutil.copy(samples.pose_images / "3.png", images / "3.png")
    return {"root": root, "sheet": sheet, "poses": poses, "pose_images": images}


@pytest.fixture(scope="session")
def full_run(pdparams_dir, inputs, tmp_path_factory):
    """One uninterrupted CLI run (real weight loading from .pdparams, --batch 2): the frames every test compares."""
    out = tmp_path_factory.mktemp("full_run") / "frames"
    status = main(["render", "--weights", str(pdparams_dir), "--character-sheet", str(inputs["sheet"]),
                   "--poses", str(inputs["poses"]), "--out", str(out), "--size", str(SIZE), "--batch", "2",
                   "--engine", "eager", "--quiet"])
    assert status == 0
    return out


@pytest.fixture()
def shared_model(paddle_model, monkeypatch):
    """Skip re-reading 720 MB of .pdparams in every test: the session model holds the same tensors."""
    from conr_app.rendering.render import Renderer

    monkeypatch.setattr(Renderer, "_load_model", lambda self: paddle_model)
    return paddle_model


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)


def _frames(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: _read(p) for p in sorted(folder.glob("*.png")) if not p.stem.endswith("_udp")}


def _no_temporaries(folder: Path) -> bool:
    from conr_app.rendering.resume import RECORD_FILES

    return not [p for p in folder.rglob(".*") if p.is_file() and p.name not in RECORD_FILES]


def _assert_close(reference: dict, frames: dict) -> None:
    from conr_app.rendering.demo import compare_frames

    result = compare_frames(reference, frames)
    assert result.identical_fraction >= PIXEL_MIN_IDENTICAL, str(result)
    assert result.max_diff <= PIXEL_MAX_LEVELS, str(result)


def _render_args(pdparams_dir, inputs, out, *extra) -> list[str]:
    return ["render", "--weights", str(pdparams_dir), "--character-sheet", str(inputs["sheet"]),
            "--poses", str(inputs["poses"]), "--out", str(out), "--size", str(SIZE), "--engine", "eager",
            "--quiet", *extra]


# --------------------------------------------------------------------------------------------------- success


def test_help_subprocess():
    env = child_env()
    proc = subprocess.run([sys.executable, "-m", "conr_app", "--help"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "render" in proc.stdout and "demo" in proc.stdout


def test_render_matches_reference(full_run, inputs, torch_model):
    from conr_torch_ref.render import render_reference_frames

    frames = _frames(full_run)
    assert sorted(frames, key=POSE_ORDER.index) == POSE_ORDER
    assert frames["10"].shape == (300, 256, 4)  # pasted back into its own frame size
    assert frames["2"].shape == (200, 200, 4) and not frames["2"].any()  # empty pose: transparent
    assert frames["0"][:, :, 3].any()
    assert _no_temporaries(full_run)
    reference = render_reference_frames(torch_model, inputs["sheet"], inputs["poses"], SIZE)
    assert list(reference) == POSE_ORDER  # natural order
    _assert_close(reference, frames)


@pytest.mark.slow  # a render through the pose parser and the torch reference frames
def test_pose_images_path(pdparams_dir, inputs, torch_model, shared_model, tmp_path, capsys):
    from conr_torch_ref.render import render_reference_frames

    out = tmp_path / "out"
    args = _render_args(pdparams_dir, inputs, out, "--pose-images")
    args[args.index("--poses") + 1] = str(inputs["pose_images"])
    assert main(args) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".conr-render.frames", ".conr-render.json", "3.png",
                                                     "3_udp.npz", "3_udp.png"]
    with np.load(out / "3_udp.npz") as f:
        udp = f["i"]
    assert udp.shape == (SIZE, SIZE, 4) and udp.dtype == np.float32
    preview = _read(out / "3_udp.png")
    expected = (np.clip(np.concatenate([udp[:, :, :3] * udp[:, :, 3:], udp[:, :, 3:]], 2) * 255, 0, 255)
                .astype(np.uint8))
    np.testing.assert_array_equal(preview, expected)
    reference = render_reference_frames(torch_model, inputs["sheet"], inputs["pose_images"], SIZE, pose_images=True)
    _assert_close(reference, {"3": _read(out / "3.png")})


@pytest.mark.slow  # predictor export
def test_predictor_engine(pdparams_dir, inputs, full_run, shared_model, graph_cache, tmp_path, capsys):
    """The default engine (Paddle Inference graphs, exported into --cache-dir: the session's) gives the eager frames."""
    from conr_engines.inference.ext import find_cxx_compiler

    poses = tmp_path / "poses"
    poses.mkdir()
    shutil.copy(inputs["poses"] / "0.npz", poses / "0.npz")
    out = tmp_path / "out"
    args = _render_args(pdparams_dir, inputs, out, "--cache-dir", str(graph_cache))
    args[args.index("--poses") + 1] = str(poses)
    args[args.index("--engine") + 1] = "predictor"
    assert main(args) == 0, capsys.readouterr().err
    # the custom warp where a C++ compiler exists, else the documented grid_sample fallback (and the label says so)
    warp = "conr_warp" if find_cxx_compiler() is not None else "grid_sample"
    assert f"(predictor, {warp})" in capsys.readouterr().out
    _assert_close({"0": _read(full_run / "0.png")}, _frames(out))
    from conr_engines.export.to_static_files import to_static_folder

    assert not to_static_folder().exists(), "the export left Paddle's to_static sources behind (issue 23)"



@pytest.mark.parametrize("engine", ["predictor", "onnxruntime"])
def test_fast_engines_get_the_threads_option(engine, monkeypatch):
    """--threads (or a rank's share of the cores under --workers) reaches both fast engines: onnxruntime's sessions
    used every core whatever was asked. The runners are stand-ins that record their arguments (no export)."""
    from conr_common.cli.options import RenderOptions
    from conr_engines.onnx import runner as onnx_runner
    from conr_engines.inference import predictor
    from conr_engines.runner import make_runner

    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("paddle2onnx")
    seen = {}

    def recorder(model, weights_hash, **kwargs):
        seen.update(kwargs)
        return "runner"

    monkeypatch.setattr(onnx_runner if engine == "onnxruntime" else predictor,
                        "OnnxRunner" if engine == "onnxruntime" else "PredictorRunner", recorder)
    assert make_runner(None, "hash", 2, RenderOptions(size=128, engine=engine, threads=3)) == "runner"
    assert seen["threads"] == 3 and seen["views"] == 2 and seen["size"] == 128


# --------------------------------------------------------------------------------------------------- resume


@pytest.mark.slow  # renders frames again (eager, 128 px), like test_resume_manifest's re-render cases
def test_interrupt_then_resume(pdparams_dir, inputs, full_run, shared_model, tmp_path, monkeypatch, capsys):
    import conr_app.rendering.frames as frames_module

    real_write = frames_module.atomic_write_bytes
    calls = {"n": 0}

    def interrupt_on_second_frame(path, data):
        calls["n"] += 1
        if calls["n"] == 2:  # Ctrl-C while frame 2 is being written (after its journal line: harmless, see resume)
            raise KeyboardInterrupt
        real_write(path, data)

    out = tmp_path / "out"
    monkeypatch.setattr(frames_module, "atomic_write_bytes", interrupt_on_second_frame)
    assert main(_render_args(pdparams_dir, inputs, out)) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resume" in err, err
    # no partial file, no temporary; the render's record and journal
    assert sorted(p.name for p in out.iterdir()) == [".conr-render.frames", ".conr-render.json", "0.png"]

    monkeypatch.setattr(frames_module, "atomic_write_bytes", real_write)
    before = (out / "0.png").stat().st_mtime_ns
    assert main(_render_args(pdparams_dir, inputs, out, "--resume")) == 0
    captured = capsys.readouterr()
    assert "3 frame(s) written, 1 already complete" in captured.out, captured.out
    assert (out / "0.png").stat().st_mtime_ns == before  # not rendered again
    assert _no_temporaries(out)
    expected = _frames(full_run)
    got = _frames(out)
    assert sorted(got) == sorted(expected)
    # same engine, batch 1 vs batch 2: the per-frame float math may differ in the last bit only
    _assert_close(expected, got)


@pytest.mark.slow  # renders frames again (eager, 128 px), like test_resume_manifest's re-render cases
def test_resume_rerenders_damaged_frame(pdparams_dir, inputs, full_run, shared_model, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    data = (out / "1.png").read_bytes()
    (out / "1.png").write_bytes(data[: len(data) // 2])  # truncated by some other tool
    assert main(_render_args(pdparams_dir, inputs, out, "--resume")) == 0
    assert "1 frame(s) written, 3 already complete" in capsys.readouterr().out
    _assert_close(_frames(full_run), _frames(out))


@pytest.mark.slow  # renders frames again (eager, 128 px), like test_resume_manifest's re-render cases
def test_resume_rerenders_foreign_frames(pdparams_dir, inputs, full_run, shared_model, tmp_path, capsys):
    """A PNG that decodes but is not a frame of this render (5x5, or RGB without alpha) is rendered again by
    --resume instead of surviving until the video encoder refuses the sequence."""
    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    cv2.imwrite(str(out / "1.png"), np.zeros((5, 5, 4), np.uint8))
    frame = cv2.imread(str(out / "0.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(out / "0.png"), frame[:, :, :3])  # right size, no alpha
    assert main(_render_args(pdparams_dir, inputs, out, "--resume")) == 0
    assert "2 frame(s) written, 2 already complete" in capsys.readouterr().out
    _assert_close(_frames(full_run), _frames(out))


# --------------------------------------------------------------------------------------------------- video


def test_video_mp4_and_webm(pdparams_dir, inputs, full_run, tmp_path, capsys):
    from imageio_ffmpeg import count_frames_and_secs

    out = tmp_path / "out"
    shutil.copytree(full_run, out)  # --resume: nothing to render, only encode
    video = tmp_path / "video" / "clip.mp4"
    assert main(_render_args(pdparams_dir, inputs, out, "--resume", "--video", str(video), "--fps", "8")) == 0
    assert "0 frame(s) written" in capsys.readouterr().out
    assert count_frames_and_secs(str(video))[0] == len(POSE_ORDER)
    webm = video.with_suffix(".webm")
    assert count_frames_and_secs(str(webm))[0] == len(POSE_ORDER)
    assert _no_temporaries(video.parent)


def test_video_with_background(pdparams_dir, inputs, full_run, tmp_path, capsys):
    from imageio_ffmpeg import count_frames_and_secs, read_frames

    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    video = tmp_path / "clip.mp4"
    assert main(_render_args(pdparams_dir, inputs, out, "--resume", "--video", str(video),
                             "--background", "#00FF00")) == 0
    assert count_frames_and_secs(str(video))[0] == len(POSE_ORDER)
    assert not video.with_suffix(".webm").exists()
    reader = read_frames(str(video))
    meta = next(reader)
    assert tuple(meta["size"]) == (256, 256)  # the first frame's size; 200 x 200 and 300 x 256 resized to it
    empty = [np.frombuffer(f, np.uint8) for f in reader][2]  # frame "2" is transparent: pure background
    rgb = empty.reshape(256, 256, 3).astype(int)
    assert abs(rgb[..., 1].mean() - 255) < 3 and rgb[..., 0].mean() < 10


# --------------------------------------------------------------------------------------------------- bad input


def _expect_input_error(args, capsys, must_name: str, out: Path) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    assert must_name in err, err
    assert not out.exists(), "nothing may be written for bad input"
    return err


def _copy_poses(inputs, tmp_path) -> Path:
    poses = tmp_path / "poses"
    shutil.copytree(inputs["poses"], poses)
    return poses


def test_bad_missing_and_empty_folders(pdparams_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "nope"
    args = _render_args(pdparams_dir, inputs, out)
    args[args.index("--poses") + 1] = str(missing)
    _expect_input_error(args, capsys, str(missing), out)
    empty = tmp_path / "empty"
    empty.mkdir()
    args = _render_args(pdparams_dir, inputs, out)
    args[args.index("--character-sheet") + 1] = str(empty)
    _expect_input_error(args, capsys, str(empty), out)


def test_bad_opaque_sheet(pdparams_dir, inputs, tmp_path, capsys):
    sheet = tmp_path / "sheet"
    sheet.mkdir()
    image = np.full((64, 64, 4), 200, np.uint8)
    image[:, :, 3] = 255
    image[:1, :1, 3] = 0  # a single transparent pixel: still 95% or more opaque
    cv2.imwrite(str(sheet / "opaque.png"), image)
    out = tmp_path / "out"
    args = _render_args(pdparams_dir, inputs, out)
    args[args.index("--character-sheet") + 1] = str(sheet)
    _expect_input_error(args, capsys, str(sheet / "opaque.png"), out)


def test_bad_truncated_image(pdparams_dir, inputs, tmp_path, capsys):
    sheet = tmp_path / "sheet"
    shutil.copytree(inputs["sheet"], sheet)
    data = (sheet / "0_front.png").read_bytes()
    (sheet / "1_cut.png").write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    args = _render_args(pdparams_dir, inputs, out)
    args[args.index("--character-sheet") + 1] = str(sheet)
    _expect_input_error(args, capsys, str(sheet / "1_cut.png"), out)


@pytest.mark.parametrize("kind", ["no_key_i", "three_channels", "corrupt"])
def test_bad_udp_file(pdparams_dir, inputs, tmp_path, capsys, kind):
    poses = _copy_poses(inputs, tmp_path)
    bad = poses / "5.npz"  # in the middle of the sequence: frames 0-2 must not be written either
    if kind == "no_key_i":
        np.savez(bad, x=np.zeros((64, 64, 4), np.float32))
    elif kind == "three_channels":
        np.savez(bad, i=np.zeros((64, 64, 3), np.float32))
    else:
        bad.write_bytes(b"PK\x03\x04 truncated")
    out = tmp_path / "out"
    args = _render_args(pdparams_dir, inputs, out)
    args[args.index("--poses") + 1] = str(poses)
    _expect_input_error(args, capsys, str(bad), out)


def test_bad_size(pdparams_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    args = _render_args(pdparams_dir, inputs, out)
    args[args.index("--size") + 1] = "200"
    _expect_input_error(args, capsys, "--size", out)


def test_bad_weights_missing_network(pdparams_dir, inputs, tmp_path, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in NETWORK_NAMES[:-1]:
        os.symlink(pdparams_dir / f"{name}.pdparams", weights / f"{name}.pdparams")
    out = tmp_path / "out"
    args = _render_args(weights, inputs, out)
    _expect_input_error(args, capsys, str(weights / f"{NETWORK_NAMES[-1]}.pdparams"), out)


def test_bad_weights_official_pth(weights_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    err = _expect_input_error(_render_args(weights_dir, inputs, out), capsys, str(weights_dir), out)
    assert f"python -m convert torch2paddle {weights_dir}" in err


class _CreatesFile:
    """A pickle payload that would create a file when unpickled by a loader that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_bad_weights_code_carrying_pdparams_never_runs(pdparams_dir, inputs, tmp_path, capsys):
    import pickle

    weights = tmp_path / "weights"
    weights.mkdir()
    for name in NETWORK_NAMES[:-1]:
        os.symlink(pdparams_dir / f"{name}.pdparams", weights / f"{name}.pdparams")
    marker = tmp_path / "pwned"
    bad = weights / f"{NETWORK_NAMES[-1]}.pdparams"
    bad.write_bytes(pickle.dumps({"conv_rgba.0.weight": _CreatesFile(marker)}, protocol=4))
    out = tmp_path / "out"
    err = _expect_input_error(_render_args(weights, inputs, out), capsys, str(bad), out)
    assert "refused" in err
    assert not marker.exists(), "the pickle's code ran"


def test_bad_background(pdparams_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    video = tmp_path / "v.mp4"
    args = _render_args(pdparams_dir, inputs, out, "--video", str(video), "--background", "nothing.png")
    _expect_input_error(args, capsys, "nothing.png", out)
    assert not video.exists()


def test_psnr_db_is_exact_on_known_arrays():
    """The figure printed for --precision bf16 (first frame against fp32)."""
    from conr_common.verification.compare import psnr_db

    a = np.zeros((4, 8, 8))
    assert psnr_db(a, a) == float("inf")
    assert abs(psnr_db(a, a + 0.01) - 40.0) < 1e-9  # mse 1e-4 with peak 1 is exactly 40 dB


def test_bf16_is_refused_with_one_line_where_the_cpu_lacks_it(pdparams_dir, inputs, tmp_path, capsys, monkeypatch):
    import conr_engines.inference.predictor as predictor

    # a CPU without bfloat16, whatever this one has: the answer bf16_support() gives there, patched where the
    # predictor looks it up (its own name for conr_common.platform.cpu.bf16_support)
    monkeypatch.setattr(predictor, "bf16_support", lambda: (False, "CPU lacks AVX512-BF16 and AMX"))
    out = tmp_path / "out"
    args = _render_args(pdparams_dir, inputs, out, "--precision", "bf16", "--cache-dir", str(tmp_path / "cache"))
    args[args.index("eager")] = "predictor"
    err = _expect_input_error(args, capsys, "bf16", out)
    assert "AVX512-BF16" in err


@pytest.mark.slow  # predictor export
def test_bf16_render_prints_psnr_against_fp32(pdparams_dir, inputs, shared_model, graph_cache, tmp_path, capsys,
                                              monkeypatch):
    """On a bf16 CPU: the bf16 graphs render, and the first frame's PSNR against fp32 meets the bar. The fp32 side of
    that figure is the eager model already loaded: no second (fp32) graph set is exported for it."""
    from conr_common.verification.tolerances import BF16_MIN_PSNR_DB
    from conr_app.rendering import render as render_module
    from conr_common.platform.cpu import bf16_support

    built = []
    real_make_runner = render_module.make_runner

    def recording_make_runner(model, digest, views, options):
        built.append(options.precision)
        return real_make_runner(model, digest, views, options)

    monkeypatch.setattr(render_module, "make_runner", recording_make_runner)

    supported, reason = bf16_support()
    if not supported:
        pytest.skip(reason)
    poses = tmp_path / "poses"
    poses.mkdir()
    shutil.copy(inputs["poses"] / "0.npz", poses / "0.npz")
    out = tmp_path / "out"
    args = _render_args(pdparams_dir, inputs, out, "--precision", "bf16", "--cache-dir", str(graph_cache))
    args[args.index("--poses") + 1] = str(poses)
    args[args.index("--engine") + 1] = "predictor"
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr()
    line = next(l for l in (printed.out + printed.err).splitlines() if "PSNR" in l)
    psnr = float(line.split("PSNR")[1].split("dB")[0])
    assert psnr >= BF16_MIN_PSNR_DB, line
    frame = _read(out / "0.png")
    assert frame.shape[2] == 4 and frame[..., 3].any(), "bf16 frame is empty"
    assert built == ["bf16"], built


@pytest.mark.parametrize("where", ["same", "inside", "contains", "sheet"])
def test_bad_output_folder_overlapping_an_input_is_refused_and_inputs_unchanged(pdparams_dir, inputs, tmp_path,
                                                                               capsys, where):
    """`--out` equal to, inside or containing the poses (or sheet) folder: refused before anything is written; the
    pose files stay byte-identical (the same folder used to be overwritten with the frames, exit 0)."""
    root = tmp_path / "work"
    poses = root / "poses"
    shutil.copytree(inputs["poses"], poses)
    before = {p.name: p.read_bytes() for p in poses.iterdir()}
    out = {"same": poses, "inside": poses / "frames", "contains": root, "sheet": inputs["sheet"]}[where]
    listing = sorted(p.name for p in out.rglob("*")) if out.exists() else None
    args = _render_args(pdparams_dir, {**inputs, "poses": poses}, out)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: --out ") and "folder of its own" in err, err
    assert {p.name: p.read_bytes() for p in poses.iterdir()} == before
    assert (sorted(p.name for p in out.rglob("*")) if out.exists() else None) == listing


def test_each_pose_is_decoded_once_and_bad_input_still_stops_before_writing(pdparams_dir, inputs, full_run,
                                                                            shared_model, tmp_path, monkeypatch):
    """Validation decodes every pose before anything is written and the render reuses those arrays: one decode per
    pose file. A pose past the memory budget is decoded again when rendered (and only then)."""
    from conr_common.cli.options import RenderOptions
    from conr_app.rendering import render as render_module

    decoded: list[str] = []
    real_load = render_module.load_udp_pose

    def counting_load(path, size):
        decoded.append(Path(path).name)
        return real_load(path, size)

    monkeypatch.setattr(render_module, "load_udp_pose", counting_load)
    renderer = render_module.Renderer(pdparams_dir, RenderOptions(size=SIZE, batch=2, engine="eager"))
    summary = renderer.render(inputs["sheet"], inputs["poses"], tmp_path / "out", progress=False)
    assert summary.frames_written == len(POSE_ORDER)
    assert sorted(decoded) == sorted(f"{n}.npz" for n in POSE_ORDER), decoded
    assert _frames(tmp_path / "out").keys() == _frames(full_run).keys()
    for name, frame in _frames(tmp_path / "out").items():
        np.testing.assert_array_equal(frame, _read(full_run / f"{name}.png"), err_msg=name)

    plan = renderer.plan(inputs["sheet"], inputs["poses"], tmp_path / "out2")
    kept = render_module.decode_poses(plan.jobs, SIZE, False, budget=0)
    assert kept == {}  # nothing fits: every frame would be decoded again at render time
    poses = tmp_path / "poses"
    shutil.copytree(inputs["poses"], poses)
    (poses / "99.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConrInputError, match="99.npz"):
        renderer.render(inputs["sheet"], poses, tmp_path / "out3", progress=False)
    assert not (tmp_path / "out3").exists()


def test_renderer_keeps_one_runner_and_releases_it(pdparams_dir, shared_model):
    """One runner (one view count's predictors) at a time: another view count replaces it; close() drops it."""
    from conr_common.cli.options import RenderOptions
    from conr_app.rendering.render import Renderer

    renderer = Renderer(pdparams_dir, RenderOptions(size=SIZE, engine="eager"))
    one = renderer.runner(views=1)
    assert renderer.runner(views=1) is one
    two = renderer.runner(views=2)
    assert two is not one and renderer.runner(views=2) is two
    assert renderer.runner(views=1) is not one  # the first was released, not kept beside the second
    renderer.close()
    assert renderer.runner(views=1) is not one
