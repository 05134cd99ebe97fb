"""`python -m convert verify`: the parity report finds planted port errors at the right place.

128 px, 2 sheet views, seeded official-format weights (session fixtures). The two reports where nothing is planted
run as the command in a child process (`python -m convert verify`), so their model pairs, float64 copies and layer
records are never part of the pytest process, which holds the session's models. The planted reports run
in-process through `convert.cli.main`, so a fault can be planted with monkeypatch: they still read and compare
both weight folders (the parameter check), but compute with the session's `torch_model` and a Paddle twin of the
session's `paddle_model` (`CoNR.with_ops`: the same parameter tensors, new layer objects) carrying the fault, so a
planted run adds only its layer records (and the referee's float64 copy where it runs), and the session's models
are never changed:
- clean pair (child process; its models loaded by verify's production path): exit 0, the three report files exist
  and parse, every row passes against the float64 referee;
- the Paddle warp with align_corners flipped (planted through `CoNR.with_ops`): exit 1, the first failing layer is
  a `shader.warp#k` call (and, run alone on the reference's input, that leaf layer is the first local failure too);
- one converted tensor perturbed by 1e-2 in one element: exit 1, the parameter check names exactly that tensor and
  the first failing layer is inside `shader.decoder_blocks.2`;
  (these two with `--truth none`: the fixed per-stage bounds locate them, and the referee's float64 pass, which
  their assertions do not read, is left to the clean run and the norm faults)
- instance-norm epsilon 1e-3 in the sheet parser and Paddle's native float32 norm in the pose encoder, in one
  report: each found at its own network's first norm (the encoder's against the referee);
- a badly conditioned world at 256 px (child process; the "wide" draw written as float16): the fixed per-stage
  bounds fail on a correct port and the float64 referee, called in by `--truth auto`, passes it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conr_common.weights import checkpoints as cio
from convert.cli import main
from parity_tests.harness import ROOT, child_env, release_models

SIZE, VIEWS = 128, 2
PERTURBED_TENSOR = "decoder_blocks.2.conv0.0.weight"  # in shader.pdparams
PERTURBED_INDEX = (0, 2, 1, 1)  # output channel 0, input channel 2 (first target-pose feature), centre tap


@pytest.fixture(autouse=True)
def _models_released():
    """A verify run holds layer records and float64 copies (and the clean run its own model pair, 1.5 GB): give the
    memory back when the test is done (the full suite's RSS grew ~1.5 GB per run without this)."""
    yield
    release_models()


@pytest.fixture(scope="module")
def perturbed_dir(pdparams_dir, tmp_path_factory):
    """The converted folder with one element of one shader tensor moved by 1e-2 (other files linked)."""
    out = tmp_path_factory.mktemp("verify_paddle_perturbed")
    for f in pdparams_dir.glob("*.pdparams"):
        if f.name != "shader.pdparams":
            os.symlink(f, out / f.name)
    state = dict(cio.load_paddle_file(pdparams_dir / "shader.pdparams"))
    weight = np.array(state[PERTURBED_TENSOR], copy=True)
    weight[PERTURBED_INDEX] += np.float32(1e-2)
    state[PERTURBED_TENSOR] = weight
    cio.save_pdparams(state, out / "shader.pdparams")
    return out


def _verify(weights_dir, paddle_dir, out: Path, *extra: str) -> int:
    return main(["verify", "--torch", str(weights_dir), "--paddle", str(paddle_dir), "--size", str(SIZE),
                 "--views", str(VIEWS), "--report", str(out), *extra])


def _verify_command(torch_dir, paddle_dir, out: Path, *extra: str) -> tuple[int, str, str]:
    """`python -m convert verify` in a child process: (exit status, stdout, stderr). Its model pair, float64 copies
    and layer records are never part of the pytest process, which holds the session's models."""
    proc = subprocess.run([sys.executable, "-m", "convert", "verify", "--torch", str(torch_dir), "--paddle",
                           str(paddle_dir), "--report", str(out), *extra],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=1200)
    return proc.returncode, proc.stdout, proc.stderr


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow  # a full layer-by-layer verify run
def test_clean_pair_passes_and_writes_readable_report(weights_dir, pdparams_dir, tmp_path):
    out = tmp_path / "report"
    rc, stdout, stderr = _verify_command(weights_dir, pdparams_dir, out, "--size", str(SIZE), "--views", str(VIEWS))
    assert rc == 0, stdout + stderr[-2000:]
    assert "PASS" in stdout

    report = _report(out)
    s = report["summary"]
    assert report["passed"] and s["first_failing_layer"] is None and s["layers_failing"] == 0
    assert s["parameters"] == 486 and s["parameters_differing"] == []
    assert all(p["max_abs"] == 0.0 for p in report["parameters"])
    assert report["render"]["ok"] and report["render"]["max_abs"] <= report["tolerances"]["rgba"]
    assert s["unpaired_paddle_keys"] == []
    rows = report["layers"]
    assert len(rows) > 500 and all(r["paired"] and r["ok"] for r in rows)
    assert [r["index"] for r in rows] == list(range(len(rows)))
    # every network recorded, containers and leaves, call-indexed keys in execution order
    assert {r["network"] for r in rows} == {"udpparsernet", "target_pose_encoder", "shader", "rgbadecodernet"}
    assert {"Conv2d", "Sequential", "CINN"} <= {r["type"] for r in rows}
    warps = [r["key"] for r in rows if r["layer"] == "shader.warp"]
    assert warps == [f"shader.warp#{k}" for k in range(len(warps))] and len(warps) >= 6
    assert report["settings"] == {"size": SIZE, "views": VIEWS, "views_requested": VIEWS, "dtype": "float32",
                                  "seed": 0, "single_step": False, "device": "cpu", "truth": "fp64", "truth_escalated": False,
                                  "engine": "eager"}
    # the float64 referee runs by default at 128 px: every row carries both frameworks' error against it
    acc = report["accuracy"]
    assert set(acc) >= {"torch_fp32_vs_fp64", "paddle_fp32_vs_fp64", "ratio"}
    assert 0 < acc["torch_fp32_vs_fp64"] < 1e-3 and acc["ratio"] <= 1.5
    assert all("truth" in r and r["truth"]["torch"] >= 0 for r in rows)
    assert "Against the float64 truth" in (out / "report.md").read_text()
    env = report["environment"]
    assert env["packages"]["torch"] and env["packages"]["paddlepaddle"] and env["packages"]["numpy"]
    assert env["cpu"]["model"] and "torch.get_num_threads" in env["threads"]
    # what eager Paddle ran with: the threads and MKL's code path in effect (prepare_math_libraries)
    assert env["threads"]["OMP_NUM_THREADS (after import paddle)"] == os.environ["OMP_NUM_THREADS"]
    assert env["threads"]["MKL_DEBUG_CPU_TYPE"] == os.environ.get("MKL_DEBUG_CPU_TYPE")
    assert "torch.backends.mkldnn.is_available" in env["onednn"]
    assert env["numerics_pinned"]["torch.backends.cuda.matmul.allow_tf32"] is False

    md = (out / "report.md").read_text()
    assert md.startswith("# CoNR parity report: PASS")
    assert "| # | layer output | type | shape | max abs | max rel | mean abs | scaled | tolerance | ok |" in md
    assert "`shader.warp#0`" in md and "## Environment" in md

    png = cv2.imread(str(out / "report.png"), cv2.IMREAD_UNCHANGED)
    assert png is not None and png.shape[0] >= 800 and png.shape[1] >= 1200
    assert float(png[..., :3].std()) > 10  # not a blank canvas
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def _warp_align_corners_false(x, flow):
    """The planted port fault: `conr_paddle.warp.warp` with the other grid geometry (align_corners=False)."""
    import paddle
    import paddle.nn.functional as F

    from conr_paddle.warp import base_grid

    n, _, h, w = x.shape
    scaled = paddle.concat([flow[:, 0:1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)], axis=1)
    grid = (base_grid(n, h, w, flow) + scaled).transpose([0, 2, 3, 1]).astype(x.dtype)  # (N, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _plant_warp_align_corners_false(pm, paddle_states=None):
    """The one planted bug, through the injection the engines use: the same parameters computing with an `Ops`
    whose warp is `_warp_align_corners_false` (`CoNR.with_ops`; the grouped warps keep the right one)."""
    from dataclasses import replace

    planted = pm.with_ops(replace(pm.ops, warp=_warp_align_corners_false))
    assert planted.shader.warp.ops.warp is _warp_align_corners_false
    assert planted.shader.warp_grouped.ops.warp_grouped is pm.ops.warp_grouped
    assert planted.shader.decoder_blocks[0].conv0[0].weight is pm.shader.decoder_blocks[0].conv0[0].weight
    return planted


@pytest.mark.slow  # a full layer-by-layer verify run
def test_flipped_align_corners_in_warp_is_found_at_the_warp(weights_dir, pdparams_dir, tmp_path, capsys, monkeypatch,
                                                           torch_model, paddle_model):
    _plant_in_session_models(monkeypatch, torch_model, paddle_model, _plant_warp_align_corners_false)
    out = tmp_path / "report"
    rc = _verify(weights_dir, pdparams_dir, out, "--single-step", "--truth", "none")
    stdout = capsys.readouterr().out
    assert rc == 1, stdout
    report = _report(out)
    s = report["summary"]
    assert not report["passed"]
    assert s["first_failing_layer"].startswith("shader.warp#"), s["first_failing_layer"]
    assert s["first_failing_layer"] in stdout
    # run alone on the reference's own input, the patched warp is wrong by itself: a local error, not carried
    assert s["first_failing_local"].startswith("shader.warp#"), s["first_failing_local"]
    assert s["parameters_differing"] == []  # the weights are fine; the code is not
    rows = {r["key"]: r for r in report["layers"]}
    first = rows[s["first_failing_layer"]]
    assert all(r["ok"] for r in report["layers"][: first["index"]])
    assert "local" in first and not first["local"]["ok"]
    md = (out / "report.md").read_text()
    assert md.startswith("# CoNR parity report: FAIL") and f"`{s['first_failing_layer']}`" in md


def _take_perturbed_tensor(pm, paddle_states):
    """The twin's `shader.<PERTURBED_TENSOR>` replaced by a new parameter holding what verify read from the perturbed
    folder (the session's parameter stays as it is): the twin computes with exactly the perturbed file's weights."""
    import paddle

    conv = pm.shader.decoder_blocks[2].conv0[0]
    value = np.asarray(paddle_states["shader"][PERTURBED_TENSOR])
    conv.add_parameter("weight", paddle.create_parameter(
        list(value.shape), "float32", default_initializer=paddle.nn.initializer.Assign(value)))
    assert np.array_equal(conv.weight.numpy(), value)
    return pm


@pytest.mark.slow  # a full layer-by-layer verify run
def test_perturbed_tensor_is_named_and_found_in_its_layer(weights_dir, perturbed_dir, tmp_path, capsys, monkeypatch,
                                                          torch_model, paddle_model):
    _plant_in_session_models(monkeypatch, torch_model, paddle_model, _take_perturbed_tensor)
    out = tmp_path / "report"
    rc = _verify(weights_dir, perturbed_dir, out, "--truth", "none")
    stdout = capsys.readouterr().out
    assert rc == 1, stdout
    report = _report(out)
    s = report["summary"]
    assert s["parameters_differing"] == [f"shader.{PERTURBED_TENSOR}"]
    (bad,) = [p for p in report["parameters"] if not p["ok"]]
    assert bad["differing"] == 1 and bad["max_abs"] == pytest.approx(1e-2, rel=1e-3)
    assert s["first_failing_layer"].startswith("shader.decoder_blocks.2."), s["first_failing_layer"]
    assert s["first_failing_layer"] == "shader.decoder_blocks.2.conv0.0#0"
    assert f"shader.{PERTURBED_TENSOR}" in (out / "report.md").read_text()


def test_bad_input_is_one_line_and_exit_2(weights_dir, tmp_path, capsys):
    rc = main(["verify", "--torch", str(weights_dir), "--paddle", str(tmp_path / "nowhere"),
               "--report", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and "nowhere" in err[0]
    rc = main(["verify", "--torch", str(weights_dir), "--paddle", str(weights_dir), "--size", "100",
               "--report", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "multiple of 128" in err[0]
    assert not (tmp_path / "r").exists()


def test_more_views_than_the_sheet_has_is_refused(samples, tmp_path, capsys):
    """Issue 23, finding 14: `--views 100` ran with the sample's 4 views and exited 0 without a word. Refused
    before any model is loaded (the weights folders here are empty: a run that got that far would name them)."""
    sheet = tmp_path / "sheet"
    sheet.mkdir()
    for view in sorted(samples.character_sheet.glob("*.png"))[:3]:
        (sheet / view.name).write_bytes(view.read_bytes())
    empty = tmp_path / "empty"
    empty.mkdir()
    for extra, where, count in (([], "the built-in sample's character sheet", 4),
                                (["--character-sheet", str(sheet), "--poses", str(samples.poses)], str(sheet), 3)):
        rc = main(["verify", "--torch", str(empty), "--paddle", str(empty), "--size", "128", "--views", "100",
                   "--report", str(tmp_path / "r"), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and err == [f"error: --views 100: {where} has only {count} view(s); pass --views {count} "
                                   "or fewer"], err
    assert not (tmp_path / "r").exists()


def test_help_runs_as_a_module():
    proc = subprocess.run([sys.executable, "-m", "convert", "verify", "--help"], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--torch", "--paddle", "--size", "--views", "--character-sheet", "--poses", "--fp64",
                 "--single-step", "--seed", "--report"):
        assert flag in proc.stdout


def _plant_in_session_models(monkeypatch, torch_model, paddle_model, plant):
    """Replace verify's model builder: verify computes with the session's `torch_model` and
    `plant(twin, paddle_states)`, where `twin` is a new Paddle CoNR holding the session model's parameter tensors
    (`CoNR.with_ops`) and `paddle_states` what verify read from `--paddle`; `plant` changes the twin only (its layers
    are its own, so a changed epsilon, norm kernel or replaced parameter never reaches the session's model)."""
    import convert.verify as verify_module

    def build(torch, paddle, torch_states, paddle_states, dtype, device):
        assert (dtype, device) == ("float32", "cpu")  # what the session's models are
        return torch_model, plant(paddle_model.with_ops(paddle_model.ops), paddle_states)

    monkeypatch.setattr(verify_module, "build_models", build)


@pytest.mark.slow  # one full layer-by-layer verify run for two planted norm faults in independent networks
def test_norm_faults_are_found_each_in_its_own_network(weights_dir, pdparams_dir, tmp_path, capsys, monkeypatch,
                                                      torch_model, paddle_model):
    """Two faults, one report (the sheet parser and the pose encoder never see each other's outputs, so each
    network's first failing row is its own fault's; the clean run above shows every row passes without them):
    - instance-norm epsilon 1e-3 in the sheet parser: the first failing layer of the report is the parser's first
      norm, or the container that holds it (the sheet is parsed first);
    - Paddle's own float32 instance-norm kernel (the loss this project works around) in the pose encoder: the
      referee sees Paddle drift from the truth at the encoder's first norm, its first failing row."""
    from conr_paddle.layers import AccurateInstanceNorm2D, set_norm_statistics

    def plant(pm, paddle_states):
        for layer in pm.udpparsernet.sublayers():
            if isinstance(layer, AccurateInstanceNorm2D):
                layer._epsilon = 1e-3
        assert set_norm_statistics(pm.target_pose_encoder, "native") > 0
        return pm

    _plant_in_session_models(monkeypatch, torch_model, paddle_model, plant)
    rc = _verify(weights_dir, pdparams_dir, tmp_path / "report")
    assert rc == 1, capsys.readouterr().out
    report = _report(tmp_path / "report")
    first = report["summary"]["first_failing_layer"]
    # was test_instance_norm_epsilon_1e_3_is_found: the parser's fault is the report's first failing layer
    assert first.startswith("udpparsernet.backbone."), first
    # was test_native_float32_instance_norm_is_found (where the encoder's norm was the report's first failing
    # layer, every parser row passing, as the clean run shows): the encoder's first failing row is its first norm
    encoder = [r["key"] for r in report["layers"] if r["network"] == "target_pose_encoder" and not r["ok"]]
    assert encoder and encoder[0].startswith("target_pose_encoder.backbone.1.norm"), encoder[:3]


@pytest.mark.slow
def test_badly_conditioned_world_calls_in_the_referee_above_128px(tmp_path_factory):
    """256 px (no referee by default), the "wide" weight draw, 1 view: torch fp32 itself is far from its float64 run
    there, so the fixed per-stage bounds fail on a correct port (RGBA 2.9e-3 against torch, bound 1e-4; from the
    truth, Paddle 3.4e-4 and torch 2.8e-3; measured with the float16-rounded draw); `--truth auto` then calls in
    the float64 referee, which finds Paddle closer to the truth than torch and passes.

    The verify run is the command in a child process (nothing is planted here): its float32 and float64 model pairs
    and 256 px layer records (~6 GB) are never part of the pytest process, which holds the session's models. The
    draw is written as float16 (`write_seeded_weights(float_dtype=torch.float16)`: the same world to 3 significant
    digits, which is what its conditioning rests on; 0.68 GB written instead of 1.35 GB with its conversion)."""
    import torch

    from conr_common.verification.draws import DRAWS
    from conr_torch_ref.seeded import write_seeded_weights
    from convert.conversion import convert_checkpoints

    torch_dir = write_seeded_weights(tmp_path_factory.mktemp("wide_official"), DRAWS["wide"],
                                     float_dtype=torch.float16)
    paddle_dir = tmp_path_factory.mktemp("wide_paddle")
    convert_checkpoints("torch2paddle", torch_dir, paddle_dir, fmt="pdparams", force=True)
    out = tmp_path_factory.mktemp("wide_report")
    release_models()  # the draw's tensors, freed, back to the OS before the child's ~6 GB
    rc, stdout, stderr = _verify_command(torch_dir, paddle_dir, out, "--size", "256", "--views", "1")
    report = _report(out)
    assert rc == 0, stdout + stderr[-2000:]
    assert report["settings"]["truth_escalated"] is True and report["settings"]["truth"] == "fp64"
    assert "referee was called in" in stdout
    assert report["render"]["max_abs"] > report["tolerances"]["rgba"]  # the fixed bound alone would have failed
    acc = report["accuracy"]
    assert acc["ratio"] <= 1.0, acc
    assert "called in" in (out / "report.md").read_text()
