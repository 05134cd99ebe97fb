"""`python -m conr_app cache [--prune]` (`conr_engines.cache_entries`): every folder of the graph cache listed with
what it is and why it is stale, and a prune that removes exactly the stale folders, never one whose writer holds its
lock. The cache is built here from meta.json files alone, as the engines write them (no export: the listing reads
nothing else)."""
from __future__ import annotations

import fcntl
import json
from pathlib import Path

import paddle
import pytest

from conr_app.cli import main
from conr_common.platform.versions import dist_version
from conr_engines.cache_entries import cache_entries, prune
from conr_engines.export.cache import EXPORT_FORMAT
from conr_engines.export.program import GraphParams
from conr_engines.onnx.contract import ONNX_FORMAT

WEIGHTS = "ab" * 32
STEP = GraphParams(("conv2d_1.w_0", "conv2d_1.b_0"), ("shader.a.weight", "shader.a.bias"), ((8, 4, 3, 3), (8,)))
POSE = GraphParams(("conv2d_9.w_0",), ("target_pose_encoder.b.weight",), ((4, 4, 1, 1),))


def _folder(root: Path, name: str, meta: dict | None, payload: int = 1000) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "data.bin").write_bytes(b"\0" * payload)
    if meta is not None:
        (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _graph(graph: str, params: GraphParams, **changed) -> dict:
    return {"graph": graph, "weights": WEIGHTS, "size": 128, "views": 2, "batch": 1, "precision": "fp32",
            "warp": "grid_sample", "norm": "float64", "format": EXPORT_FORMAT, "paddle": paddle.__version__,
            "params": params.to_json(), **changed}


def _params(params: GraphParams, **changed) -> dict:
    return {"graph": "params", "weights": WEIGHTS, "format": EXPORT_FORMAT, "paddle": paddle.__version__,
            "record": params.digest(), "count": len(params.names), **changed}


@pytest.fixture()
def cache(tmp_path) -> Path:
    """One folder of every kind: current, stale for each reason, and kept."""
    root = tmp_path / "cache"
    _folder(root, "a0step", _graph("step", STEP))
    _folder(root, "a1params", _params(STEP), payload=5000)
    _folder(root, "a2params", _params(POSE))  # its pose graph folder was removed
    _folder(root, "a3step", _graph("step", STEP, format=EXPORT_FORMAT - 1))
    _folder(root, "a4pose", _graph("pose", POSE, paddle="0.0.1"))
    _folder(root, "a5step", None)  # an export that never finished
    _folder(root, "a0step.tmp-x1y2", None)  # a killed writer's temporary sibling
    onnx = {"weights": WEIGHTS, "size": 128, "views": 2, "batch": 1, "opset": 17, "engine": "onnxruntime",
            "format": ONNX_FORMAT, "paddle": paddle.__version__, "paddle2onnx": dist_version("paddle2onnx")}
    _folder(root, "onnx-b0", onnx)
    _folder(root, "onnx-b1", dict(onnx, format=ONNX_FORMAT + 1))
    _folder(root, "ops", None)
    _folder(root, "serve_seeded_weights", None)
    return root


EXPECTED = {  # folder -> (kind, the words of its stale reason, or None when current)
    "a0step": ("graph", None),
    "a1params": ("parameters", None),
    "a2params": ("parameters", "read by no graph folder"),
    "a3step": ("graph", f"export format {EXPORT_FORMAT - 1}"),
    "a4pose": ("graph", "Paddle 0.0.1"),
    "a5step": ("incomplete", "never finished"),
    "a0step.tmp-x1y2": ("temporary", "killed"),
    "onnx-b0": ("onnx", None),
    "onnx-b1": ("onnx", f"export format {ONNX_FORMAT + 1}"),
    "ops": ("other", None),
    "serve_seeded_weights": ("other", None),
}


def test_every_folder_is_named_with_its_kind_and_why_it_is_stale(cache):
    entries = {e.path.name: e for e in cache_entries(cache)}
    assert set(entries) == set(EXPECTED)
    for name, (kind, reason) in EXPECTED.items():
        entry = entries[name]
        assert entry.kind == kind, (name, entry)
        assert (entry.stale is None) if reason is None else (reason in (entry.stale or "")), (name, entry)
    assert entries["a1params"].bytes == 5000 + len((cache / "a1params" / "meta.json").read_bytes())
    assert "128 px" in entries["a0step"].what and WEIGHTS[:12] in entries["a0step"].what
    assert cache_entries(cache / "absent") == []


def test_prune_removes_the_stale_folders_and_passes_over_a_locked_one(cache):
    (cache / "a3step.lock").touch()
    (cache / "a4pose.lock").touch()
    with open(cache / "a4pose.lock", "a") as writer:  # an export under way holds its folder's lock
        fcntl.flock(writer, fcntl.LOCK_EX)
        removed, busy = prune(cache)
    stale = {name for name, (_, reason) in EXPECTED.items() if reason is not None}
    assert {e.path.name for e in busy} == {"a4pose"}
    assert {e.path.name for e in removed} == stale - {"a4pose"}
    left = {p.name for p in cache.iterdir() if p.is_dir()}
    assert left == (set(EXPECTED) - stale) | {"a4pose"}
    # lock files stay (deleting one races with a waiter); none was created for folders that had none
    assert sorted(p.name for p in cache.glob("*.lock")) == ["a3step.lock", "a4pose.lock"]
    assert (cache / "a1params" / "data.bin").is_file()  # what a current graph reads is untouched
    # the next prune, with no writer, removes the one passed over and nothing else
    removed, busy = prune(cache)
    assert [e.path.name for e in removed] == ["a4pose"] and not busy


def test_command_lists_prunes_and_refuses_a_file(cache, tmp_path, capsys):
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert sum(1 for line in lines if "[stale:" in line) == 6 and sum(1 for line in lines if "[current]" in line) == 5
    assert f"{cache}: 11 folder(s)" in out and "6 stale" in out and "--prune" in out
    assert (cache / "a3step").is_dir()  # listing removes nothing
    assert main(["cache", "--cache-dir", str(cache), "--prune"]) == 0
    assert "removed 6 folder(s)" in capsys.readouterr().out
    assert {p.name for p in cache.iterdir() if p.is_dir()} == {"a0step", "a1params", "onnx-b0", "ops",
                                                               "serve_seeded_weights"}
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    assert main(["cache", "--cache-dir", str(not_a_folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(not_a_folder) in err and "Traceback" not in err, err
    assert main(["cache", "--cache-dir", str(tmp_path / "none")]) == 0
    assert "0 folder(s)" in capsys.readouterr().out and not (tmp_path / "none").exists()


def test_a_parameter_folder_is_current_while_a_current_graph_reads_it(cache):
    """a2params (POSE's record) is stale only because no graph reads it: a current pose graph of the same weights
    makes it current; one of other weights does not."""
    _folder(cache, "a6pose", _graph("pose", POSE, weights="cd" * 32))
    assert {e.path.name: e for e in cache_entries(cache)}["a2params"].stale is not None
    _folder(cache, "a7pose", _graph("pose", POSE))
    entries = {e.path.name: e for e in cache_entries(cache)}
    assert entries["a2params"].stale is None and entries["a7pose"].stale is None
