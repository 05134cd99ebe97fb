"""Procedural sample data: deterministic, transparent sheet views, valid UDP, animated. No torch or paddle."""
from __future__ import annotations

import numpy as np
import pytest

from conr_common.data.pipeline import list_pose_files, load_character_sheet, load_udp_pose, read_rgba, read_udp
from conr_common.data.samples import ensure_samples, main, udp_frame

SIZE = 128
FRAMES = 4


@pytest.fixture(scope="module")
def samples_128(tmp_path_factory):
    """The samples at this module's size (128 px, 4 frames); conftest's `samples` are 256 px."""
    return ensure_samples(tmp_path_factory.mktemp("samples"), size=SIZE, frames=FRAMES, seed=0)


def _arrays(paths) -> dict[str, np.ndarray]:
    out = {}
    for folder in (paths.character_sheet, paths.pose_images):
        for p in sorted(folder.glob("*.png")):
            out[f"{folder.name}/{p.name}"] = read_rgba(p)
    for p in sorted(paths.poses.glob("*.npz")):
        out[f"poses/{p.name}"] = read_udp(p)
    return out


def test_layout(samples_128):
    assert sorted(p.name for p in samples_128.character_sheet.iterdir()) == [
        "0_front.png", "1_back.png", "2_left.png", "3_right.png"]
    assert [p.name for p in list_pose_files(samples_128.poses, images=False)] == [f"{i}.npz" for i in range(FRAMES)]
    assert [p.name for p in list_pose_files(samples_128.pose_images, images=True)] == [f"{i}.png" for i in range(FRAMES)]
    assert (samples_128.root / ".complete").is_file()
    assert not [p for p in samples_128.root.rglob(".*.tmp*")]


def test_deterministic(samples_128, tmp_path):
    again = ensure_samples(tmp_path / "again", size=SIZE, frames=FRAMES, seed=0)
    a, b = _arrays(samples_128), _arrays(again)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    other = udp_frame(1, FRAMES, SIZE, seed=1)
    assert not np.array_equal(other, a["poses/1.npz"])


def test_ensure_samples_skips_complete_folder(samples_128):
    before = {p: p.stat().st_mtime_ns for p in samples_128.root.rglob("*") if p.is_file()}
    ensure_samples(samples_128.root, size=SIZE, frames=FRAMES, seed=0)
    after = {p: p.stat().st_mtime_ns for p in samples_128.root.rglob("*") if p.is_file()}
    assert before == after


def test_sheet_views_transparent_with_visible_character(samples_128):
    for path in sorted(samples_128.character_sheet.glob("*.png")):
        alpha = read_rgba(path)[:, :, 3]
        assert alpha.shape == (SIZE, SIZE)
        assert alpha[0, 0] == 0 and alpha[-1, -1] == 0, path
        opaque = (alpha > 0).mean()
        assert 0.05 < opaque < 0.5, (path, opaque)
        rows = np.nonzero((alpha > 0).any(axis=1))[0]
        height = (rows[-1] - rows[0] + 1) / SIZE
        assert 0.6 <= height <= 0.8, (path, height)
    sheet = load_character_sheet(samples_128.character_sheet, SIZE)  # passes the 95% opacity check
    assert sheet.shape == (4, SIZE, SIZE, 4)
    # front and back differ (face vs ponytail), as do the side views
    assert not np.array_equal(sheet[0], sheet[1]) and not np.array_equal(sheet[2], sheet[3])


def test_udp_frames_valid(samples_128):
    labels = [read_udp(p) for p in list_pose_files(samples_128.poses, images=False)]
    for label in labels:
        assert label.dtype == np.float32 and label.shape == (SIZE, SIZE, 4)
        assert label.min() >= 0.0 and label.max() <= 1.0
        vis = label[:, :, 3]
        assert set(np.unique(vis).tolist()) <= {0.0, 1.0}
        assert 0.02 < vis.mean() < 0.5
        assert not label[vis == 0, :3].any()
        assert (label[vis == 1, :3].max(axis=1) > 0).all()
    for a, b in zip(labels, labels[1:]):
        assert not np.array_equal(a, b)
    # the crop box moves with the sway
    crops = {load_udp_pose(p, SIZE).crop for p in list_pose_files(samples_128.poses, images=False)}
    assert None not in crops and len(crops) > 1


def test_pose_images_match_udp_silhouette(samples_128):
    for i in range(FRAMES):
        alpha = read_rgba(samples_128.pose_images / f"{i}.png")[:, :, 3] > 127
        vis = read_udp(samples_128.poses / f"{i}.npz")[:, :, 3] > 0
        assert (alpha != vis).mean() < 0.02


def test_cli(tmp_path, capsys):
    assert main([str(tmp_path / "cli"), "--size", "64", "--frames", "2"]) == 0
    assert (tmp_path / "cli" / "poses" / "1.npz").is_file()
    assert main([str(tmp_path / "bad"), "--size", "8"]) == 2
    assert "--size" in capsys.readouterr().err
