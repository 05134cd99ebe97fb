"""ONNX export of both frameworks and the onnxruntime engine (issue 14), at 128 px / 2 views, seeded weights.

Skipped, with the reason, when the [onnx] extra (onnx, onnxruntime, paddle2onnx) is not installed.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the [onnx] extra is not installed (pip install -e '.[onnx]')")
pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed (pip install -e '.[onnx]')")
pytest.importorskip("paddle2onnx", reason="the [onnx] extra is not installed (pip install -e '.[onnx]')")

from conr_common.verification.compare import diff  # noqa: E402
from conr_common.verification.tolerances import (  # noqa: E402
    ONNX_RGBA_ATOL,
    ONNX_SHEET_SCALED_FP32,
    ONNX_STEP_SCALED_FP32,
    PIXEL_MAX_LEVELS,
    PIXEL_MIN_IDENTICAL,
)
from parity_tests.harness import release_models  # noqa: E402

SIZE, VIEWS = 128, 2


def _in_session_cache(runner_class, paddle_model, weights_label, graph_cache, kept: str, **options):
    """`runner_class(..., **options).<kept>`: a runner of the session weights at SIZE / VIEWS built on the session
    cache (which it fills unless an earlier test did), kept only for that attribute, then dropped with its memory."""
    runner = runner_class(paddle_model, weights_label, size=SIZE, views=VIEWS, cache_dir=graph_cache, **options)
    path = getattr(runner, kept)
    del runner
    release_models()
    return path


@pytest.fixture(scope="module")
def predictor_params(paddle_model, weights_label, graph_cache) -> Path:
    """The parameter file the predictor's graphs of the session weights keep in the session cache (exported at
    SIZE / VIEWS unless an earlier module left them there: test_worlds does in a full run)."""
    from conr_engines.inference.predictor import PredictorRunner

    return _in_session_cache(PredictorRunner, paddle_model, weights_label, graph_cache, "params_file")


@pytest.fixture(scope="module")
def engine_onnx(paddle_model, weights_label, graph_cache, predictor_params) -> dict[str, Path]:
    """The onnxruntime engine's sheet and step graphs of the session weights at SIZE / VIEWS in the session cache
    (made here unless an earlier test made them: test_bench_smoke's child makes the step in a full run), the step
    reading its parameters from the predictor's file (`predictor_params`). {graph: its cache folder}, left in the
    cache for the engine tests."""
    from conr_engines.onnx.runner import OnnxRunner

    return _in_session_cache(OnnxRunner, paddle_model, weights_label, graph_cache, "folders", sheet_parser="onnx")


@pytest.fixture(scope="module")
def paddle_onnx(pdparams_dir, graph_cache, engine_onnx, tmp_path_factory):
    """The Paddle side's ONNX export through the session cache (`export_onnx(cache_dir=...)`), whose engine export
    of the same weights and settings (`engine_onnx`) it links instead of exporting again. Removed when this module
    is done (the torch side's 0.5 GB too)."""
    from convert.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "paddle"
    meta = export_onnx("paddle", pdparams_dir, out, size=SIZE, views=VIEWS, graphs="sheet,step",
                       cache_dir=graph_cache)
    yield out, meta
    shutil.rmtree(out)


@pytest.fixture(scope="module")
def torch_onnx(weights_dir, tmp_path_factory):
    """The torch side's ONNX export (removed when this module is done, as `paddle_onnx`)."""
    from convert.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "torch"
    meta = export_onnx("torch", weights_dir, out, size=SIZE, views=VIEWS, graphs="sheet,step")
    yield out, meta
    shutil.rmtree(out)


def _stand_in(cache: Path, label: str, views: int, graph: str = "step", content: bytes = b"stand-in") -> Path:
    """A cache entry of the engine's `graph` (128 px, batch 1, opset 17) holding `content` as its file, written by the
    cache's own writer; its folder. A runner built on `cache` then finds that graph and exports nothing for it."""
    from conr_engines.export.cache import cached_folder
    from conr_engines.onnx.runner import ONNX_SUFFIXES, onnx_cache_entry

    entry, identity = onnx_cache_entry(cache, label, SIZE, views, 1, 17, graph)

    def fill(folder: Path) -> dict:
        (folder / f"{graph}.onnx").write_bytes(content)
        return identity

    cached_folder(entry, fill, ONNX_SUFFIXES)
    return entry


def test_export_links_the_engine_graphs_only_when_the_cache_holds_them_unchanged(tmp_path):
    """`export-onnx --paddle --cache-dir` takes each graph the onnxruntime engine exported from the same weights with
    the same settings (`_engine_graphs`), hard-linked when its sha256 matches meta.json; a graph the cache lacks, of
    other settings, or whose file was changed is left out (the export then traces it itself), and the changed
    entry is removed as the engine would. Cache entries written by the cache's own writer, small stand-in files;
    the engine exported sheet and step, not pose (it exports each graph when first needed)."""
    from convert.onnx_export import _engine_graphs

    root, shape = tmp_path / "cache", (SIZE, VIEWS, 1, 17)
    root.mkdir()
    entries = {graph: _stand_in(root, "weights-a", VIEWS, graph, graph.encode() * 1000) for graph in ("sheet", "step")}
    assert entries["sheet"] != entries["step"]
    out = tmp_path / "out"
    out.mkdir()
    assert _engine_graphs(root, "weights-a", shape, ["sheet", "step", "pose"], out) == {"sheet": 5000, "step": 4000}
    assert all(os.path.samefile(out / f"{g}.onnx", entries[g] / f"{g}.onnx") for g in ("sheet", "step"))
    assert not (out / "pose.onnx").exists()
    log = (out / "export.log").read_text()
    assert f"sheet: linked from {entries['sheet']}" in log and f"step: linked from {entries['step']}" in log, log
    for label, other in (("weights-b", shape), ("weights-a", (SIZE, 4, 1, 17)), ("weights-a", (SIZE, VIEWS, 1, 18))):
        none = tmp_path / f"none-{label}-{other[1]}-{other[3]}"
        none.mkdir()
        assert _engine_graphs(root, label, other, ["sheet", "step"], none) == {} and not any(none.iterdir())
    (entries["step"] / "step.onnx").write_bytes(b"changed")
    later = tmp_path / "later"
    later.mkdir()
    assert _engine_graphs(root, "weights-a", shape, ["sheet", "step"], later) == {"sheet": 5000}
    assert sorted(p.name for p in later.iterdir()) == ["export.log", "sheet.onnx"] and not entries["step"].exists()


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    from convert.cli import main

    assert main(["export-onnx", "--paddle", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "nope") in err, err
    # --cache-dir is an option of its own (parsed; the weights are what is wrong)
    assert main(["export-onnx", "--paddle", str(tmp_path / "nope"), "-o", str(tmp_path / "o"),
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "nope") in err, err
    assert main(["export-onnx", "--torch", str(tmp_path), "-o", str(tmp_path / "o"), "--opset", "21"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--opset 21" in err or "missing" in err, err
    assert main(["export-onnx", "--torch", str(tmp_path), "-o", str(tmp_path / "o"), "--graphs", "x"]) == 2
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # ONNX exports
@pytest.mark.parametrize("side", ["paddle", "torch"])
def test_export_checked_named_and_measured(side, paddle_onnx, torch_onnx, engine_onnx, predictor_params):
    """Standard ops only, checker passes, meaningful names, meta.json complete; measured figures within bounds.
    The Paddle side's files are the engine's export in the cache, linked (the same files on disk), and that export
    read the step's parameters from the predictor's file instead of writing them."""
    import onnx

    folder, meta = paddle_onnx if side == "paddle" else torch_onnx
    assert {"sheet.onnx", "step.onnx", "meta.json", "export.log"} <= {p.name for p in folder.iterdir()}
    log = (folder / "export.log").read_text()
    assert ("linked from" in log) == (side == "paddle"), log[-2000:]
    if side == "paddle":
        for graph in ("sheet", "step"):
            assert os.path.samefile(folder / f"{graph}.onnx", engine_onnx[graph] / f"{graph}.onnx"), graph
        assert f"step: parameters read from {predictor_params}" in (engine_onnx["step"] / "export.log").read_text()
    assert meta["opset"] == 17 and meta["framework"] == side and len(meta["weights_sha256"]) == 64
    assert meta["versions"]["onnx"] == "1.17.0" and meta["versions"]["paddle2onnx"]
    for graph in ("sheet", "step"):
        model = onnx.load(str(folder / f"{graph}.onnx"), load_external_data=False)
        onnx.checker.check_model(model)
        assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
        assert [o.name for o in model.graph.output] == list(meta["graphs"][graph]["outputs"])
    assert "fetch_name_0" not in meta["graphs"]["step"]["outputs"]
    measured = meta["measured"]
    for name, row in measured["sheet"].items():
        for ref in ("max_abs_vs_torch", "max_abs_vs_paddle_eager"):
            scaled = row[ref] / row["max_abs_value"]
            assert scaled <= ONNX_SHEET_SCALED_FP32, f"{side} sheet {name} {ref}: {scaled:.2e} scaled"
    for name, row in measured["step"].items():
        for ref in ("max_abs_vs_torch", "max_abs_vs_paddle_eager"):
            if name == "rgba":
                assert row[ref] <= ONNX_RGBA_ATOL, f"{side} rgba {ref}: {row[ref]:.2e}"
            else:
                scaled = row[ref] / row["max_abs_value"]
                assert scaled <= ONNX_STEP_SCALED_FP32, f"{side} step {name} {ref}: {scaled:.2e} scaled"
    # nothing was installed or fetched: paddle2onnx's optimiser (polygraphy, which pip-installs) never ran
    assert "polygraphy" not in sys.modules
    assert os.environ.get("POLYGRAPHY_AUTOINSTALL_DEPS") != "1"


@pytest.mark.slow  # ONNX exports
def test_paddle_and_torch_onnx_agree_on_one_runtime(paddle_onnx, torch_onnx, samples):
    """The two ONNX files of one checkpoint, op for op on onnxruntime, on identical inputs per graph."""
    from conr_engines.onnx.runner import make_session
    from parity_tests.harness import pose_input, sheet_input

    sheet = sheet_input(samples, SIZE, VIEWS)
    xyz, alpha, _ = pose_input(samples, SIZE, 1)
    outs = {}
    for side, (folder, _) in (("paddle", paddle_onnx), ("torch", torch_onnx)):
        s = make_session(folder / "sheet.onnx")
        names = [o.name for o in s.get_outputs()]
        outs[side, "sheet"] = dict(zip(names, s.run(names, {"sheet": sheet})))
    feeds = {"xyz": xyz, "alpha": alpha, **outs["torch", "sheet"]}  # the same features into both step graphs
    for side, (folder, _) in (("paddle", paddle_onnx), ("torch", torch_onnx)):
        s = make_session(folder / "step.onnx")
        names = [o.name for o in s.get_outputs()]
        outs[side, "step"] = dict(zip(names, s.run(names, feeds)))
    for name, ref in outs["torch", "sheet"].items():
        assert diff(ref, outs["paddle", "sheet"][name]).scaled <= ONNX_SHEET_SCALED_FP32, name
    for name, ref in outs["torch", "step"].items():
        got = outs["paddle", "step"][name]
        if name == "rgba":
            assert np.abs(ref - got).max() <= ONNX_RGBA_ATOL
        else:
            assert diff(ref, got).scaled <= ONNX_STEP_SCALED_FP32, name
    # renders with contrast: agreement on a flat image would prove little
    assert outs["paddle", "step"]["rgba"].std(axis=(0, 2, 3)).max() > 1e-2


@pytest.mark.slow  # ONNX exports
def test_render_engine_onnxruntime_matches_predictor(pdparams_dir, samples, graph_cache, engine_onnx, tmp_path,
                                                     capsys):
    """`render --engine onnxruntime` writes frames >= 99.9% identical (max 1 level) to the predictor's; its
    export is cached (a later construction, here with the ONNX sheet graph of `engine_onnx`, reuses it and needs
    no model), and a render of UDP files exports no pose graph. Both engines use the session cache
    (`--cache-dir`): the predictor's graphs at 128 px / 2 views are test_predictor_parity.py's."""
    import cv2

    from conr_common.verification.compare import pixel_agreement
    from conr_app.cli import main
    from conr_common.weights.checkpoints import check_weights_dir, weights_hash
    from conr_engines.onnx.runner import OnnxRunner, onnx_cache_entry

    sheet = tmp_path / "sheet"
    sheet.mkdir()
    for p in sorted(samples.character_sheet.iterdir())[:VIEWS]:
        shutil.copy(p, sheet / p.name)
    poses = tmp_path / "poses"
    poses.mkdir()
    for name in ("0.npz", "1.npz"):
        shutil.copy(samples.poses / name, poses / name)
    frames = {}
    for engine in ("predictor", "onnxruntime"):
        out = tmp_path / engine
        args = ["render", "--weights", str(pdparams_dir), "--character-sheet", str(sheet), "--poses", str(poses),
                "--out", str(out), "--size", str(SIZE), "--engine", engine, "--cache-dir", str(graph_cache),
                "--quiet"]
        assert main(args) == 0, capsys.readouterr().err
        assert f"({engine}" in capsys.readouterr().out
        frames[engine] = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(out.glob("*.png"))}
    assert set(frames["onnxruntime"]) == {"0.png", "1.png"}
    for name, ref in frames["predictor"].items():
        same, levels = pixel_agreement(ref, frames["onnxruntime"][name])
        assert same >= PIXEL_MIN_IDENTICAL and levels <= PIXEL_MAX_LEVELS, (name, same, levels)
    label = weights_hash(check_weights_dir(pdparams_dir))
    again = OnnxRunner(None, label, size=SIZE, views=VIEWS, cache_dir=graph_cache, sheet_parser="onnx")
    assert not again.exported and again.folders == engine_onnx
    pose_folder, _ = onnx_cache_entry(graph_cache, label, SIZE, VIEWS, 1, again.opset, "pose")
    assert not pose_folder.exists()
    # the step's parameters were read from the predictor's parameter file in the same cache, not written again
    log = (again.folder / "export.log").read_text()
    assert any(f"step: parameters read from {p}" in log for p in graph_cache.glob("*/params.pdiparams")), log[-2000:]


def test_pose_graph_exported_on_the_first_pose_image(samples, tmp_path):
    """The engine exports its pose graph on the first `parse_pose`, from the parser it kept after the caller
    dropped the model, into a folder of its own whose key has no view count (a runner of another view count finds
    it); the UDP it parses agrees with eager Paddle's. On the small CoNR (`tiny_conr`, whose step graph the
    official-shape contract does not describe: stand-in step entries, `_stand_in`): the mechanism and the
    float32 parser's numerics do not depend on the official widths (the official pose graph is 0.23 GB)."""
    import paddle

    from conr_common.platform.errors import ConrInternalError
    from conr_engines.onnx.runner import OnnxRunner
    from parity_tests.harness import pose_image_input
    from parity_tests.tiny_conr import tiny_paddle_model

    model = tiny_paddle_model(5)
    model.eval()
    rgb = pose_image_input(samples, SIZE)
    with paddle.no_grad():
        eager = model.parse_pose(paddle.to_tensor(rgb)).numpy()
    for views in (VIEWS, 1):
        _stand_in(tmp_path, "tiny-5", views)
    runner = OnnxRunner(model, "tiny-5", size=SIZE, views=VIEWS, cache_dir=tmp_path)
    del model  # as the renderer does once a fast engine is built
    assert not runner.exported and set(runner.folders) == {"step"}
    udp = runner.parse_pose(rgb)
    assert runner.pose_exported and set(runner.folders) == {"step", "pose"}
    assert udp.shape == eager.shape and eager.std() > 1e-2  # a parse with contrast
    # the parser of the sheet graph, float32 on onnxruntime: the sheet graph's bound (tolerances.py)
    assert diff(eager, udp).scaled <= ONNX_SHEET_SCALED_FP32, diff(eager, udp)
    assert np.array_equal(runner.parse_pose(rgb), udp)
    other = OnnxRunner(tiny_paddle_model(5), "tiny-5", size=SIZE, views=1, cache_dir=tmp_path)
    assert np.array_equal(other.parse_pose(rgb), udp) and not other.pose_exported
    assert other.folders["pose"] == runner.folders["pose"] and other.folders["step"] != runner.folders["step"]
    # built without a model (its sheet and step graphs cached) on a cache without the pose graph: the first pose
    # image is an internal error naming the step, not a crash
    for graph in ("step", "sheet"):
        _stand_in(tmp_path, "tiny-6", VIEWS, graph)
    without = OnnxRunner(None, "tiny-6", size=SIZE, views=VIEWS, cache_dir=tmp_path, sheet_parser="onnx")
    with pytest.raises(ConrInternalError, match="exporting the ONNX pose graph"):
        without.parse_pose(rgb)


@pytest.mark.slow  # ONNX exports
def test_verify_onnx_column(paddle_onnx, torch_model, paddle_model, samples, tmp_path, weights_dir, pdparams_dir,
                            capsys):
    """verify's third column: every exported output against torch, eager Paddle and the float64 truth; a folder
    that is not an export is a one-line input error."""
    from convert.cli import main
    from convert.onnx_verify import onnx_column, onnx_verdict_line
    from parity_tests.harness import pose_input, sheet_input

    assert main(["verify", "--torch", str(weights_dir), "--paddle", str(pdparams_dir), "--report",
                 str(tmp_path / "r"), "--size", str(SIZE), "--views", str(VIEWS), "--onnx", str(tmp_path)]) == 2
    assert "meta.json" in capsys.readouterr().err
    folder, meta = paddle_onnx
    sheet = sheet_input(samples, SIZE, VIEWS)
    xyz, alpha, _ = pose_input(samples, SIZE, 1)
    column = onnx_column(folder, meta, torch_model, paddle_model, sheet, xyz, alpha, use_truth=True)
    rows = {r["name"]: r for r in column["rows"]}
    assert set(rows) == {f"sheet.feat{i}" for i in range(5)} | {"sheet.reference", "step.rgba"} | {
        f"step.message{k}" for k in range(6)}
    for name, row in rows.items():
        if name.startswith("sheet."):
            assert row["vs_truth"]["scaled"] <= ONNX_SHEET_SCALED_FP32, (name, row["vs_truth"])
    assert "onnxruntime (paddle ONNX)" in onnx_verdict_line(column)
