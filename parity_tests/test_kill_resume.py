"""Fault injection (issue #13): a render killed with SIGKILL (no `finally`, no signal handler runs) during the
graph export, between frames and during the video encode, then rerun with --resume, ends with frames identical
(byte for byte) to an uninterrupted run, no stale temporary file anywhere, and a valid video.

Also the sweep itself: only temporaries of dead processes on this host are removed."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parity_tests.harness import ROOT, child_env, linked_folder

FRAMES = 10


def test_sweep_removes_only_dead_writers_temporaries(tmp_path):
    from conr_common.platform.atomic import _owner_tag, sweep_stale_temporaries

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host, pid = _owner_tag().split(".")
    dead_tmp = tmp_path / f".0.{host}.{dead.pid}.0123abcd.tmp"
    live_tmp = tmp_path / f".1.{host}.{pid}.0123abcd.tmp"
    other_host = tmp_path / f".2.ffffff.{dead.pid}.0123abcd.tmp" if host != "ffffff" else tmp_path / ".2.x"
    user_file = tmp_path / ".0.png.tmp"  # not one of ours: never touched
    for p in (dead_tmp, live_tmp, other_host, user_file):
        p.write_bytes(b"x")
    assert sweep_stale_temporaries(tmp_path) == [dead_tmp]
    assert live_tmp.exists() and other_host.exists() and user_file.exists() and not dead_tmp.exists()


@pytest.fixture(scope="module")
def scene(samples, tmp_path_factory):
    """One sheet view and FRAMES UDP poses (the sample's four, repeated under new names)."""
    root = tmp_path_factory.mktemp("kill_scene")
    sheet = root / "sheet"
    sheet.mkdir()
    shutil.copy(samples.character_sheet / "0_front.png", sheet / "0_front.png")
    poses = root / "poses"
    poses.mkdir()
    sources = sorted(samples.poses.glob("*.npz"))
    for i in range(FRAMES):
        shutil.copy(sources[i % len(sources)], poses / f"{i}.npz")
    return sheet, poses


def _command(pdparams_dir, scene, out: Path, video: Path, cache: Path, *extra: str) -> list[str]:
    sheet, poses = scene
    return [sys.executable, "-m", "conr_app", "render", "--weights", str(pdparams_dir), "--character-sheet",
            str(sheet), "--poses", str(poses), "--out", str(out), "--size", "128", "--video", str(video),
            "--cache-dir", str(cache), "--quiet", *extra]


def _kill_when(cmd: list[str], ready, env: dict, timeout: float = 600.0) -> None:
    """Start `cmd`, SIGKILL it as soon as `ready()` is true; fail if it finishes first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"finished before the kill point (exit {proc.returncode}): {proc.stderr.read()[-1500:]!r}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("kill point never reached")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _temporaries(*folders: Path) -> list[Path]:
    return [p for f in folders if f.exists() for p in f.rglob("*")
            if p.name.startswith(".") and ".tmp" in p.name or p.name.endswith(".stale") or ".tmp-" in p.name]


def _link_parameter_folders(source: Path, cache: Path, weights_label: str) -> None:
    """The parameter folders of `weights_label` in the cache `source` (`conr_engines.export.cache.params_entry`,
    meta.json's "graph" is "params"), hard-linked into `cache`: what a user's cache holds after a render of the same
    weights at another size. An export then writes its program and reads the parameters (not another 0.4 GB); the
    kill at the export still lands while the program is traced, before any parameter file would be written."""
    from conr_engines.export.cache import PARAMS_FILE

    for meta_file in source.glob("*/meta.json"):
        if ".tmp" in meta_file.parent.name:
            continue
        try:
            meta = json.loads(meta_file.read_text())
        except OSError:  # another worker's test removed its own folder meanwhile (test_worlds drops its draws')
            continue
        if meta.get("graph") == "params" and meta.get("weights") == weights_label:
            linked_folder(meta_file.parent, cache / meta_file.parent.name, PARAMS_FILE)


@pytest.mark.slow  # subprocess renders killed and resumed
def test_sigkill_at_export_frames_and_video_then_resume(pdparams_dir, scene, graph_cache, weights_label, tmp_path):
    """The uninterrupted reference run uses the session cache, in this process (the same command line through
    `conr_app.cli.main`: test_distributed shows in-process and child renders give the same bytes); the killed runs
    are child processes with a private cache (the export is one of the kill points), holding a copy of the
    session's compiled operators when they exist and its parameter files of these weights, as a user's does."""
    from imageio_ffmpeg import count_frames_and_secs

    from conr_app.cli import main
    from conr_app.rendering.video import ffmpeg_exe

    ref_out, ref_video = tmp_path / "ref", tmp_path / "ref_video" / "clip.mp4"
    ref_args = _command(pdparams_dir, scene, ref_out, ref_video, graph_cache)
    assert ref_args[1:3] == ["-m", "conr_app"] and main(ref_args[3:]) == 0

    out, video, cache = tmp_path / "out", tmp_path / "video" / "clip.mp4", tmp_path / "cache"
    if (graph_cache / "ops").is_dir():
        shutil.copytree(graph_cache / "ops", cache / "ops")
    _link_parameter_folders(graph_cache, cache, weights_label)
    assert any(cache.glob("*/params.pdiparams")), "the reference run left no parameter file in the session cache"
    cmd = _command(pdparams_dir, scene, out, video, cache)
    # 1. during the graph export: its temporary folder exists in the cache
    _kill_when(cmd, lambda: any(cache.glob("*.tmp-*")), child_env())
    # 2. between frames: some frames are on disk, not all
    _kill_when(cmd + ["--resume"], lambda: len(list(out.glob("*.png"))) >= 3, child_env())
    assert 3 <= len(list(out.glob("*.png"))) < FRAMES
    # 3. during the video encode: an ffmpeg that waits before encoding, so the kill lands while the temporary
    # video exists (the frames are all complete by then)
    slow = tmp_path / "slow-ffmpeg"
    slow.write_text(f"#!/bin/sh\nsleep 5\nexec {ffmpeg_exe()} \"$@\"\n")
    slow.chmod(0o755)
    _kill_when(cmd + ["--resume"], lambda: any(p.name.startswith(".clip.") for p in video.parent.glob(".*")),
               child_env(IMAGEIO_FFMPEG_EXE=str(slow)))
    assert not video.exists()
    # 4. the rerun completes everything
    final = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=900)
    assert final.returncode == 0, final.stderr[-2000:]

    ref = {p.name: p.read_bytes() for p in ref_out.glob("*.png")}
    assert len(ref) == FRAMES
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == ref
    assert _temporaries(out, video.parent, cache) == []
    assert count_frames_and_secs(str(video))[0] == FRAMES
