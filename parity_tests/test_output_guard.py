"""One guard for every output path (issue 23, the "guard" findings 1, 2, 3, 6, 7, 8 and 13).

`conr_common.platform.outputs.check_output` decides, before anything loads, whether an output may be written given every
input of the command; `check_own_files` is the rule of --force (only what this toolkit's manifest lists is
replaced). Each test runs the command in-process on a case that did damage or failed late before, and checks the
one-line refusal (exit 2), that no model was loaded where that matters, and that every input file is unchanged.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from conr_common.contract.config import NETWORK_NAMES
from conr_common.platform.errors import ConrInputError
from conr_common.platform.outputs import FILE, SWAP, check_output, check_own_files
from parity_tests.harness import SMALLEST_NETWORKS, linked_folder


def _snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots` (following links: the bytes the inputs point at)."""
    out = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")) if Path(root).is_dir() else [Path(root)]:
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _paddle_main(args: list[str]) -> int:
    from conr_app.cli import main

    try:
        return main(args)
    except SystemExit as e:
        return int(e.code)


def _convert_main(args: list[str]) -> int:
    from convert.cli import main

    try:
        return main(args)
    except SystemExit as e:
        return int(e.code)


def _refused(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.fixture()
def no_model(monkeypatch):
    """Loading a model fails the test: the refusals below must come first."""
    from conr_app.rendering import render as render_module

    monkeypatch.setattr(render_module, "make_runner", lambda *a, **k: pytest.fail("model loaded before the check"))


@pytest.fixture()
def scene(tmp_path, samples, pdparams_dir):
    """One pose, the sample sheet and links to the converted weights, all under tmp_path."""
    poses = tmp_path / "poses"
    poses.mkdir()
    shutil.copy(samples.poses / "0.npz", poses / "0.npz")
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in NETWORK_NAMES:
        os.symlink(pdparams_dir / f"{name}.pdparams", weights / f"{name}.pdparams")
    return {"sheet": samples.character_sheet, "poses": poses, "weights": weights}


def _render(scene: dict, out: Path, *extra: str) -> list[str]:
    return ["render", "--weights", str(scene["weights"]), "--character-sheet", str(scene["sheet"]), "--poses",
            str(scene["poses"]), "--out", str(out), "--size", "128", "--engine", "eager", "--quiet", *extra]


# ---------------------------------------------------------------------------------------------- the guard itself
def test_guard_relations_kinds_and_links(tmp_path):
    inputs_dir = tmp_path / "in"
    inputs_dir.mkdir()
    image = tmp_path / "bg.png"
    image.write_bytes(b"x")
    inputs = {"--poses": inputs_dir, "--background": image, "--absent": None}
    for path, relation in ((inputs_dir, "is the --poses folder"), (inputs_dir / "sub", "lies inside the --poses"),
                           (tmp_path, "contains the --poses folder")):
        with pytest.raises(ConrInputError, match=relation):
            check_output(path, inputs, "--out")
    link = tmp_path / "link"
    link.symlink_to(inputs_dir)  # after resolving links
    (inputs_dir / "frames").mkdir()
    with pytest.raises(ConrInputError, match="is the --poses folder"):
        check_output(link / "frames", {"--poses": inputs_dir / "frames"}, "--out")
    with pytest.raises(ConrInputError, match="is the --background file"):
        check_output(image, inputs, "--video", kind=FILE)
    check_output(inputs_dir / "x", inputs, "--out", allow_inside={"--poses"})  # the converter's <SRC>/paddle
    with pytest.raises(ConrInputError, match="is a folder"):
        check_output(inputs_dir, {}, "--video", kind=FILE)
    with pytest.raises(ConrInputError, match="exists and is not a folder"):
        check_output(image, {}, "-o", kind=SWAP)
    with pytest.raises(ConrInputError, match="bg.png is a file, not a folder"):
        check_output(image / "frames", {}, "--out")
    check_output(tmp_path / "new" / "deeper", inputs, "--out")  # apart, absent, writable: accepted


def test_guard_counts_the_temporary_name(tmp_path):
    """A frame name that fits NAME_MAX but whose temporary does not is refused up front (the write would fail)."""
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    check_output(tmp_path / ("f" * name_max), {}, "--out")  # a folder: created under its own name
    with pytest.raises(ConrInputError, match="for the temporary name"):
        check_output(tmp_path / ("f" * (name_max - 10) + ".png"), {}, "output frame", kind=FILE)


def test_own_files_names_the_first_foreign_entry(tmp_path):
    (tmp_path / "meta.json").write_text("{}")
    (tmp_path / "b.txt").write_text("theirs")
    (tmp_path / "a.txt").write_text("theirs")
    (tmp_path / ".x.0a1b2c.123.0a1b2c3d.tmp").write_bytes(b"")  # a stale temporary of ours does not count
    with pytest.raises(ConrInputError, match=r"holds a\.txt \(and 1 more\), which this toolkit did not write"):
        check_own_files(tmp_path, {"meta.json"}, "-o")
    check_own_files(tmp_path, {"meta.json", "a.txt", "b.txt"}, "-o")


# ---------------------------------------------------------------------------------------------------- render
def test_video_onto_the_background_image_is_refused(scene, tmp_path, capsys, no_model):
    """Finding 2: `--video F --background F` replaced the background image with the video, exit 0."""
    background = tmp_path / "bg.mp4"  # an image file is an image whatever its suffix
    background.write_bytes(next(iter(sorted(Path(scene["sheet"]).iterdir()))).read_bytes())
    before = _snapshot(background, scene["poses"])
    rc = _paddle_main(_render(scene, tmp_path / "out", "--video", str(background), "--background", str(background)))
    _refused(capsys, rc, "--video", "is the --background file", str(background))
    assert _snapshot(background, scene["poses"]) == before
    assert not (tmp_path / "out").exists()


def test_out_containing_the_weights_is_refused(scene, tmp_path, capsys, no_model):
    """--weights is an input of the render like the sheet and the poses: an --out holding it is refused."""
    weights = tmp_path / "out" / "weights"
    shutil.copytree(scene["weights"], weights, symlinks=True)
    rc = _paddle_main(_render({**scene, "weights": weights}, tmp_path / "out"))
    _refused(capsys, rc, "--out", "contains the --weights folder")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["weights"]


def test_frame_name_taken_by_a_folder_is_refused_before_rendering(scene, tmp_path, capsys, no_model):
    """Finding 6: `--out D` with `D/0.png/` a folder failed after rendering with a raw [Errno 21] naming a
    temporary file."""
    (tmp_path / "out" / "0.png").mkdir(parents=True)
    rc = _paddle_main(_render(scene, tmp_path / "out"))
    err = _refused(capsys, rc, "output frame", str(tmp_path / "out" / "0.png"), "is a folder")
    assert ".tmp" not in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["0.png"]


@pytest.mark.parametrize("shape", ["name", "path"])
def test_overlong_out_is_refused_before_the_model_loads(scene, tmp_path, capsys, no_model, shape):
    """Finding 8: a 256-character name (or a path over PATH_MAX) loaded the model first, then exited 1 with
    [Errno 36] and the whole path."""
    out = tmp_path / ("a" * 256) if shape == "name" else tmp_path.joinpath(*["b" * 200] * 21)
    rc = _paddle_main(_render(scene, out))
    err = _refused(capsys, rc, "--out", "at most 255" if shape == "name" else "longest this system opens")
    assert len(err) < 400, err  # the path is shortened, not printed whole


# ---------------------------------------------------------------------------------------------------- demo
def test_demo_refuses_a_folder_of_other_files(tmp_path, capsys):
    """The demo refreshes its own folder: a --out holding anything else (your home folder) is refused."""
    (tmp_path / "notes.txt").write_text("mine")
    before = _snapshot(tmp_path)
    rc = _paddle_main(["demo", "--out", str(tmp_path), "--frames", "1"])
    _refused(capsys, rc, "--out", "holds notes.txt", "did not write")
    assert _snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------------------------------------- converters
@pytest.fixture()
def converted(pdparams_dir, tmp_path) -> Path:
    """The seeded official set converted by the converter (the session's `pdparams_dir`), in a folder of its own:
    its weight files hard-linked (0.7 GB not written again; the converter replaces them by rename, never in place)
    and its report copied (a test edits it). Afterwards the session folder's files are checked untouched (a write
    through a link changes the shared file's size or modification time)."""

    def stats() -> dict[str, tuple[int, int, int]]:
        return {f.name: (f.stat().st_ino, f.stat().st_size, f.stat().st_mtime_ns) for f in pdparams_dir.iterdir()}

    before = stats()
    yield linked_folder(pdparams_dir, tmp_path / "converted", "*.pdparams")
    assert stats() == before, "a test wrote into the session's pdparams_dir through a link"


def test_one_network_never_joins_another_set(weights_dir, tmp_path, capsys):
    """Finding 13: `torch2paddle ONE.pth -o D --force` into a converted folder mixed two weight sets, and the report
    then covered only the last file. Now it is refused unless the whole set is written; re-converting the whole
    set over the toolkit's own output still works. The set: the two smallest networks (hard links to the session's
    files; the rule does not depend on the set's size, and each conversion writes 0.1 GB instead of 0.7)."""

    source = linked_folder(weights_dir, tmp_path / "official", "*.pth", only=SMALLEST_NETWORKS)
    converted = tmp_path / "converted"
    assert _convert_main(["torch2paddle", str(source), "-o", str(converted)]) == 0
    capsys.readouterr()
    before = _snapshot(converted, source)
    rc = _convert_main(["torch2paddle", str(source / SMALLEST_NETWORKS[0]), "-o", str(converted), "--force"])
    _refused(capsys, rc, "earlier weight set", "whole set")
    assert _snapshot(converted, source) == before
    assert _convert_main(["torch2paddle", str(source), "-o", str(converted), "--force"]) == 0
    capsys.readouterr()
    (converted / "notes.txt").write_text("not ours")  # --force replaces only what the report lists
    before = _snapshot(converted, source)
    rc = _convert_main(["torch2paddle", str(source), "-o", str(converted), "--force"])
    _refused(capsys, rc, "-o", "holds notes.txt", "did not write")
    assert _snapshot(converted, source) == before


@pytest.mark.slow
def test_inspect_fails_a_folder_its_report_does_not_describe(weights_dir, converted, tmp_path, capsys):
    """Finding 13: `inspect` passed the mixed folder. The old converter's leftover is rebuilt here: a whole set
    whose conversion_report.json describes one file only (the last single-file conversion's: rgbadecodernet, the
    smallest network, 0.3 MB written instead of udpparsernet's 0.2 GB)."""
    from convert.run import inspect_paths

    assert inspect_paths(converted, stdout=io.StringIO()) == 0
    single = tmp_path / "single"
    assert _convert_main(["torch2paddle", str(weights_dir / "rgbadecodernet.pth"), "-o", str(single)]) == 0
    shutil.copy(single / "conversion_report.json", converted / "conversion_report.json")
    table = io.StringIO()
    assert inspect_paths(converted, stdout=table) == 1
    assert "shader.pdparams: not described by conversion_report.json" in table.getvalue(), table.getvalue()
    # a file changed after its conversion is caught by its sha256
    report = json.loads((single / "conversion_report.json").read_text())
    report["networks"]["rgbadecodernet"]["output"]["sha256"] = "0" * 64
    (single / "conversion_report.json").write_text(json.dumps(report))
    table = io.StringIO()
    assert inspect_paths(single, stdout=table) == 1
    assert "rgbadecodernet.pdparams: sha256 differs" in table.getvalue(), table.getvalue()


# ---------------------------------------------------------------------------------------------------- verify
def test_verify_report_never_lands_in_an_input_folder(weights_dir, scene, capsys):
    """Finding 3: `verify --report POSES` wrote report.json/.md/.png into the pose folder, and the next render
    took report.png for a pose."""
    poses = scene["poses"]
    before = _snapshot(poses)
    base = ["verify", "--torch", str(weights_dir), "--paddle", str(scene["weights"]), "--size", "128"]
    rc = _convert_main([*base, "--poses", str(poses), "--report", str(poses)])
    _refused(capsys, rc, "--report", "is the --poses folder")
    rc = _convert_main([*base, "--report", str(poses)])  # not an input of this run, still not its folder
    _refused(capsys, rc, "--report", "holds 0.npz", "did not write")
    rc = _convert_main([*base, "--report", str(Path(weights_dir) / "parity")])
    _refused(capsys, rc, "--report", "lies inside the --torch folder")
    assert _snapshot(poses) == before and sorted(p.name for p in poses.iterdir()) == ["0.npz"]


# ----------------------------------------------------------------------------------------------- export-onnx
def test_export_force_never_removes_the_weights(weights_dir, scene, tmp_path, capsys):
    """Finding 1: `export-onnx --paddle W -o W --force` (or -o a folder above W) moved the folder aside and removed
    it, exit 0: the weights were gone. Refused now before anything loads, the weights untouched."""
    weights = scene["weights"]
    official = tmp_path / "official"
    shutil.copytree(weights_dir, official, copy_function=os.symlink)
    before = _snapshot(weights, official)
    for out, relation in ((weights, "is the --paddle folder"), (tmp_path, "contains the --paddle folder")):
        rc = _convert_main(["export-onnx", "--paddle", str(weights), "-o", str(out), "--force", "--size", "128"])
        _refused(capsys, rc, "-o", relation)
    rc = _convert_main(["export-onnx", "--torch", str(official), "-o", str(official / "onnx"), "--size", "128"])
    _refused(capsys, rc, "-o", "lies inside the --torch folder")
    assert _snapshot(weights, official) == before


def test_force_replaces_only_an_earlier_export(tmp_path):
    """Finding 1 at its root: write_folder(--force) replaced any folder. Now only one whose every entry an earlier
    export's meta.json lists (its graphs, meta.json, export.log)."""
    from conr_engines.onnx.contract import ONNX_FORMAT, write_folder

    def fill(folder: Path) -> dict:
        (folder / "pose.onnx").write_bytes(b"graph")
        return {"format": ONNX_FORMAT, "graphs": {"pose": {}}}

    foreign = tmp_path / "weights"
    foreign.mkdir()
    (foreign / "shader.pdparams").write_bytes(b"weights")
    with pytest.raises(ConrInputError, match="holds shader.pdparams, which this toolkit did not write"):
        write_folder(foreign, True, fill)
    assert (foreign / "shader.pdparams").read_bytes() == b"weights"
    ours = tmp_path / "onnx"
    write_folder(ours, False, fill)
    write_folder(ours, True, fill)  # an earlier export is replaced
    assert sorted(p.name for p in ours.iterdir()) == ["meta.json", "pose.onnx"]


def test_export_under_a_read_only_parent_names_the_given_path(scene, tmp_path, capsys, monkeypatch):
    """Finding 7: -o under a read-only parent exited 1 naming a temporary path the user never gave. Root may write
    anywhere, so the read-only folder is what os.access reports for it here (on a read-only mount access(2) says
    the same to root)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode))
    out = locked / "onnx"
    rc = _convert_main(["export-onnx", "--paddle", str(scene["weights"]), "-o", str(out), "--size", "128"])
    err = _refused(capsys, rc, f"-o {out}", f"cannot write in {locked}")
    assert ".tmp" not in err
    assert list(locked.iterdir()) == []


# ---------------------------------------------------------------------------------------------------- web app
def test_web_job_folders_go_through_the_guard(pdparams_dir, tmp_path, samples):
    """The web app's job folders, staging folders and job outputs are checked by the same function."""
    from conr_app.web.context import AppContext
    from conr_app.web.jobs import check_job_outputs
    from conr_app.web.uploads import Upload, stage_uploads

    weights = tmp_path / "weights"
    shutil.copytree(pdparams_dir, weights, copy_function=os.symlink)
    with pytest.raises(ConrInputError, match="job folders .*lies inside the --weights folder"):
        AppContext(weights, weights, tmp_path / "uploads")
    assert not (weights / "jobs").exists()
    ctx = AppContext(weights, tmp_path / "work", tmp_path / "uploads")
    ctx.upload_root.mkdir()
    upload = ctx.upload_root / "0.npz"
    shutil.copy(samples.poses / "0.npz", upload)
    with pytest.raises(ConrInputError, match="staging folder .*lies inside the upload folder"):
        stage_uploads([Upload(upload, "0.npz")], ctx.upload_root / "poses", what="UDP poses",
                      extensions=frozenset({".npz"}), max_count=5, ctx=ctx)
    assert sorted(p.name for p in ctx.upload_root.iterdir()) == ["0.npz"]
    job = ctx.new_job_folder()
    with pytest.raises(ConrInputError, match="job folder .*frames: is the poses folder"):
        check_job_outputs(job, {"character sheet": samples.character_sheet, "poses": job / "frames"})
    check_job_outputs(job, {"character sheet": samples.character_sheet, "poses": job / "poses"})
