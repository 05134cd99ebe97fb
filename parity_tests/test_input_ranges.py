"""Input ranges (issue #23, findings 11, 12 and 17): UDP xyz and visibility outside [0, 1] are refused with a line
naming the file, the channel and the range found (no numpy overflow warning on the way); a sheet view whose alpha
never reaches MIN_PEAK_ALPHA is refused as nearly empty; a view under MIN_VIEW_SIDE is refused for its size before
any opacity check."""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from conr_common.platform.errors import ConrInputError
from conr_common.data.pipeline import (MIN_PEAK_ALPHA, MIN_VIEW_SIDE, UDP_RANGE_TOLERANCE, load_character_sheet,
                                  load_udp_pose, read_udp)


def _udp(tmp_path, name: str, channel: int, value: float):
    label = np.zeros((32, 32, 4), np.float32)
    label[8:24, 8:24] = 0.5
    label[10, 10, channel] = value
    path = tmp_path / name
    if path.suffix == ".npz":
        np.savez(path, i=label)
    else:
        assert cv2.imwrite(str(path), cv2.cvtColor(label, cv2.COLOR_RGBA2BGRA))
    return path


@pytest.mark.parametrize("channel,value,name", [
    (0, 100.0, "xyz"), (2, 3e38, "xyz"), (1, -0.5, "xyz"),
    (3, -1.0, "visibility"), (3, 100.0, "visibility"), (3, 1.01, "visibility"),
])
def test_udp_out_of_range_is_refused_naming_file_channel_and_range(tmp_path, channel, value, name):
    path = _udp(tmp_path, "bad.npz", channel, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in multiply" named no file
        with pytest.raises(ConrInputError) as info:
            load_udp_pose(path, 128)
    text = str(info.value)
    assert text.startswith(f"{path}: UDP {name} values range from ") and "outside [0, 1]" in text, text
    assert f"{np.float32(value):.6g}" in text and "\n" not in text, text


def test_float_tiff_udp_out_of_range_is_refused(tmp_path):
    path = _udp(tmp_path, "bad.tiff", 0, 100.0)
    with pytest.raises(ConrInputError, match=r"bad\.tiff: UDP xyz values range from 0 to 100, outside \[0, 1\]"):
        read_udp(path)


@pytest.mark.parametrize("channel,value", [
    (0, 1.0000001),  # float32 rounding of a computed 1.0
    (3, 1 + 2 ** -10),  # one float16 step above 1 (half-float EXR files)
    (1, -UDP_RANGE_TOLERANCE / 2),
])
def test_udp_rounding_outside_the_range_is_accepted_unchanged(tmp_path, channel, value):
    path = _udp(tmp_path, "ok.npz", channel, value)
    label = read_udp(path)
    assert label[10, 10, channel] == np.float32(value)  # accepted, not clipped


def test_udp_nan_and_inf_are_refused(tmp_path):
    for i, value in enumerate((np.nan, np.inf, -np.inf)):
        path = _udp(tmp_path, f"{i}.npz", i % 4, value)
        with pytest.raises(ConrInputError, match=rf"{i}\.npz: UDP frame contains NaN or infinite values"):
            read_udp(path)


def _view(tmp_path, name: str, rgba: np.ndarray):
    folder = tmp_path / name.split(".")[0]
    folder.mkdir()
    assert cv2.imwrite(str(folder / name), rgba)
    return folder


def _figure(h: int, w: int, alpha: int) -> np.ndarray:
    """A block of colour at `alpha`, half as wide as tall, in the middle of a transparent image (its square crop
    is half transparent, well under the 95% opacity limit)."""
    image = np.zeros((h, w, 4), np.uint8)
    image[h // 4:3 * h // 4, w // 2 - h // 8:w // 2 + h // 8] = (40, 90, 200, alpha)
    return image


def test_sheet_view_with_alpha_one_to_three_is_refused(tmp_path):
    image = np.full((64, 64, 4), 200, np.uint8)
    image[:, :, 3] = np.random.default_rng(0).integers(1, 4, (64, 64))  # 1 to 3 everywhere
    folder = _view(tmp_path, "faint.png", image)
    with pytest.raises(ConrInputError, match=r"faint\.png: alpha channel is nearly empty: its most opaque pixel is "
                                             rf"3 of 255, below {MIN_PEAK_ALPHA}"):
        load_character_sheet(folder, 128)


def test_faint_threshold_is_where_it_says(tmp_path):
    with pytest.raises(ConrInputError, match="nearly empty"):
        load_character_sheet(_view(tmp_path, "below.png", _figure(64, 64, MIN_PEAK_ALPHA - 1)), 128)
    sheet = load_character_sheet(_view(tmp_path, "at.png", _figure(64, 64, MIN_PEAK_ALPHA)), 128)
    assert sheet.shape == (1, 128, 128, 4) and sheet[0, :, :, 3].max() == MIN_PEAK_ALPHA


@pytest.mark.parametrize("shape", [(2, 2), (1, 500), (MIN_VIEW_SIDE - 1, 64)])
def test_tiny_sheet_view_is_refused_for_its_size(tmp_path, shape):
    image = np.zeros(shape + (4,), np.uint8)
    image[0, 0] = 255  # one opaque pixel: the opacity checks would have said "no opaque pixels"
    folder = _view(tmp_path, "tiny.png", image)
    h, w = shape
    with pytest.raises(ConrInputError, match=rf"tiny\.png: sheet view is {h}x{w} pixels; each side must be at least "
                                             rf"{MIN_VIEW_SIDE}"):
        load_character_sheet(folder, 128)


def test_smallest_sheet_view_is_accepted(tmp_path):
    sheet = load_character_sheet(_view(tmp_path, "small.png", _figure(MIN_VIEW_SIDE, MIN_VIEW_SIDE, 255)), 128)
    assert sheet.shape == (1, 128, 128, 4)
