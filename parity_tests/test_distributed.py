"""One sequence rendered by several ranks (`conr_app.rendering.distributed`): the documented launch line with the
`conr-paddle` console script, a rank killed mid-way then `--resume --workers 2`, and bad input.

Small on purpose (128 px, one sheet view, six poses, the default predictor engine): every launcher run starts two
processes that each import Paddle, load the weights and load the predictor (exported once per module, under the
cache's file lock). The reference is one in-process render of the same inputs; frames are compared byte for byte.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conr_app.cli import main
from conr_app.rendering.resume import RECORD_FILES
from parity_tests.harness import child_env

# two ranks, each on a core of its own, whatever share of the cores this process was given (conftest's every_core)
pytestmark = pytest.mark.usefixtures("every_core")
SIZE = 128
POSES = ["0", "1", "2", "3", "4", "5"]  # 4 is empty (transparent, no model call); 5 has another frame size
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def dist_inputs(samples, graph_cache, tmp_path_factory):
    """One sheet view and POSES; the session's graph cache (its compiled operators and, at 128 px / 1 view, the
    graphs test_kill_resume.py's reference run exports)."""
    root = tmp_path_factory.mktemp("dist_inputs")
    sheet, poses = root / "sheet", root / "poses"
    sheet.mkdir()
    poses.mkdir()
    shutil.copy(samples.character_sheet / "0_front.png", sheet / "0_front.png")
    for name in POSES[:4]:
        shutil.copy(samples.poses / f"{name}.npz", poses / f"{name}.npz")
    np.savez_compressed(poses / "4.npz", i=np.zeros((200, 200, 4), np.float32))
    with np.load(samples.poses / "1.npz") as f:
        np.savez_compressed(poses / "5.npz", i=np.pad(f["i"], ((20, 4), (0, 0), (0, 0))))
    return {"sheet": sheet, "poses": poses, "cache": graph_cache}


def _args(pdparams_dir, inputs, out: Path, *extra: str) -> list[str]:
    return ["render", "--weights", str(pdparams_dir), "--character-sheet", str(inputs["sheet"]),
            "--poses", str(inputs["poses"]), "--out", str(out), "--size", str(SIZE),
            "--cache-dir", str(inputs["cache"]), "--quiet", *extra]


def _launch(args: list[str], log_dir: Path) -> list[str]:
    """The README's line: python -m paddle.distributed.launch --nproc_per_node 2 conr-paddle render ..."""
    return [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(log_dir),
            "conr-paddle", *args]


def _env() -> dict[str, str]:
    # the venv's console scripts on PATH, as after `. .venv/bin/activate`; this checkout first on PYTHONPATH, so the
    # ranks run the code under test even where the venv's editable install points at another tree
    return child_env(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def _frame_bytes(folder: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def single(pdparams_dir, dist_inputs, tmp_path_factory):
    """One process, the default engine, on the threads each of the two ranks gets (`threads_per_rank`): the frames
    every rank count must reproduce byte for byte. The thread count is the ranks', not this process's: oneDNN's
    results may depend on it (Intel Xeon with AMX: 1 and 2 threads differ by 1 level on ~0.02% of pixels), and what
    is tested here is that sharding changes no byte."""
    from conr_app.rendering.distributed import RankInfo, threads_per_rank

    threads = threads_per_rank(RankInfo(rank=0, world=2, local_rank=0, local_world=2))
    out = tmp_path_factory.mktemp("single") / "frames"
    assert main(_args(pdparams_dir, dist_inputs, out, "--threads", str(threads))) == 0
    frames = _frame_bytes(out)
    assert sorted(frames, key=int) == POSES
    return frames


@pytest.mark.slow  # distributed renders in child processes
def test_two_ranks_match_one_process_and_write_the_video_once(pdparams_dir, dist_inputs, single, tmp_path):
    out, logs, video = tmp_path / "frames", tmp_path / "log", tmp_path / "clip.mp4"
    proc = subprocess.run(_launch(_args(pdparams_dir, dist_inputs, out, "--video", str(video)), logs),
                          capture_output=True, text=True, env=_env(), timeout=600)
    rank0 = (logs / "workerlog.0").read_text()
    rank1 = (logs / "workerlog.1").read_text()
    assert proc.returncode == 0, rank0 + rank1 + proc.stderr[-2000:]
    assert _frame_bytes(out) == single
    assert not [p for p in out.rglob(".*") if p.is_file() and p.name not in RECORD_FILES], "temporary files left"
    # only rank 0 encodes, after every frame exists; its summary counts every rank's frames
    assert rank0.count("video: ") == 2 and "video: " not in rank1  # the MP4 and the WebM, once
    assert "6 frame(s) written by 2 ranks" in rank0 and "frames/s over all 2 ranks" in rank0
    assert "[rank 1/2] 3 frame(s) written" in rank1  # round-robin: 3 frames each
    from imageio_ffmpeg import count_frames_and_secs

    assert count_frames_and_secs(str(video))[0] == len(POSES)


def _rank_pid(launcher: subprocess.Popen, rank: int, timeout: float = 120) -> int:
    """The pid of the launcher's child process with PADDLE_TRAINER_ID == rank."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        for pid in children:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"PADDLE_TRAINER_ID={rank}".encode() in environ:
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"rank {rank} never started")


@pytest.mark.slow  # distributed renders in child processes
def test_killed_rank_then_resume_on_two_workers(pdparams_dir, dist_inputs, single, tmp_path, capsys):
    out, logs = tmp_path / "frames", tmp_path / "log"
    launcher = subprocess.Popen(_launch(_args(pdparams_dir, dist_inputs, out), logs), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid = _rank_pid(launcher, 1)
        deadline = time.monotonic() + 300
        while not (out / "1.png").is_file():  # rank 1's first frame (its shard: 1, 3, 5)
            assert launcher.poll() is None and time.monotonic() < deadline, "rank 1 never wrote a frame"
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        status = launcher.wait(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert status != 0, "the launcher must report the dead rank"
    before = {p.stem: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert "1" in before and len(before) < len(POSES), sorted(before)
    assert all(single[name] == (out / f"{name}.png").read_bytes() for name in before)

    assert main(_args(pdparams_dir, dist_inputs, out, "--resume", "--workers", "2")) == 0
    printed = capsys.readouterr().out
    missing = len(POSES) - len(before)
    assert f"{missing} frame(s) written by 2 ranks, {len(before)} already complete" in printed, printed
    assert _frame_bytes(out) == single
    assert all((out / f"{n}.png").stat().st_mtime_ns == t for n, t in before.items()), "finished frames re-rendered"
    assert not [p for p in out.rglob(".*") if p.is_file() and p.name not in RECORD_FILES], "temporary files left"


# --------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("option, value", [("--workers", "0"), ("--workers", "two"), ("--threads", "-1")])
def test_bad_workers_and_threads(pdparams_dir, dist_inputs, tmp_path, capsys, option, value):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(_args(pdparams_dir, dist_inputs, out, option, value))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err, err
    assert not out.exists()


def test_workers_bad_input_stops_before_launching(pdparams_dir, dist_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    args = _args(pdparams_dir, dist_inputs, out, "--workers", "2")
    args[args.index("--poses") + 1] = str(tmp_path / "nope")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "nope" in err, err
    assert not out.exists()


def test_bad_rank_environment(pdparams_dir, dist_inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    monkeypatch.setenv("PADDLE_TRAINER_ID", "5")
    out = tmp_path / "out"
    assert main(_args(pdparams_dir, dist_inputs, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "PADDLE_TRAINER_ID" in err, err
    assert not out.exists()


def test_shards_cover_the_sequence_once():
    from conr_app.rendering.distributed import RankInfo, rank_info, shard, threads_per_rank

    items = list(range(11))
    for world in (1, 2, 3, 4):
        parts = [shard(items, RankInfo(rank=r, world=world)) for r in range(world)]
        assert sorted(i for p in parts for i in p) == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    info = rank_info({"PADDLE_TRAINER_ID": "3", "PADDLE_TRAINERS_NUM": "4", "PADDLE_LOCAL_SIZE": "2",
                      "PADDLE_LOCAL_RANK": "1"})
    assert info == RankInfo(rank=3, world=4, local_rank=1, local_world=2)
    assert threads_per_rank(info, 3) == 3 and threads_per_rank(info) >= 1
    assert rank_info({}) == RankInfo()
