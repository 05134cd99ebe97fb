"""Image and UDP frame sizes read from file headers, before anything is decoded (issue #13).

A 100000x10 sheet PNG used to end in a MemoryError (its square crop is 100000x100000 RGBA: 37 GiB requested) and
a 20000x10 PNG took 2 GB just to be validated. `check_frame_bounds` refuses such files from their first bytes:
PNG, JPEG, WebP, BMP and TIFF headers through Pillow (which reads the header only when it opens a file), OpenEXR's
`dataWindow` parsed here (Pillow has no EXR reader), and the `.npy` header of a UDP `.npz` member.
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

from .errors import ConrInputError

__all__ = ["MAX_FRAME_SIDE", "check_frame_bounds", "header_shape"]

# Largest side of a sheet view, a pose image or a UDP frame. The pipeline crops a square around the character, so
# a W x H file costs up to max(W, H)^2 pixels: 8192^2 RGBA is 268 MB as uint8 and 1 GB as a float32 UDP frame,
# which a 4 GB machine still holds; CoNR itself works at 256-1024 px and the official data is 1-2K per side.
MAX_FRAME_SIDE = 8192


def _exr_shape(path: Path) -> tuple[int, int] | None:
    """(height, width) from an OpenEXR header's dataWindow attribute (box2i: xmin, ymin, xmax, ymax)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head[:4] != b"\x76\x2f\x31\x01":
        return None
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
    """(height, width, ...) of an image or UDP file from its header, or None when the header is not understood
    (the decoder then reports the problem)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _npz_shape(path, npz_key)
    if suffix == ".exr":
        return _exr_shape(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:  # header only: Pillow decodes pixels on first access
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return height, width


def check_frame_bounds(path: str | Path, what: str, npz_key: str = "i") -> None:
    """Refuse a file whose header gives a side above MAX_FRAME_SIDE (or a zero side), before decoding it."""
    shape = header_shape(path, npz_key)
    if shape is None or len(shape) < 2:
        return
    height, width = shape[0], shape[1]
    if height < 1 or width < 1:
        raise ConrInputError(f"{path}: {what} is {height}x{width} pixels (empty)")
    if max(height, width) > MAX_FRAME_SIDE:
        raise ConrInputError(f"{path}: {what} is {height}x{width} pixels; the largest side accepted is "
                             f"{MAX_FRAME_SIDE} (CoNR crops a square around the character, so a longer side costs "
                             "its square in memory)")
