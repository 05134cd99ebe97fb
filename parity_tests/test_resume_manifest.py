"""`--resume` knows what it resumes (issue 23, finding 10; conr_app.rendering.resume).

Before: any RGBA PNG of the right size counted as a finished frame, so a frame rendered at `--size 128` survived a
resume at 256 px, and an output `0.png` that was a symbolic link to another image counted as done. Now the output
folder records the render that wrote it (settings, weights and sheet identity, and a journal of every frame with
its sha256): `--resume` with other settings is refused with one line naming the setting, and a frame is done only
if it is a plain regular file this render recorded, with its pose file unchanged.

Small on purpose: one sheet view, three UDP poses (one empty: no model call), 128 px, the eager engine and the
session's Paddle model (no 720 MB re-read per render).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conr_common.weights import checkpoints as cio
from conr_app.cli import main
from conr_app.rendering.resume import JOURNAL, RECORD, FrameJournal, read_identity, read_journal

SIZE = 128


@pytest.fixture(scope="module")
def scene(samples, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_scene")
    sheet, poses = root / "sheet", root / "poses"
    sheet.mkdir()
    poses.mkdir()
    shutil.copy(samples.character_sheet / "0_front.png", sheet / "0_front.png")
    shutil.copy(samples.poses / "0.npz", poses / "0.npz")
    shutil.copy(samples.poses / "1.npz", poses / "1.npz")
    np.savez_compressed(poses / "2.npz", i=np.zeros((256, 256, 4), np.float32))  # empty: a transparent frame
    return {"sheet": sheet, "poses": poses}


@pytest.fixture()
def session_model(paddle_model, monkeypatch):
    """The session's model instead of re-reading the .pdparams in every render (the weights files are still the
    ones hashed into the record)."""
    from conr_app.rendering.render import Renderer

    monkeypatch.setattr(Renderer, "_load_model", lambda self: paddle_model)


def _args(weights: Path, scene: dict, out: Path, *extra: str, sheet: Path | None = None,
          poses: Path | None = None) -> list[str]:
    return ["render", "--weights", str(weights), "--character-sheet", str(sheet or scene["sheet"]), "--poses",
            str(poses or scene["poses"]), "--out", str(out), "--size", str(SIZE), "--engine", "eager", "--quiet",
            *extra]


@pytest.fixture(scope="module")
def base(pdparams_dir, scene, paddle_model, tmp_path_factory):
    """One complete render: its frames, record and journal."""
    out = tmp_path_factory.mktemp("resume_base") / "frames"
    with pytest.MonkeyPatch.context() as mp:
        from conr_app.rendering.render import Renderer

        mp.setattr(Renderer, "_load_model", lambda self: paddle_model)
        assert main(_args(pdparams_dir, scene, out)) == 0
    return out


def _copy(base: Path, tmp_path: Path) -> Path:
    out = tmp_path / "frames"
    shutil.copytree(base, out)
    return out


def _state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def _refused(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --resume: "), err
    return err[0]


def test_the_render_records_itself(base, pdparams_dir):
    identity = read_identity(base)
    assert identity is not None and (identity.size, identity.engine, identity.precision) == (SIZE, "eager", "fp32")
    assert identity.weights_sha256 == cio.weights_hash(cio.check_weights_dir(pdparams_dir)) and identity.views == 1
    records = read_journal(base)
    assert sorted(records) == ["0.png", "1.png", "2.png"]
    import hashlib

    assert records["1.png"]["files"] == {"1.png": hashlib.sha256((base / "1.png").read_bytes()).hexdigest()}


def test_resume_with_another_size_or_engine_is_refused_and_changes_nothing(base, pdparams_dir, scene, tmp_path,
                                                                          capsys):
    out = _copy(base, tmp_path)
    before = _state(out)
    line = _refused(capsys, _args(pdparams_dir, scene, out, "--resume", "--size", "256"))
    assert "rendered with --size 128, not --size 256" in line and str(out) in line
    args = _args(pdparams_dir, scene, out, "--resume")
    args[args.index("--engine") + 1] = "predictor"
    assert "rendered with --engine eager, not --engine predictor" in _refused(capsys, args)
    assert _state(out) == before


def test_resume_with_other_weights_or_another_sheet_is_refused(base, pdparams_dir, scene, samples, tmp_path,
                                                               capsys):
    out = _copy(base, tmp_path)
    before = _state(out)
    other = tmp_path / "other_weights"
    other.mkdir()
    for f in pdparams_dir.glob("*.pdparams"):
        if f.name != "rgbadecodernet.pdparams":
            os.symlink(f, other / f.name)
    state = dict(cio.load_paddle_file(pdparams_dir / "rgbadecodernet.pdparams"))
    state["conv_rgba.0.bias"] = np.asarray(state["conv_rgba.0.bias"]) + np.float32(0.5)
    cio.save_pdparams(state, other / "rgbadecodernet.pdparams")
    assert "rendered with other weights (their weights_hash differs)" in _refused(
        capsys, _args(other, scene, out, "--resume"))
    sheet = tmp_path / "sheet"
    sheet.mkdir()
    shutil.copy(samples.character_sheet / "1_back.png", sheet / "0_front.png")  # same name, another view
    line = _refused(capsys, _args(pdparams_dir, scene, out, "--resume", sheet=sheet))
    assert "rendered from another character sheet (its views differ)" in line
    assert _state(out) == before


@pytest.mark.slow  # renders frames again (eager, 128 px)
def test_a_symlinked_output_frame_is_not_done_and_its_target_is_untouched(base, pdparams_dir, scene, tmp_path,
                                                                          session_model, capsys):
    """The finding's own case: `0.png` a link to an image of the right size (here a copy of the true frame, so
    that only the link decides). It is rendered again and replaced by a regular file; the link's target stays."""
    out = _copy(base, tmp_path)
    target = tmp_path / "elsewhere.png"
    shutil.copy(base / "0.png", target)
    (out / "0.png").unlink()
    os.symlink(target, out / "0.png")
    target_bytes = target.read_bytes()
    assert main(_args(pdparams_dir, scene, out, "--resume")) == 0
    assert "1 frame(s) written, 2 already complete" in capsys.readouterr().out
    assert not (out / "0.png").is_symlink() and (out / "0.png").read_bytes() == (base / "0.png").read_bytes()
    assert target.read_bytes() == target_bytes


@pytest.mark.slow  # renders frames again (eager, 128 px)
def test_frames_not_written_by_this_render_are_rendered_again(base, pdparams_dir, scene, tmp_path, session_model,
                                                              capsys):
    """A valid RGBA PNG of the right size that this render did not write (here frame 0's bytes under the name 1)
    is not done; neither is a frame whose pose file changed since."""
    out = _copy(base, tmp_path)
    shutil.copy(base / "0.png", out / "1.png")
    assert main(_args(pdparams_dir, scene, out, "--resume")) == 0
    assert "1 frame(s) written, 2 already complete" in capsys.readouterr().out
    assert (out / "1.png").read_bytes() == (base / "1.png").read_bytes()
    poses = tmp_path / "poses"
    shutil.copytree(scene["poses"], poses)
    with np.load(scene["poses"] / "0.npz") as f:
        np.savez_compressed(poses / "0.npz", i=np.flip(f["i"], axis=1))  # the same frame size, another pose
    assert main(_args(pdparams_dir, scene, out, "--resume", poses=poses)) == 0
    assert "1 frame(s) written, 2 already complete" in capsys.readouterr().out
    assert (out / "0.png").read_bytes() != (base / "0.png").read_bytes()


@pytest.mark.slow  # renders frames again (eager, 128 px)
def test_a_folder_without_a_record_has_nothing_done(base, pdparams_dir, scene, tmp_path, session_model, capsys):
    out = _copy(base, tmp_path)
    (out / RECORD).unlink()
    assert main(_args(pdparams_dir, scene, out, "--resume")) == 0
    assert "3 frame(s) written, 0 already complete" in capsys.readouterr().out
    assert read_identity(out) == read_identity(base) and sorted(read_journal(out)) == ["0.png", "1.png", "2.png"]


@pytest.mark.slow  # renders frames again (eager, 128 px)
def test_a_render_without_resume_rewrites_the_record(base, pdparams_dir, scene, samples, tmp_path, session_model,
                                                      capsys):
    out = _copy(base, tmp_path)
    sheet = tmp_path / "sheet"
    sheet.mkdir()
    shutil.copy(samples.character_sheet / "1_back.png", sheet / "0_front.png")
    assert main(_args(pdparams_dir, scene, out, sheet=sheet)) == 0
    assert "3 frame(s) written" in capsys.readouterr().out
    assert read_identity(out) != read_identity(base)
    assert main(_args(pdparams_dir, scene, out, "--resume", sheet=sheet)) == 0  # resumes the new record
    assert "0 frame(s) written, 3 already complete" in capsys.readouterr().out


def _append(out: str, rank: int, frames: int) -> None:
    from conr_app.rendering.frames import FrameJob

    pose = Path(out) / "pose.npz"
    for i in range(frames):
        job = FrameJob(pose, Path(out) / f"{rank}_{i}.png", None, None)
        FrameJournal(Path(out)).record(job, [(job.frame, bytes([rank, i % 256]) * 5000)])


def test_the_journal_is_safe_for_several_ranks(tmp_path):
    """Ranks append to one journal under its flock: every line arrives whole."""
    (tmp_path / "pose.npz").write_bytes(b"pose")
    context = multiprocessing.get_context("fork")  # the children only append to a file
    ranks = [context.Process(target=_append, args=(str(tmp_path), rank, 40)) for rank in range(4)]
    for rank in ranks:
        rank.start()
    for rank in ranks:
        rank.join(timeout=120)
        assert rank.exitcode == 0
    lines = (tmp_path / JOURNAL).read_text().splitlines()
    assert len(lines) == 160 and all(json.loads(line)["pose"] == "pose.npz" for line in lines)
    assert len(read_journal(tmp_path)) == 160
