"""The framework-neutral data pipeline on small hand-computed cases (official behaviour: megvii-research/CoNR
@ 660c4f7, data_loader.py and train.py:save_output). No torch or paddle here."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from conr_common.platform.atomic import (atomic_folder, atomic_path, atomic_paths, atomic_write_bytes, sweep_stale_folders,
                                write_png_atomic)
from conr_common.platform.errors import ConrInputError
from conr_common.data.pipeline import (
    Crop,
    check_size,
    crop_and_resize,
    list_pose_files,
    load_character_sheet,
    load_pose_image,
    load_udp_pose,
    natural_key,
    paste_back,
    pose_image_array,
    read_rgba,
    read_udp,
    sheet_array,
    square_crop_box,
    to_uint8,
    udp_arrays,
)


def _alpha(h: int, w: int, rows: slice, cols: slice) -> np.ndarray:
    a = np.zeros((h, w), np.uint8)
    a[rows, cols] = 255
    return a


def _write_bgra(path: Path, bgra: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", bgra)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _sheet_image(h: int = 40, w: int = 30) -> np.ndarray:
    """A BGRA image with an opaque block in a transparent frame."""
    img = np.zeros((h, w, 4), np.uint8)
    img[5:35, 8:22] = (30, 60, 90, 255)
    return img


# --------------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("size", [128, 256, 384, 512])
def test_check_size_accepts_multiples_of_128(size):
    check_size(size)


@pytest.mark.parametrize("size", [0, 64, 100, 200, 255, -128])
def test_check_size_rejects(size):
    with pytest.raises(ConrInputError, match="--size"):
        check_size(size)


# --------------------------------------------------------------------------------------------------- crop box


def test_bbox_wide_centred_vertically():
    # bbox left 3, top 2, w 6, h 4: side 6, top = round(2 - 1) = 1
    crop = square_crop_box(_alpha(10, 12, slice(2, 6), slice(3, 9)))
    assert crop == Crop(10, 12, 1, 7, 3, 9, 0, 0, 0, 0, 6, 6)


def test_bbox_tall_centred_horizontally():
    # bbox left 4, top 1, w 2, h 6: side 6, left = round(4 - 2) = 2
    crop = square_crop_box(_alpha(10, 12, slice(1, 7), slice(4, 6)))
    assert crop == Crop(10, 12, 1, 7, 2, 8, 0, 0, 0, 0, 6, 6)


def test_bbox_uses_any_nonzero_alpha():
    a = np.zeros((10, 10), np.uint8)
    a[3, 2] = 1
    a[6, 7] = 1
    a[0, 0] = 0
    assert square_crop_box(a) == Crop(10, 10, 2, 8, 2, 8, 0, 0, 0, 0, 6, 6)


def test_bankers_rounding_on_odd_difference():
    # bbox left 4, w 2, h 5: left = round(4 - 1.5) = round(2.5) = 2 (half to even; half up would give 3)
    crop = square_crop_box(_alpha(12, 12, slice(3, 8), slice(4, 6)))
    assert crop == Crop(12, 12, 3, 8, 2, 7, 0, 0, 0, 0, 5, 5)
    # left 5: round(3.5) = 4, so it is not floor either
    crop = square_crop_box(_alpha(12, 12, slice(3, 8), slice(5, 7)))
    assert crop == Crop(12, 12, 3, 8, 4, 9, 0, 0, 0, 0, 5, 5)


@pytest.mark.parametrize(
    "rows, cols, expected",
    [
        (slice(0, 2), slice(2, 8), Crop(10, 10, 0, 4, 2, 8, 2, 0, 0, 0, 6, 6)),  # touches the top
        (slice(8, 10), slice(2, 8), Crop(10, 10, 6, 10, 2, 8, 0, 2, 0, 0, 6, 6)),  # touches the bottom
        (slice(2, 8), slice(0, 2), Crop(10, 10, 2, 8, 0, 4, 0, 0, 2, 0, 6, 6)),  # touches the left
        (slice(2, 8), slice(8, 10), Crop(10, 10, 2, 8, 6, 10, 0, 0, 0, 2, 6, 6)),  # touches the right
    ],
)
def test_padding_on_each_side(rows, cols, expected):
    assert square_crop_box(_alpha(10, 10, rows, cols)) == expected


def test_padding_top_and_bottom_at_once():
    # a 4 x 10 frame with a full-width character: side 10, top = round(1 - 4) = -3
    assert square_crop_box(_alpha(4, 10, slice(1, 3), slice(0, 10))) == Crop(4, 10, 0, 4, 0, 10, 3, 3, 0, 0, 10, 10)


def test_bad_frames_give_none():
    assert square_crop_box(np.zeros((10, 10), np.uint8)) is None
    assert square_crop_box(_alpha(10, 10, slice(4, 5), slice(4, 5))) is None  # 1 x 1 bbox
    sparse = np.zeros((100, 100), np.uint8)
    sparse[0, 0] = sparse[0, 5] = 255  # bbox 6 x 1 but 0.02% of the area
    assert square_crop_box(sparse) is None
    enough = np.zeros((100, 100), np.uint8)
    enough[0, :10] = 255  # exactly 0.1%: kept
    assert square_crop_box(enough) is not None


def test_crop_array_round_trip():
    crop = Crop(10, 12, 1, 7, 3, 9, 0, 0, 0, 0, 6, 6)
    arr = crop.as_array()
    assert arr.tolist() == [10, 12, 1, 7, 3, 9, 0, 0, 0, 0, 6, 6]
    assert Crop.from_array(arr) == crop
    with pytest.raises(ValueError):
        Crop.from_array(arr[:11])


# --------------------------------------------------------------------------------------------------- resize


def _random_rgba(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8)


def test_enlarging_uses_linear():
    img = _random_rgba(10, 12)
    crop = Crop(10, 12, 1, 7, 3, 9, 0, 0, 0, 0, 6, 6)
    out = crop_and_resize(img, crop, 16)
    expected = cv2.resize(img[1:7, 3:9], (16, 16), interpolation=cv2.INTER_LINEAR)
    assert out.dtype == np.uint8 and out.shape == (16, 16, 4)
    np.testing.assert_array_equal(out, expected)
    assert not np.array_equal(out, cv2.resize(img[1:7, 3:9], (16, 16), interpolation=cv2.INTER_AREA))


def test_shrinking_uses_area_on_padded_crop():
    img = _random_rgba(10, 10)
    crop = Crop(10, 10, 0, 4, 2, 8, 2, 0, 0, 0, 6, 6)
    padded = np.pad(img[0:4, 2:8], ((2, 0), (0, 0), (0, 0)))
    out = crop_and_resize(img, crop, 4)
    np.testing.assert_array_equal(out, cv2.resize(padded, (4, 4), interpolation=cv2.INTER_AREA))
    assert not np.array_equal(out, cv2.resize(padded, (4, 4), interpolation=cv2.INTER_LINEAR))


def test_same_size_is_plain_crop_and_pad():
    img = _random_rgba(10, 10)
    crop = Crop(10, 10, 2, 8, 6, 10, 0, 0, 0, 2, 6, 6)
    out = crop_and_resize(img, crop, 6)
    np.testing.assert_array_equal(out[:, :4], img[2:8, 6:10])
    assert not out[:, 4:].any()


def test_labels_use_nearest_exact_and_keep_float():
    label = np.random.default_rng(1).random((10, 12, 4)).astype(np.float32)
    crop = Crop(10, 12, 1, 7, 3, 9, 0, 0, 0, 0, 6, 6)
    for size in (16, 4):
        out = crop_and_resize(label, crop, size, nearest=True)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(
            out, cv2.resize(label[1:7, 3:9], (size, size), interpolation=cv2.INTER_NEAREST_EXACT))
    # 6 -> 12 is an exact 2x repeat: every value comes from the label unchanged
    out = crop_and_resize(label, crop, 12, nearest=True)
    np.testing.assert_array_equal(out, label[1:7, 3:9].repeat(2, 0).repeat(2, 1))


def test_single_channel_keeps_its_axis():
    img = _random_rgba(10, 12)[:, :, :1]
    out = crop_and_resize(img, Crop(10, 12, 1, 7, 3, 9, 0, 0, 0, 0, 6, 6), 16)
    assert out.shape == (16, 16, 1)


# --------------------------------------------------------------------------------------------------- output


def test_to_uint8_truncates():
    x = np.array([0.999, 1.5, -0.1, 0.5, 1.0, 0.0, np.nan], np.float32)
    assert to_uint8(x).tolist() == [254, 255, 0, 127, 255, 0, 0]


def test_paste_back_lands_in_the_box():
    crop = Crop(10, 12, 1, 7, 3, 9, 0, 0, 0, 0, 6, 6)
    render = np.full((8, 8, 4), 255, np.uint8)
    out = paste_back(render, crop, (10, 12))
    assert out.shape == (10, 12, 4) and out.dtype == np.uint8
    expected = np.zeros((10, 12), bool)
    expected[1:7, 3:9] = True
    np.testing.assert_array_equal(out[:, :, 3] == 255, expected)
    assert not out[~expected].any()


def test_paste_back_drops_padding():
    crop = Crop(10, 10, 0, 4, 2, 8, 2, 0, 0, 0, 6, 6)
    render = _random_rgba(6, 6)
    out = paste_back(render, crop, (10, 10))
    np.testing.assert_array_equal(out[0:4, 2:8], render[2:6])
    out[0:4, 2:8] = 0
    assert not out.any()


def test_paste_back_resizes_with_area():
    crop = Crop(10, 12, 1, 7, 3, 9, 0, 0, 0, 0, 6, 6)
    render = _random_rgba(16, 16)
    out = paste_back(render, crop, (10, 12))
    np.testing.assert_array_equal(out[1:7, 3:9], cv2.resize(render, (6, 6), interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("rows, cols", [(slice(0, 2), slice(2, 8)), (slice(2, 8), slice(8, 10)), (slice(3, 7), slice(1, 9))])
def test_crop_paste_round_trip_is_identity_inside_the_box(rows, cols):
    img = _random_rgba(10, 10, seed=3)
    img[:, :, 3] = _alpha(10, 10, rows, cols)
    crop = square_crop_box(img[:, :, 3])
    assert crop.side_h == crop.side_w
    back = paste_back(crop_and_resize(img, crop, crop.side_h), crop, (10, 10))
    box = (slice(crop.crop_top, crop.crop_bottom), slice(crop.crop_left, crop.crop_right))
    np.testing.assert_array_equal(back[box], img[box])
    back[box] = 0
    assert not back.any()


def test_paste_back_of_bad_frame_is_transparent():
    out = paste_back(np.full((8, 8, 4), 255, np.uint8), None, (5, 7))
    assert out.shape == (5, 7, 4) and not out.any()


# --------------------------------------------------------------------------------------------------- readers


def test_read_rgba_premultiplies_with_truncation(tmp_path):
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[0, 0] = (200, 100, 50, 128)
    bgra[0, 1] = (200, 100, 50, 0)
    bgra[0, 2] = (200, 100, 50, 255)
    bgra[1, 0] = (255, 255, 255, 1)
    rgba = read_rgba(_write_bgra(tmp_path / "p.png", bgra))
    assert rgba.dtype == np.uint8 and rgba.shape == (2, 3, 4)
    # 50 * 128/255 = 25.098, 100 * 128/255 = 50.196, 200 * 128/255 = 100.39: truncated
    assert rgba[0, 0].tolist() == [25, 50, 100, 128]
    assert rgba[0, 1].tolist() == [0, 0, 0, 0]
    assert rgba[0, 2].tolist() == [50, 100, 200, 255]
    assert rgba[1, 0].tolist() == [1, 1, 1, 1]


def test_read_rgba_three_channels_warns_and_is_opaque(tmp_path):
    path = _write_bgra(tmp_path / "rgb.png", np.full((3, 3, 3), (10, 20, 30), np.uint8))
    with pytest.warns(UserWarning, match="rgb.png"):
        rgba = read_rgba(path)
    assert rgba[0, 0].tolist() == [30, 20, 10, 255]


def test_natural_key_order():
    names = ["10.png", "2.png", "1.png", "a10.png", "a2.png", "B1.png", "0.png"]
    assert sorted(names, key=natural_key) == ["0.png", "1.png", "2.png", "10.png", "a2.png", "a10.png", "B1.png"]


def test_list_pose_files_natural_order_skips_hidden_and_folders(tmp_path):
    for i in range(12):
        (tmp_path / f"{i}.npz").write_bytes(b"")
    (tmp_path / ".5.npz.tmp").write_bytes(b"")
    (tmp_path / ".hidden.npz").write_bytes(b"")
    (tmp_path / "sub.npz").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_pose_files(tmp_path, images=False)] == [f"{i}.npz" for i in range(12)]
    with pytest.raises(ConrInputError, match=str(tmp_path)):
        list_pose_files(tmp_path, images=True)


def test_load_character_sheet(tmp_path):
    for name in ("10.png", "2.png"):
        _write_bgra(tmp_path / name, _sheet_image())
    big = _sheet_image()
    big[5:35, 8:22, 0] = 99
    _write_bgra(tmp_path / "1.png", big)
    (tmp_path / "sub").mkdir()
    sheet = load_character_sheet(tmp_path, 128)
    assert sheet.shape == (3, 128, 128, 4) and sheet.dtype == np.uint8
    # "1.png" comes first: its red-channel value (B in BGRA is 99 -> blue) marks it
    assert sheet[0, 64, 64, 2] == 99 and sheet[1, 64, 64, 2] == 30
    # the block (30 tall x 14 wide) is centred: square side 30, so columns are padded
    assert sheet[0, 64, 0, 3] == 0 and sheet[0, 0, 64, 3] == 255


def test_load_udp_pose_constructed_label(tmp_path):
    rng = np.random.default_rng(5)
    label = np.zeros((16, 16, 4), np.float32)
    label[4:12, 6:10, :3] = rng.random((8, 4, 3), dtype=np.float32)
    label[4:12, 6:10, 3] = 1.0
    path = tmp_path / "7.npz"
    np.savez_compressed(path, i=label)
    frame = load_udp_pose(path, 128)
    # tall bbox 8 x 4 at (4, 6): side 8, left = round(6 - 2) = 4
    assert frame.crop == Crop(16, 16, 4, 12, 4, 12, 0, 0, 0, 0, 8, 8)
    assert frame.name == "7" and frame.frame_hw == (16, 16) and frame.rgb is None
    assert frame.xyz.dtype == np.float32 and frame.xyz.shape == (128, 128, 3)
    # nearest-exact 8 -> 128 repeats every label pixel 16 times
    np.testing.assert_array_equal(frame.xyz, label[4:12, 4:12, :3].repeat(16, 0).repeat(16, 1))
    # the mask is the fake image's alpha resized linearly: 255 inside, 0 far outside
    assert frame.alpha.dtype == np.uint8 and frame.alpha.shape == (128, 128)
    assert frame.alpha[64, 64] == 255 and frame.alpha[64, 2] == 0 and frame.alpha[64, 125] == 0
    expected = cv2.resize((label[4:12, 4:12, 3] * 255).astype(np.uint8)[:, :, None].repeat(4, 2),
                          (128, 128), interpolation=cv2.INTER_LINEAR)[:, :, 3]
    np.testing.assert_array_equal(frame.alpha, expected)


def test_load_udp_pose_bad_frame(tmp_path):
    path = tmp_path / "0.npz"
    np.savez(path, i=np.zeros((20, 30, 4), np.float32))
    frame = load_udp_pose(path, 128)
    assert frame.crop is None and frame.frame_hw == (20, 30)
    assert not frame.xyz.any() and not frame.alpha.any() and frame.xyz.shape == (128, 128, 3)
    assert paste_back(np.full((128, 128, 4), 255, np.uint8), frame.crop, frame.frame_hw).shape == (20, 30, 4)


def test_load_pose_image(tmp_path):
    path = _write_bgra(tmp_path / "3.png", _sheet_image())
    frame = load_pose_image(path, 128)
    assert frame.xyz is None and frame.rgb.shape == (128, 128, 3) and frame.alpha.shape == (128, 128)
    assert frame.rgb[64, 64].tolist() == [90, 60, 30] and frame.frame_hw == (40, 30)


def test_read_udp_16bit_png_is_scaled(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint16)
    rgba[1, 2] = (65535, 0, 32768, 65535)
    path = _write_bgra(tmp_path / "u.png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    label = read_udp(path)
    assert label.dtype == np.float32
    np.testing.assert_allclose(label[1, 2], [1.0, 0.0, 32768 / 65535, 1.0])
    assert not label[0, 0].any()


# --------------------------------------------------------------------------------------------------- bad input


def test_missing_folder(tmp_path):
    with pytest.raises(ConrInputError, match="nope"):
        load_character_sheet(tmp_path / "nope", 128)
    with pytest.raises(ConrInputError, match="nope"):
        list_pose_files(tmp_path / "nope", images=False)


def test_empty_folder(tmp_path):
    folder = tmp_path / "empty_sheet"
    folder.mkdir()
    (folder / ".hidden.png").write_bytes(b"")
    (folder / "sub.png").mkdir()
    with pytest.raises(ConrInputError, match="empty_sheet"):
        load_character_sheet(folder, 128)
    with pytest.raises(ConrInputError, match="empty_sheet"):
        list_pose_files(folder, images=False)


def test_not_a_folder(tmp_path):
    path = tmp_path / "file.png"
    path.write_bytes(b"x")
    with pytest.raises(ConrInputError, match="file.png"):
        load_character_sheet(path, 128)


def test_opaque_sheet_image(tmp_path):
    img = np.full((20, 20, 4), 255, np.uint8)
    img[0, 0, 3] = 0
    _write_bgra(tmp_path / "0_ok.png", _sheet_image())
    _write_bgra(tmp_path / "1_opaque.png", img)
    with pytest.raises(ConrInputError, match=r"1_opaque\.png is 95% or more opaque"):
        load_character_sheet(tmp_path, 128)


def test_empty_sheet_image(tmp_path):
    _write_bgra(tmp_path / "blank.png", np.zeros((20, 20, 4), np.uint8))
    with pytest.raises(ConrInputError, match=r"blank\.png is \(nearly\) empty"):
        load_character_sheet(tmp_path, 128)


def test_truncated_png(tmp_path):
    ok, buf = cv2.imencode(".png", _random_rgba(32, 32))
    path = tmp_path / "cut.png"
    path.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(ConrInputError, match="cut.png"):
        read_rgba(path)
    with pytest.raises(ConrInputError, match="cut.png"):
        read_udp(path)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ConrInputError, match="notes.png"):
        read_rgba(path)
    with pytest.raises(ConrInputError, match="notes.png"):
        load_character_sheet(tmp_path, 128)


def test_grayscale_image(tmp_path):
    path = _write_bgra(tmp_path / "gray.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ConrInputError, match="gray.png"):
        read_rgba(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConrInputError, match="absent.png"):
        read_rgba(tmp_path / "absent.png")
    with pytest.raises(ConrInputError, match="absent.npz"):
        read_udp(tmp_path / "absent.npz")


def test_npz_without_key_i(tmp_path):
    path = tmp_path / "nokey.npz"
    np.savez(path, x=np.zeros((4, 4, 4), np.float32))
    with pytest.raises(ConrInputError, match=r"nokey\.npz.*'i'"):
        read_udp(path)


def test_npz_with_object_array(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, i=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ConrInputError, match=r"obj\.npz.*'i'"):
        read_udp(path)


def test_corrupt_npz(tmp_path):
    path = tmp_path / "broken.npz"
    np.savez(path, i=np.zeros((4, 4, 4), np.float32))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ConrInputError, match="broken.npz"):
        read_udp(path)
    path.write_text("not a zip at all")
    with pytest.raises(ConrInputError, match="broken.npz"):
        read_udp(path)


def test_udp_with_three_channels(tmp_path):
    path = tmp_path / "rgb.npz"
    np.savez(path, i=np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ConrInputError, match=r"rgb\.npz: has 3 channels, a UDP frame needs 4"):
        read_udp(path)
    png = _write_bgra(tmp_path / "rgb3.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ConrInputError, match=r"rgb3\.png: has 3 channels"):
        read_udp(png)


def test_udp_with_nan(tmp_path):
    path = tmp_path / "nan.npz"
    label = np.zeros((4, 4, 4), np.float32)
    label[0, 0, 0] = np.nan
    np.savez(path, i=label)
    with pytest.raises(ConrInputError, match="nan.npz"):
        read_udp(path)


@pytest.mark.parametrize("size", [100, 200])
def test_bad_size_in_loaders(tmp_path, size):
    _write_bgra(tmp_path / "0.png", _sheet_image())
    with pytest.raises(ConrInputError, match="--size"):
        load_character_sheet(tmp_path, size)


# --------------------------------------------------------------------------------------------------- atomic


def test_write_png_atomic(tmp_path):
    rgba = _random_rgba(5, 6)
    path = tmp_path / "out.png"
    write_png_atomic(path, rgba)
    assert os.listdir(tmp_path) == ["out.png"]
    back = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
    np.testing.assert_array_equal(back, rgba)


def test_atomic_write_bytes_and_path(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"abc")
    assert (tmp_path / "a.bin").read_bytes() == b"abc"
    with atomic_path(tmp_path / "b.npz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".npz"
        np.savez(tmp, i=np.ones(3))
    with np.load(tmp_path / "b.npz") as z:
        assert z["i"].tolist() == [1, 1, 1]
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "c.npz") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.npz"]


def test_atomic_paths_all_or_nothing(tmp_path):
    finals = [tmp_path / "a.mp4", tmp_path / "b.webm", tmp_path / "report.json"]
    with pytest.raises(RuntimeError):
        with atomic_paths(finals) as tmps:
            assert [t.suffix for t in tmps] == [".mp4", ".webm", ".json"]
            assert all(t.parent == tmp_path and t.name.startswith(".") for t in tmps)
            tmps[0].write_bytes(b"done")
            raise RuntimeError("the second writer failed")
    assert os.listdir(tmp_path) == []  # nothing renamed, no temporary left
    with atomic_paths(finals) as tmps:
        for i, t in enumerate(tmps):
            t.write_text(str(i))
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "b.webm", "report.json"]
    assert [f.read_text() for f in finals] == ["0", "1", "2"]


def test_sweep_stale_folders_removes_only_that_folders_temporaries(tmp_path):
    folder = tmp_path / "graphs"
    with pytest.raises(RuntimeError), atomic_folder(folder) as tmp:
        raise RuntimeError("failed")
    assert not tmp.exists()
    stale = tmp_path / "graphs.tmp-killed1"  # what a killed atomic_folder(folder) leaves
    stale.mkdir()
    (stale / "model.json").write_text("{}")
    other = tmp_path / "other.tmp-killed2"
    other.mkdir()
    assert sweep_stale_folders(folder) == [stale]
    assert sorted(os.listdir(tmp_path)) == ["other.tmp-killed2"]


def test_model_arrays_are_nchw_in_unit_range_and_float32_matches_a_float32_division(tmp_path):
    """sheet_array / udp_arrays / pose_image_array: the one conversion of decoded frames into model inputs. In float32
    every uint8 level gives the float32 quotient (what the renderer always computed); in float64 the exact one."""
    levels = np.arange(256, dtype=np.uint8)
    sheet_u8 = np.stack([np.stack([levels.reshape(16, 16)] * 4, axis=2)] * 2)  # (2, 16, 16, 4)
    sheet = sheet_array(sheet_u8)
    assert sheet.shape == (2, 4, 16, 16) and sheet.dtype == np.float32 and sheet.flags.c_contiguous
    np.testing.assert_array_equal(sheet[0, 0].ravel(), levels.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(sheet_array(sheet_u8, np.float64)[1, 3].ravel(), levels / 255.0)

    label = np.zeros((128, 128, 4), np.float32)
    label[32:96, 32:96] = (0.25, 0.5, 0.75, 1.0)
    np.savez(tmp_path / "0.npz", i=label)
    frame = load_udp_pose(tmp_path / "0.npz", 128)
    xyz, alpha = udp_arrays([frame, frame])
    assert xyz.shape == (2, 3, 128, 128) and alpha.shape == (2, 1, 128, 128)
    assert xyz.dtype == alpha.dtype == np.float32 and xyz.flags.c_contiguous and alpha.flags.c_contiguous
    np.testing.assert_array_equal(xyz[1], frame.xyz.transpose(2, 0, 1))
    np.testing.assert_array_equal(alpha[0, 0], frame.alpha.astype(np.float32) / np.float32(255))
    assert frame.nbytes == frame.xyz.nbytes + frame.alpha.nbytes

    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[8:56, 8:56] = (200, 100, 50, 255)
    cv2.imwrite(str(tmp_path / "p.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    pose = load_pose_image(tmp_path / "p.png", 128)
    rgb = pose_image_array([pose], np.float64)
    assert rgb.shape == (1, 3, 128, 128) and rgb.dtype == np.float64
    np.testing.assert_array_equal(rgb[0], pose.rgb.transpose(2, 0, 1) / 255.0)
