"""`python -m conr_app cache [--prune]` (`conr_engines.cache_entries`): every folder of the graph cache listed with
what it is and why it is stale, and a prune that removes exactly the stale folders, never one whose writer holds its
lock. The cache is built here from meta.json files alone, as the engines write them (no export: the listing reads
nothing else)."""
from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path

import paddle
import pytest

from conr_app.cli import main
from conr_common.platform.versions import dist_version
from conr_engines.cache_entries import cache_entries, prune
from conr_engines.export.cache import EXPORT_FORMAT
from conr_engines.export.program import GraphParams
from conr_engines.onnx.contract import ONNX_CACHE_LAYOUT, ONNX_FORMAT

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
    return {"graph": graph, "key": "k", "weights": WEIGHTS, "size": 128, "views": 2, "batch": 1, "precision": "fp32",
            "warp": "grid_sample", "norm": "float64", "format": EXPORT_FORMAT, "paddle": paddle.__version__,
            "params": params.to_json(), **changed}


def _params(params: GraphParams, **changed) -> dict:
    return {"graph": "params", "key": "k", "weights": WEIGHTS, "format": EXPORT_FORMAT, "paddle": paddle.__version__,
            "record": params.digest(), "count": len(params.names), **changed}


def _key(label: str) -> str:
    """A folder name as the engines give them (24 hex digits of a cache key), one per label."""
    return hashlib.sha256(label.encode()).hexdigest()[:24]


# label -> folder name; the labels say what each folder is
NAMES = {label: _key(label) for label in ("step", "params", "orphan", "old_format", "old_paddle", "unfinished")}
NAMES.update({"temporary": f"{NAMES['step']}.tmp-x1y2", "onnx": f"onnx-{_key('onnx')}",
              "onnx_old": f"onnx-{_key('onnx_old')}", "onnx_layout1": f"onnx-{_key('onnx_layout1')}", "ops": "ops",
              "seeded": "serve_seeded_weights",
              "foreign": "notes", "foreign_meta": _key("foreign_meta")})


@pytest.fixture()
def cache(tmp_path) -> Path:
    """One folder of every kind: current, stale for each reason, kept, and someone else's."""
    root = tmp_path / "cache"
    _folder(root, NAMES["step"], _graph("step", STEP))
    _folder(root, NAMES["params"], _params(STEP), payload=5000)
    _folder(root, NAMES["orphan"], _params(POSE))  # its pose graph folder was removed
    _folder(root, NAMES["old_format"], _graph("step", STEP, format=EXPORT_FORMAT - 1))
    _folder(root, NAMES["old_paddle"], _graph("pose", POSE, paddle="0.0.1"))
    _folder(root, NAMES["unfinished"], None)
    _folder(root, NAMES["temporary"], None)  # a killed writer's temporary sibling
    onnx = {"weights": WEIGHTS, "size": 128, "views": 2, "batch": 1, "opset": 17, "engine": "onnxruntime",
            "graph": "step", "layout": ONNX_CACHE_LAYOUT,
            "format": ONNX_FORMAT, "paddle": paddle.__version__, "paddle2onnx": dist_version("paddle2onnx"),
            "key": "k"}
    _folder(root, NAMES["onnx"], onnx)
    _folder(root, NAMES["onnx_old"], dict(onnx, format=ONNX_FORMAT + 1))
    # the first layout: sheet, step and pose in one folder, no "graph" or "layout" in its meta.json
    _folder(root, NAMES["onnx_layout1"], {k: v for k, v in onnx.items() if k not in ("graph", "layout")})
    _folder(root, "ops", None)
    _folder(root, "serve_seeded_weights", None)
    _folder(root, "notes", None)  # a folder of the user's: not named like an export
    _folder(root, NAMES["foreign_meta"], {"format": 1})  # named like one, but its meta.json holds no cache key
    return root


EXPECTED = {  # label -> (kind, the words of its stale reason, or None when it stays)
    "step": ("graph", None),
    "params": ("parameters", None),
    "orphan": ("parameters", "read by no graph folder"),
    "old_format": ("graph", f"export format {EXPORT_FORMAT - 1}"),
    "old_paddle": ("graph", "Paddle 0.0.1"),
    "unfinished": ("incomplete", "never finished"),
    "temporary": ("temporary", "killed"),
    "onnx": ("onnx", None),
    "onnx_old": ("onnx", f"export format {ONNX_FORMAT + 1}"),
    "onnx_layout1": ("onnx", "cache layout 1"),
    "ops": ("other", None),
    "seeded": ("other", None),
    "foreign": ("other", None),
    "foreign_meta": ("other", None),
}
STALE = {NAMES[label] for label, (_, reason) in EXPECTED.items() if reason is not None}
KEPT = {NAMES[label] for label, (_, reason) in EXPECTED.items() if reason is None}


def test_every_folder_is_named_with_its_kind_and_why_it_is_stale(cache):
    entries = {e.path.name: e for e in cache_entries(cache)}
    assert set(entries) == set(NAMES.values())
    for label, (kind, reason) in EXPECTED.items():
        entry = entries[NAMES[label]]
        assert entry.kind == kind, (label, entry)
        assert (entry.stale is None) if reason is None else (reason in (entry.stale or "")), (label, entry)
    params = entries[NAMES["params"]]
    assert params.bytes == 5000 + len((params.path / "meta.json").read_bytes())
    assert "128 px" in entries[NAMES["step"]].what and WEIGHTS[:12] in entries[NAMES["step"]].what
    assert entries[NAMES["onnx"]].what.startswith("ONNX step graph"), entries[NAMES["onnx"]]
    assert cache_entries(cache / "absent") == []


def test_prune_removes_the_stale_folders_and_passes_over_a_locked_one(cache):
    busy_name = NAMES["old_paddle"]
    (cache / f"{NAMES['old_format']}.lock").touch()
    with open(cache / f"{busy_name}.lock", "a") as writer:  # an export under way holds its folder's lock
        fcntl.flock(writer, fcntl.LOCK_EX)
        removed, busy = prune(cache_entries(cache))
    assert {e.path.name for e in busy} == {busy_name}
    assert {e.path.name for e in removed} == STALE - {busy_name}
    assert {p.name for p in cache.iterdir() if p.is_dir()} == KEPT | {busy_name}
    # lock files stay (deleting one races with a waiter); none was created for folders that had none
    assert sorted(p.name for p in cache.glob("*.lock")) == sorted(f"{n}.lock" for n in (NAMES["old_format"], busy_name))
    assert (cache / NAMES["params"] / "data.bin").is_file()  # what a current graph reads is untouched
    # the next prune, with no writer, removes the one passed over and nothing else
    removed, busy = prune(cache_entries(cache))
    assert [e.path.name for e in removed] == [busy_name] and not busy


def test_command_lists_prunes_and_refuses_a_file(cache, tmp_path, capsys):
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert sum(1 for line in lines if "[stale:" in line) == len(STALE)
    assert sum(1 for line in lines if "[current]" in line) == len(KEPT)
    assert f"{cache}: {len(NAMES)} folder(s)" in out and f"{len(STALE)} stale" in out and "--prune" in out
    assert STALE <= {p.name for p in cache.iterdir()}  # listing removes nothing
    assert main(["cache", "--cache-dir", str(cache), "--prune"]) == 0
    assert f"removed {len(STALE)} folder(s)" in capsys.readouterr().out
    assert {p.name for p in cache.iterdir() if p.is_dir()} == KEPT
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    assert main(["cache", "--cache-dir", str(not_a_folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(not_a_folder) in err and "Traceback" not in err, err
    assert main(["cache", "--cache-dir", str(tmp_path / "none")]) == 0
    assert "0 folder(s)" in capsys.readouterr().out and not (tmp_path / "none").exists()


def test_a_parameter_folder_is_current_while_a_current_graph_reads_it(cache):
    """The orphan (POSE's record) is stale only because no graph reads it: a current pose graph of the same weights
    makes it current; one of other weights does not."""
    _folder(cache, _key("other_weights"), _graph("pose", POSE, weights="cd" * 32))
    assert {e.path.name: e for e in cache_entries(cache)}[NAMES["orphan"]].stale is not None
    _folder(cache, _key("pose"), _graph("pose", POSE))
    entries = {e.path.name: e for e in cache_entries(cache)}
    assert entries[NAMES["orphan"]].stale is None and entries[_key("pose")].stale is None
