"""Image and UDP frame sizes read from file headers, before anything is decoded (issues #13 and #23).

A 100000x10 sheet PNG used to end in a MemoryError (its square crop is 100000x100000 RGBA: 37 GiB requested) and
a 20000x10 PNG took 2 GB just to be validated. `check_frame_bounds` refuses such files from their first bytes.

The headers are parsed here, for every format the pipeline reads: PNG (IHDR), JPEG (the first SOFn marker), WebP
(VP8 / VP8L / VP8X), BMP (the DIB header), TIFF and BigTIFF (the first IFD, the page OpenCV decodes), OpenEXR's
`dataWindow`, and the `.npy` header of a UDP `.npz` member. The format is recognised by its magic bytes, as OpenCV
does, not by the file's suffix. Pillow was used before for the image formats, but `Image.open` raises its own
DecompressionBombError above 178.9 M pixels, and the check was then skipped: a 717 kB PNG of 13400x13400 went to
OpenCV, which took 7 GB to decode it (issue #23). A file in none of these formats is refused here too, since
OpenCV would otherwise decode it (PPM, PFM, Radiance HDR, ...) with no size known beforehand.
"""
from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from conr_common.platform.errors import ConrInputError

__all__ = ["MAX_FRAME_SIDE", "IMAGE_FORMATS", "check_frame_bounds", "header_shape"]

# Largest side of a sheet view, a pose image or a UDP frame. The pipeline crops a square around the character, so
# a W x H file costs up to max(W, H)^2 pixels: 8192^2 RGBA is 268 MB as uint8 and 1 GB as a float32 UDP frame,
# which a 4 GB machine still holds; CoNR itself works at 256-1024 px and the official data is 1-2K per side.
MAX_FRAME_SIDE = 8192
IMAGE_FORMATS = "PNG, JPEG, WebP, BMP, TIFF or OpenEXR"  # what _image_shape understands, for messages
_HEAD_BYTES = 1 << 16  # PNG, WebP, BMP and EXR sizes lie in the first bytes; JPEG and TIFF seek further


def _png_shape(f: BinaryIO, head: bytes) -> tuple[int, int] | None:
    """IHDR is the first chunk: length, b"IHDR", width and height as big-endian uint32."""
    if len(head) < 24 or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", head, 16)
    return height, width


def _jpeg_shape(f: BinaryIO, head: bytes) -> tuple[int, int] | None:
    """Walk the markers after SOI to the first start-of-frame (SOF0-SOF15 except DHT, JPG and DAC)."""
    f.seek(2)
    while True:
        byte = f.read(1)
        while byte == b"\xff":  # fill bytes before a marker code
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length field
            continue
        if marker == 0xD9:  # end of image before any frame
            return None
        length_bytes = f.read(2)
        if len(length_bytes) < 2 or marker == 0xDA:  # end of file, or start of scan before any SOF
            return None
        length = struct.unpack(">H", length_bytes)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            frame = f.read(5)  # precision, height, width
            return (struct.unpack_from(">HH", frame, 1)) if len(frame) == 5 else None
        if length < 2:
            return None
        f.seek(length - 2, 1)


def _webp_shape(f: BinaryIO, head: bytes) -> tuple[int, int] | None:
    """RIFF....WEBP, then the first chunk: VP8X (canvas size), VP8L (lossless) or VP8 (lossy key frame)."""
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return height, width
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", head, 26)
        return height & 0x3FFF, width & 0x3FFF
    return None


def _bmp_shape(f: BinaryIO, head: bytes) -> tuple[int, int] | None:
    """BITMAPCOREHEADER (12 bytes: uint16 sides) or a later DIB header (int32 sides; negative height = top-down)."""
    if len(head) < 26:
        return None
    dib = struct.unpack_from("<I", head, 14)[0]
    if dib == 12:
        width, height = struct.unpack_from("<HH", head, 18)
        return height, width
    width, height = struct.unpack_from("<ii", head, 18)
    return abs(height), width


def _tiff_shape(f: BinaryIO, head: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first IFD, classic TIFF or BigTIFF, either byte order."""
    order = "<" if head[:2] == b"II" else ">"
    big = struct.unpack_from(order + "H", head, 2)[0] == 43
    offset_fmt, count_fmt, entry_size = ("Q", "Q", 20) if big else ("I", "H", 12)
    f.seek(8 if big else 4)
    raw = f.read(8 if big else 4)
    if len(raw) < struct.calcsize(offset_fmt):
        return None
    f.seek(struct.unpack(order + offset_fmt, raw)[0])
    raw = f.read(struct.calcsize(count_fmt))
    if len(raw) < struct.calcsize(count_fmt):
        return None
    count = min(struct.unpack(order + count_fmt, raw)[0], 4096)  # a real IFD has a few dozen entries
    entries = f.read(count * entry_size)
    sides: dict[int, int] = {}
    value_fmts = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
    for pos in range(0, len(entries) - entry_size + 1, entry_size):
        tag, kind = struct.unpack_from(order + "HH", entries, pos)
        if tag in (256, 257) and kind in value_fmts:
            sides[tag] = struct.unpack_from(order + value_fmts[kind], entries, pos + (12 if big else 8))[0]
    return (sides[257], sides[256]) if len(sides) == 2 else None


def _exr_shape(f: BinaryIO, head: bytes) -> tuple[int, int] | None:
    """(height, width) from an OpenEXR header's dataWindow attribute (box2i: xmin, ymin, xmax, ymax)."""
    pos = 8
    while pos < len(head):
        name_end = head.find(b"\0", pos)
        if name_end <= pos:
            return None  # end of header (empty name) or truncated
        type_end = head.find(b"\0", name_end + 1)
        if type_end < 0 or type_end + 5 > len(head):
            return None
        size = struct.unpack_from("<i", head, type_end + 1)[0]
        value = type_end + 5
        if head[pos:name_end] == b"dataWindow" and size == 16 and value + 16 <= len(head):
            xmin, ymin, xmax, ymax = struct.unpack_from("<4i", head, value)
            return ymax - ymin + 1, xmax - xmin + 1
        pos = value + max(size, 0)
    return None


def _is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


# (test of the first bytes, reader): the magic numbers OpenCV's own decoders recognise
_READERS: tuple[tuple[Callable[[bytes], bool], Callable[[BinaryIO, bytes], tuple[int, int] | None]], ...] = (
    (lambda head: head[:8] == b"\x89PNG\r\n\x1a\n", _png_shape),
    (lambda head: head[:3] == b"\xff\xd8\xff", _jpeg_shape),
    (_is_webp, _webp_shape),
    (lambda head: head[:2] == b"BM", _bmp_shape),
    (lambda head: head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"), _tiff_shape),
    (lambda head: head[:4] == b"\x76\x2f\x31\x01", _exr_shape),
)


def _image_shape(path: Path) -> tuple[int, int] | None:
    """(height, width) from the header of an image in one of IMAGE_FORMATS, or None (another format, or a
    header cut short)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
            for matches, reader in _READERS:
                if matches(head):
                    return reader(f, head)
    except (OSError, struct.error, OverflowError, ValueError):
        return None
    return None


def _npz_shape(path: Path, key: str) -> tuple[int, ...] | None:
    """Shape of array `key` of an .npz from its .npy header (nothing decompressed beyond the header)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in reader:
                return None
            shape, _, _ = reader[version](member, max_header_size=1 << 16)
            return tuple(int(n) for n in shape)
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError):
        return None  # the full reader reports what is wrong with the file


def header_shape(path: str | Path, npz_key: str = "i") -> tuple[int, ...] | None:
    """(height, width, ...) of an image or UDP file from its header, or None when the header is not understood.
    `.npz` files are read as archives; every other file by its magic bytes, whatever its suffix."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return _npz_shape(path, npz_key)
    return _image_shape(path)


def check_frame_bounds(path: str | Path, what: str, npz_key: str = "i") -> None:
    """Refuse a file whose header gives a side above MAX_FRAME_SIDE (or a zero side), before decoding it. An
    image whose header is not understood is refused too: nothing of unknown size reaches a decoder. (An .npz whose
    member is not understood is left to the archive reader, which reports what is wrong without decoding.)"""
    path = Path(path)
    shape = header_shape(path, npz_key)
    if shape is None or len(shape) < 2:
        if path.suffix.lower() == ".npz":
            return
        raise ConrInputError(f"{path}: {what} is not a {IMAGE_FORMATS} file, or its header is cut short or "
                             "corrupt")
    height, width = shape[0], shape[1]
    if height < 1 or width < 1:
        raise ConrInputError(f"{path}: {what} is {height}x{width} pixels (empty)")
    if max(height, width) > MAX_FRAME_SIDE:
        raise ConrInputError(f"{path}: {what} is {height}x{width} pixels; the largest side accepted is "
                             f"{MAX_FRAME_SIDE} (CoNR crops a square around the character, so a longer side costs "
                             "its square in memory)")
