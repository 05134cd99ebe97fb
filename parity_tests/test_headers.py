"""Sizes from headers, always (issue #23, finding 4): every image format the pipeline accepts has its size read by
conr_common.data.headers, whatever Pillow's decompression-bomb limit says, and a header claiming a side above
MAX_FRAME_SIDE is refused before any decoder runs, in the CLI's readers, for `--background` and in the web app's
upload checks.

The hostile files are a few hundred bytes whose headers claim huge sizes; OpenCV's decoder is replaced by a
failing stub wherever one of them is read, so no test here ever decodes one (the 60000x60000 PNG would need 14 GB).
"""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from conr_common.platform.errors import ConrInputError
from conr_common.data.headers import MAX_FRAME_SIDE, header_shape
from parity_tests.bad_inputs import png_claiming



# --------------------------------------------------------------------------------------------------- crafted files


def jpeg_claiming(width: int, height: int) -> bytes:
    """SOI, an APP0 segment to skip, then a baseline SOF0 claiming the size (3 components), and EOI."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def webp_vp8x_claiming(width: int, height: int) -> bytes:
    body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + b"\x10\0\0\0" + (width - 1).to_bytes(3, "little") + \
        (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bmp_claiming(width: int, height: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, -height, 1, 32, 0, 0, 2835, 2835, 0, 0)  # top-down
    return b"BM" + struct.pack("<IHHI", 14 + len(dib), 0, 0, 14 + len(dib)) + dib


def tiff_claiming(width: int, height: int, order: str = ">") -> bytes:
    """A classic TIFF, either byte order, whose first IFD gives ImageWidth as LONG and ImageLength as SHORT
    (both types are allowed by the specification)."""
    magic = b"II*\0" if order == "<" else b"MM\0*"
    entries = struct.pack(order + "HHII", 256, 4, 1, width) + struct.pack(order + "HHIHH", 257, 3, 1, height, 0)
    return magic + struct.pack(order + "I", 8) + struct.pack(order + "H", 2) + entries + struct.pack(order + "I", 0)


HUGE = {  # name: file bytes whose header claims a side far above MAX_FRAME_SIDE
    "png_13400.png": png_claiming(13400, 13400),  # just above Pillow's 178.9 M pixel limit
    "png_60000.png": png_claiming(60000, 60000),  # beyond Pillow's hard limit: DecompressionBombError
    "jpeg.jpg": jpeg_claiming(60000, 60000),
    "webp_vp8x.webp": webp_vp8x_claiming(60000, 60000),
    "bmp.bmp": bmp_claiming(60000, 60000),
    "tiff_be.tif": tiff_claiming(60000, 60000, ">"),
    "tiff_le.tiff": tiff_claiming(60000, 60000, "<"),
}


@pytest.fixture()
def no_decoding(monkeypatch):
    """OpenCV's decoder replaced by a failure: a test using this proves the refusal came from the header."""
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: pytest.fail("an image was decoded before its size check"))


# --------------------------------------------------------------------------------------------------- the reader


def test_headers_of_real_files_in_every_accepted_format(tmp_path):
    """What OpenCV and Pillow write (PNG, JPEG, lossy, lossless and extended WebP, BMP, TIFF, BigTIFF): the header
    reader gives the size the decoder gives."""
    from PIL import Image

    rgba = np.random.default_rng(0).integers(0, 256, (37, 53, 4), dtype=np.uint8)
    files = []
    for suffix in (".png", ".jpg", ".webp", ".bmp", ".tif"):
        path = tmp_path / f"cv{suffix}"
        assert cv2.imwrite(str(path), rgba[:, :, :3] if suffix == ".jpg" else rgba)
        files.append(path)
    image = Image.fromarray(rgba)
    for name, picture, options in [("lossless.webp", image, {"lossless": True}), ("alpha.webp", image, {}),
                                   ("lossy.webp", image.convert("RGB"), {}),
                                   ("progressive.jpg", image.convert("RGB"), {"progressive": True}),
                                   ("big.tif", image, {"big_tiff": True})]:
        picture.save(tmp_path / name, **options)
        files.append(tmp_path / name)
    for path in files:
        decoded = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
        assert header_shape(path) == decoded.shape[:2] == (37, 53), path.name


@pytest.mark.parametrize("name", sorted(HUGE))
def test_crafted_headers_give_the_claimed_size(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(HUGE[name])
    side = 13400 if "13400" in name else 60000
    assert header_shape(path) == (side, side)


def test_reader_does_not_depend_on_pillow(tmp_path, monkeypatch):
    """Pillow's limit is a setting of its own; the reader must give the same answer whatever it is set to."""
    from PIL import Image

    path = tmp_path / "huge.png"
    path.write_bytes(HUGE["png_60000.png"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1)  # every image would be a "bomb" to Pillow now
    assert header_shape(path) == (60000, 60000)


# --------------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", sorted(HUGE))
def test_huge_header_refused_before_decoding_as_sheet_view_and_pose_image(tmp_path, no_decoding, name):
    from conr_common.data.pipeline import read_rgba

    path = tmp_path / name
    path.write_bytes(HUGE[name])
    with pytest.raises(ConrInputError, match=rf"{name}: image is \d+x\d+ pixels; the largest side accepted is "
                                             rf"{MAX_FRAME_SIDE}"):
        read_rgba(path)


@pytest.mark.parametrize("name", ["png_60000.png", "tiff_be.tif"])
def test_huge_header_refused_before_decoding_as_udp_image(tmp_path, no_decoding, name):
    from conr_common.data.pipeline import read_udp

    path = tmp_path / name
    path.write_bytes(HUGE[name])
    with pytest.raises(ConrInputError, match=rf"{name}: UDP frame is 60000x60000 pixels; the largest side"):
        read_udp(path)


def test_format_with_no_header_reader_is_refused_before_decoding(tmp_path, no_decoding):
    """OpenCV decodes by content, not by suffix: a PPM named .png claiming 60000x60000 used to go to it (Pillow
    raised its bomb error, the check was skipped). A format the reader does not know is now refused."""
    from conr_common.data.pipeline import read_rgba

    path = tmp_path / "view.png"
    path.write_bytes(b"P6\n60000 60000\n255\n" + bytes(64))
    with pytest.raises(ConrInputError, match=r"view\.png: image is not a PNG, JPEG, WebP, BMP, TIFF or OpenEXR"):
        read_rgba(path)


def test_huge_background_image_refused_before_decoding(tmp_path, no_decoding):
    from conr_app.rendering.video import parse_background

    path = tmp_path / "back.png"
    path.write_bytes(HUGE["png_60000.png"])
    with pytest.raises(ConrInputError, match=r"back\.png: background image is 60000x60000 pixels; the largest side"):
        parse_background(str(path))


# --------------------------------------------------------------------------------------------------- the web app




def test_web_upload_check_refuses_a_huge_header_with_our_line(web_ctx, no_decoding):
    """A 60000x60000 PNG header used to reach OpenCV, whose internal message came back to the page."""
    from conr_app.web.uploads import Upload, check_pose_uploads, check_sheet_view

    path = web_ctx.upload_root / "u0" / "huge.png"
    path.write_bytes(HUGE["png_60000.png"])
    image, caption = check_sheet_view(Upload.from_server_path(path), web_ctx)
    assert image is None
    assert caption.startswith("huge.png: image is 60000x60000 pixels; the largest side accepted is") \
        and "\n" not in caption, caption
    ok, message = check_pose_uploads([Upload.from_server_path(path)], True, web_ctx)
    assert not ok and message.startswith("huge.png: image is 60000x60000 pixels"), message
