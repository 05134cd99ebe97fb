"""Framework-neutral CoNR data pipeline (numpy + OpenCV): read the character sheet and the pose frames, crop
them to a square around the alpha bounding box, resize to S x S, and paste a render back into the pose frame.

Behaviour follows the official inference path of megvii-research/CoNR @ 660c4f7: `data_loader.py`
(`FileDataset.get_gt_from_disk`, `RandomResizedCropWithAutoCenteringAndZeroPadding` at the inference settings
`scale=(1, 1), ratio=(1, 1), center_jitter=(0, 0)` used by `train.py:infer`), `conr.py` (the 95% opacity
assert on the sheet masks) and `train.py:save_output`. Deliberate differences, each a fix of something the
official code gets wrong or leaves to an assert:

* every bad input raises `ConrInputError` naming the file instead of an assert, a `cv2.error` or a crash;
* files are listed in natural order (`2` before `10`); the official `sorted(os.listdir(...))` puts `10.npz`
  before `2.npz` and names output frame k after the k-th *lexicographic* pose;
* 8/16-bit UDP images are scaled to [0, 1] (the official code would take raw integer values);
* UDP xyz or visibility outside [0, 1] is refused, and so are sheet views under 16 px per side or with an alpha
  that never reaches 32 of 255 (the official code renders all three without a word);
* an empty ("bad") pose frame becomes a fully transparent output frame; the official loader drops its crop
  record and `save_output` then fails on the missing `pose_crop`.

Nothing here imports torch or paddle.
"""
from __future__ import annotations

import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import DTypeLike

from conr_common.contract.config import SIZE_MULTIPLE
from conr_common.platform.errors import ConrInputError
from conr_common.data.headers import check_frame_bounds

__all__ = [
    "IMAGE_EXTENSIONS",
    "UDP_EXTENSIONS",
    "OPAQUE_LIMIT",
    "MIN_VIEW_SIDE",
    "MIN_PEAK_ALPHA",
    "UDP_RANGE_TOLERANCE",
    "Crop",
    "PoseFrame",
    "check_size",
    "natural_key",
    "read_rgba",
    "read_udp",
    "square_crop_box",
    "crop_and_resize",
    "load_character_sheet",
    "load_udp_pose",
    "load_pose_image",
    "list_pose_files",
    "sheet_array",
    "udp_arrays",
    "pose_image_array",
    "to_uint8",
    "paste_back",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".webp", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
UDP_EXTENSIONS: frozenset[str] = frozenset({".npz", ".exr", ".png", ".tif", ".tiff"})
# conr.py asserts that no sheet view has a mean (cropped, resized) alpha of 0.95 or more.
OPAQUE_LIMIT = 0.95
# The crop transform flags a frame whose opaque area is below this fraction of the image ("bad" sample).
MIN_OPAQUE_FRACTION = 0.001
# Smallest side of a sheet view (issue #23). Every view is cropped to a square around its character and enlarged to
# --size, at least 128 px: below 16 px that is more than 8x of interpolation, a blur rather than a drawing for the
# parser to read. A 2x2 view used to be refused for "no opaque pixels", which was not the reason.
MIN_VIEW_SIDE = 16
# Faintest sheet view accepted (issue #23): its most opaque pixel must reach this alpha level of 255 (1/8 opacity).
# RGB is premultiplied by alpha, so a view whose alpha peaks at a keeps only a + 1 levels per colour channel: below
# 32 that is less than 5 bits of the drawing, and a character sheet is an opaque drawing on a transparent background.
MIN_PEAK_ALPHA = 32
# UDP values (A-pose xyz and visibility) must lie in [0, 1]; this much outside is taken as rounding and accepted
# unchanged, as the official code would use it. 1e-3 covers one float16 step above 1 (2^-10 = 9.8e-4: EXR files are
# often half float) and float32 rounding (1.0000001) many times over, while 1.01 or -0.1 is a wrong normalisation.
UDP_RANGE_TOLERANCE = 1e-3
UDP_NPZ_KEY = "i"

# OpenCV prints decoder warnings straight to the process's stderr ("[ WARN:0@8.8] global grfmt_png.cpp:793
# readFromStreamOrBuffer PNG input buffer is incomplete"), which turned one-line errors into several lines; every
# decode failure is reported here in one line instead (issue #13).
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


# --------------------------------------------------------------------------------------------------- helpers


# Largest working size S: the fp32 step at 256 px / 4 views peaks at 3.0 GB (1.5 GB of it activations, which grow
# with S^2: about 24 GB at 1024 px); `--size 1280000` used to end in a MemoryError traceback.
MAX_SIZE = 1024


def check_size(size: int) -> None:
    """Reject a working size S that is not a positive multiple of 128 (the first shader level sees S/32 and its
    block downsamples by another 4)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ConrInputError(f"--size must be an integer multiple of {SIZE_MULTIPLE}, got {size!r}")
    if size > MAX_SIZE:
        raise ConrInputError(f"--size must be at most {MAX_SIZE}, got {size} (memory grows with its square: about "
                             "1.5 GB of activations per frame at 256 px, 16x that at 1024 px)")
    if size < SIZE_MULTIPLE or size % SIZE_MULTIPLE != 0:
        raise ConrInputError(
            f"--size must be a positive multiple of {SIZE_MULTIPLE} ({SIZE_MULTIPLE}, {2 * SIZE_MULTIPLE}, "
            f"{3 * SIZE_MULTIPLE}, ...), got {size}"
        )


def natural_key(name: str | os.PathLike) -> tuple:
    """Sort key putting `2.png` before `10.png` (digit runs compare as numbers, text case-insensitively).

    The full name is the last element, so names equal up to case or leading zeros still sort deterministically.
    """
    name = os.fspath(name)
    parts = re.split(r"(\d+)", name, flags=re.ASCII)
    # re.split with a capture group alternates text (even index) and digits (odd index): types line up.
    key = tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts))
    return key + (name,)


def _read_bytes(path: Path, what: str) -> np.ndarray:
    if not path.exists():
        raise ConrInputError(f"{path}: {what} not found")
    if not path.is_file():
        raise ConrInputError(f"{path}: {what} is not a regular file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ConrInputError(f"{path}: cannot read {what}: {e.strerror or e}") from e
    if data.size == 0:
        raise ConrInputError(f"{path}: {what} is an empty file")
    return data


def _decode(path: Path, data: np.ndarray, flags: int, what: str) -> np.ndarray:
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as e:
        raise ConrInputError(f"{path}: OpenCV cannot decode this {what}: {e.err}") from e
    if image is None:
        raise ConrInputError(f"{path}: cannot decode this {what} (truncated, corrupt or not an image)")
    return image


# --------------------------------------------------------------------------------------------------- readers


def read_rgba(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit image as uint8 (H, W, 4) RGBA with RGB premultiplied by alpha, like the official loader
    (`data_loader.py:get_gt_from_disk`, read_label=False, @660c4f7).

    Premultiplication truncates: `(rgb * (a / 255.0)).clip(0, 255).astype(uint8)`. A 3-channel image gets alpha
    255 everywhere with a warning. (Officially `cvtColor(BGRA2RGBA)` already turns a 3-channel image into 4
    channels with alpha 255, so its "transparent background is preferred" warning never fires.)
    """
    path = Path(path)
    data = _read_bytes(path, "image")
    check_frame_bounds(path, "image")
    image = _decode(path, data, cv2.IMREAD_UNCHANGED, "image")
    if image.dtype != np.uint8:
        raise ConrInputError(f"{path}: image is {image.dtype}, need an 8-bit image")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise ConrInputError(f"{path}: grayscale image, need RGB or RGBA (a character on a transparent background)")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ConrInputError(f"{path}: image has shape {image.shape}, need 3 or 4 channels")
    if image.shape[2] == 3:
        warnings.warn(f"{path}: no alpha channel; a transparent background is preferred", stacklevel=2)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        alpha = np.full(image.shape[:2] + (1,), 255, dtype=np.uint8)
        return np.concatenate([rgb, alpha], axis=2)
    rgba = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    alpha = rgba[:, :, 3:4]
    rgb = (rgba[:, :, :3] * (alpha / 255.0)).clip(0, 255).astype(np.uint8)
    return np.concatenate([rgb, alpha], axis=2)


def _udp_channels_error(path: Path, shape: tuple[int, ...]) -> ConrInputError:
    if len(shape) == 3:
        return ConrInputError(f"{path}: has {shape[2]} channels, a UDP frame needs 4 (xyz + visibility)")
    if len(shape) == 2:
        return ConrInputError(f"{path}: has 1 channel, a UDP frame needs 4 (xyz + visibility)")
    return ConrInputError(f"{path}: has shape {shape}, a UDP frame needs H x W x 4 (xyz + visibility)")


def _read_udp_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ConrInputError(f"{path}: not an .npz archive (expected key '{UDP_NPZ_KEY}')")
            if UDP_NPZ_KEY not in archive.files:
                raise ConrInputError(
                    f"{path}: no array '{UDP_NPZ_KEY}' in this .npz (keys: {', '.join(archive.files) or 'none'})"
                )
            try:
                label = archive[UDP_NPZ_KEY]
            except ValueError as e:  # object arrays need pickle, which is never allowed
                raise ConrInputError(f"{path}: array '{UDP_NPZ_KEY}' is not a plain numeric array ({e})") from e
    except ConrInputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ConrInputError(f"{path}: corrupt or unreadable .npz ({type(e).__name__}: {e})") from e
    if label.dtype.kind not in "biuf":
        raise ConrInputError(f"{path}: array '{UDP_NPZ_KEY}' has dtype {label.dtype}, need numbers")
    return label.astype(np.float32, copy=False)


def read_udp(path: str | os.PathLike) -> np.ndarray:
    """Read a UDP frame as float32 (H, W, 4): A-pose xyz in [0, 1] and visibility (`get_gt_from_disk`,
    read_label=True, @660c4f7).

    `.npz`: array `i`, loaded without pickle. Other extensions (.exr, .png, .tif): decoded unchanged and turned
    BGRA -> RGBA; float images stay float, uint16 is scaled by 1/65535 and uint8 by 1/255. The official code
    keeps raw integer values there, which cannot work (visibility 65535, xyz far outside [0, 1]).
    """
    path = Path(path)
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise ConrInputError(f"{path}: UDP frame not found" if not path.exists() else f"{path}: not a file")
        check_frame_bounds(path, "UDP frame", UDP_NPZ_KEY)
        label = _read_udp_npz(path)
    else:
        # OpenCV refuses EXR unless this is set before its first EXR decode (the official sets it at import).
        os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
        data = _read_bytes(path, "UDP frame")
        check_frame_bounds(path, "UDP frame")
        image = _decode(
            path,
            data,
            cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_UNCHANGED,
            "UDP frame",
        )
        if image.ndim != 3 or image.shape[2] != 4:
            raise _udp_channels_error(path, image.shape)
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
        if image.dtype == np.uint8:
            label = image.astype(np.float32) / np.float32(255)
        elif image.dtype == np.uint16:
            label = image.astype(np.float32) / np.float32(65535)
        elif image.dtype.kind == "f":
            label = image.astype(np.float32, copy=False)
        else:
            raise ConrInputError(f"{path}: UDP image is {image.dtype}, need float, 16-bit or 8-bit")
    if label.ndim != 3 or label.shape[2] != 4:
        raise _udp_channels_error(path, label.shape)
    if label.shape[0] == 0 or label.shape[1] == 0:
        raise ConrInputError(f"{path}: UDP frame is empty ({label.shape[0]} x {label.shape[1]})")
    if not np.isfinite(label).all():
        raise ConrInputError(f"{path}: UDP frame contains NaN or infinite values")
    _check_udp_range(path, label)
    return label


def _check_udp_range(path: Path, label: np.ndarray) -> None:
    """Refuse xyz or visibility outside [0, 1] (beyond UDP_RANGE_TOLERANCE). Refused rather than clipped: a
    frame with values of 100 or -1 was normalised wrongly (or is not a UDP frame), and clipping would render some
    other pose without a word. The check also keeps `label * 255` below float32 overflow."""
    for name, values in (("xyz", label[:, :, :3]), ("visibility", label[:, :, 3])):
        low, high = float(values.min()), float(values.max())
        if low < -UDP_RANGE_TOLERANCE or high > 1 + UDP_RANGE_TOLERANCE:
            raise ConrInputError(f"{path}: UDP {name} values range from {low:.6g} to {high:.6g}, outside [0, 1] "
                                 "(A-pose coordinates and visibility are normalised to [0, 1])")


# --------------------------------------------------------------------------------------------------- crop


@dataclass(frozen=True)
class Crop:
    """The 12 integers of the official crop record (`sample["crop"]`), in the official order."""

    im_h: int
    im_w: int
    crop_top: int
    crop_bottom: int
    crop_left: int
    crop_right: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    side_h: int
    side_w: int

    def as_array(self) -> np.ndarray:
        return np.array(astuple(self), dtype=np.int64)

    @classmethod
    def from_array(cls, values) -> Crop:
        values = np.asarray(values).reshape(-1)
        if values.size != len(fields(cls)):
            raise ValueError(f"a crop record has {len(fields(cls))} integers, got {values.size}")
        return cls(*(int(v) for v in values))


def square_crop_box(alpha: np.ndarray) -> Crop | None:
    """Square crop around the alpha bounding box: `RandomResizedCropWithAutoCenteringAndZeroPadding.__call__`
    (@660c4f7) with scale=(1, 1), ratio=(1, 1) and no jitter. Returns None where the official code flags the
    sample as "bad": bounding box at most 1 x 1, or fewer than 0.1% of the pixels opaque.
    """
    alpha = np.asarray(alpha)
    if alpha.ndim != 2:
        raise ValueError(f"alpha must be 2-D, got shape {alpha.shape}")
    im_h, im_w = alpha.shape
    mask = (alpha > 0).astype(np.uint8)
    bbox_left, bbox_top, bbox_w, bbox_h = cv2.boundingRect(mask)
    if bbox_h <= 1 and bbox_w <= 1:
        return None
    if np.sum(mask) / (im_h * im_w) < MIN_OPAQUE_FRACTION:
        return None
    # Target aspect 1 < bbox_h / bbox_w: align on the height, otherwise on the width.
    side = bbox_h if bbox_h > bbox_w else bbox_w
    # Python's round (half to even) on a float, exactly as the official code.
    virtual_top = int(round(bbox_top - (side - bbox_h) / 2))
    virtual_left = int(round(bbox_left - (side - bbox_w) / 2))
    if virtual_top < 0:
        pad_top, crop_top = -virtual_top, 0
    else:
        pad_top, crop_top = 0, virtual_top
    if virtual_left < 0:
        pad_left, crop_left = -virtual_left, 0
    else:
        pad_left, crop_left = 0, virtual_left
    if virtual_top + side > im_h:
        pad_bottom, crop_bottom = virtual_top + side - im_h, im_h
    else:
        pad_bottom, crop_bottom = 0, virtual_top + side
    if virtual_left + side > im_w:
        pad_right, crop_right = virtual_left + side - im_w, im_w
    else:
        pad_right, crop_right = 0, virtual_left + side
    side_h = crop_bottom - crop_top + pad_top + pad_bottom
    side_w = crop_right - crop_left + pad_left + pad_right
    return Crop(im_h, im_w, crop_top, crop_bottom, crop_left, crop_right,
                pad_top, pad_bottom, pad_left, pad_right, side_h, side_w)


def crop_and_resize(image: np.ndarray, crop: Crop, size: int, *, nearest: bool = False) -> np.ndarray:
    """Crop, zero-pad and resize to size x size, keeping the dtype (official transform, @660c4f7).

    Interpolation as the official: INTER_LINEAR when enlarging both sides, INTER_AREA otherwise; with
    `nearest=True` (UDP labels) INTER_NEAREST_EXACT. No resize when the padded crop is already size x size.
    """
    if image.shape[:2] != (crop.im_h, crop.im_w):
        raise ValueError(f"crop is for a {crop.im_h} x {crop.im_w} image, got shape {image.shape}")
    out = image[crop.crop_top:crop.crop_bottom, crop.crop_left:crop.crop_right]
    if crop.pad_top + crop.pad_bottom + crop.pad_left + crop.pad_right > 0:
        padding = [(crop.pad_top, crop.pad_bottom), (crop.pad_left, crop.pad_right)]
        padding += [(0, 0)] * (out.ndim - 2)
        out = np.pad(out, padding, mode="constant")
    h, w = out.shape[:2]
    if (h, w) != (size, size):
        if nearest:
            interpolation = cv2.INTER_NEAREST_EXACT
        elif size > h and size > w:
            interpolation = cv2.INTER_LINEAR
        else:
            interpolation = cv2.INTER_AREA
        resized = cv2.resize(out, (size, size), interpolation=interpolation)
        # cv2.resize drops a trailing axis of length 1
        out = resized.reshape((size, size) + out.shape[2:])
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------------------------------- loaders


def _list_files(folder: Path, extensions: frozenset[str], what: str) -> list[Path]:
    if not folder.exists():
        raise ConrInputError(f"{folder}: {what} folder not found")
    if not folder.is_dir():
        raise ConrInputError(f"{folder}: {what} path is not a folder")
    files = [
        p for p in folder.iterdir()
        if not p.name.startswith(".") and p.suffix.lower() in extensions and p.is_file()
    ]
    if not files:
        raise ConrInputError(f"{folder}: {what} folder has no files ({' '.join(sorted(extensions))})")
    return sorted(files, key=lambda p: natural_key(p.name))


def load_character_sheet(folder: str | os.PathLike, size: int) -> np.ndarray:
    """All sheet images of `folder` (natural order) as uint8 (M, size, size, 4): premultiplied RGB + alpha,
    each cropped around its own alpha and resized. Rejects, in this order, a view with a side under MIN_VIEW_SIDE,
    one (nearly) empty, one whose alpha never reaches MIN_PEAK_ALPHA, and one whose cropped alpha is 95% or more
    opaque (the official `conr.py:shader_forward` assert, @660c4f7)."""
    check_size(size)
    views = []
    for path in _list_files(Path(folder), IMAGE_EXTENSIONS, "character sheet"):
        rgba = read_rgba(path)
        if min(rgba.shape[:2]) < MIN_VIEW_SIDE:
            raise ConrInputError(f"{path}: sheet view is {rgba.shape[0]}x{rgba.shape[1]} pixels; each side must be "
                                 f"at least {MIN_VIEW_SIDE} (every view is enlarged to --size, 128 px or more)")
        crop = square_crop_box(rgba[:, :, 3])
        if crop is None:
            raise ConrInputError(f"{path} is (nearly) empty: no opaque pixels (or fewer than 0.1% of the image)")
        _check_faint_alpha(path, rgba[:, :, 3])
        view = crop_and_resize(rgba, crop, size)
        if np.mean(view[:, :, 3] / 255.0) >= OPAQUE_LIMIT:
            raise ConrInputError(
                f"{path} is 95% or more opaque: CoNR needs a character on a transparent background"
            )
        views.append(view)
    return np.stack(views)  # (M, S, S, 4)


def _check_faint_alpha(path: Path, alpha: np.ndarray) -> None:
    """Refuse a sheet view whose alpha never reaches MIN_PEAK_ALPHA (a drawing all but invisible)."""
    peak = int(alpha.max())
    if peak < MIN_PEAK_ALPHA:
        raise ConrInputError(f"{path}: alpha channel is nearly empty: its most opaque pixel is {peak} of 255, below "
                             f"{MIN_PEAK_ALPHA} (CoNR needs a character drawn opaque on a transparent background)")


@dataclass(frozen=True, eq=False)
class PoseFrame:
    """One pose frame cropped to S x S. UDP frames fill `xyz`; pose images (parser path) fill `rgb`.
    `crop` is None for an empty ("bad") frame, whose output is a fully transparent frame of `frame_hw`."""

    name: str  # file stem, used to name the output frame
    xyz: np.ndarray | None  # float32 (S, S, 3), A-pose coordinates in [0, 1]
    alpha: np.ndarray | None  # uint8 (S, S)
    rgb: np.ndarray | None  # uint8 (S, S, 3), premultiplied
    crop: Crop | None
    frame_hw: tuple[int, int]

    @property
    def nbytes(self) -> int:
        """Bytes held by the frame's arrays."""
        return sum(a.nbytes for a in (self.xyz, self.alpha, self.rgb) if a is not None)


def load_udp_pose(path: str | os.PathLike, size: int) -> PoseFrame:
    """A UDP pose frame, official path (@660c4f7): the crop and the mask come from a fake image
    `(label * 255).clip(0, 255).astype(uint8)` resized linear/area; xyz from the label resized nearest-exact."""
    check_size(size)
    path = Path(path)
    label = read_udp(path)
    frame_hw = (int(label.shape[0]), int(label.shape[1]))
    image = (label * 255).clip(0, 255).astype(np.uint8)
    crop = square_crop_box(image[:, :, 3])
    if crop is None:
        return PoseFrame(path.stem, np.zeros((size, size, 3), np.float32), np.zeros((size, size), np.uint8),
                         None, None, frame_hw)
    resized_image = crop_and_resize(image, crop, size)
    resized_label = crop_and_resize(label, crop, size, nearest=True)
    return PoseFrame(path.stem, np.ascontiguousarray(resized_label[:, :, :3]),
                     np.ascontiguousarray(resized_image[:, :, 3]), None, crop, frame_hw)


def load_pose_image(path: str | os.PathLike, size: int) -> PoseFrame:
    """An RGBA pose image for the UDP-parser path: premultiplied RGB and alpha, cropped around the alpha."""
    check_size(size)
    path = Path(path)
    rgba = read_rgba(path)
    frame_hw = (int(rgba.shape[0]), int(rgba.shape[1]))
    crop = square_crop_box(rgba[:, :, 3])
    if crop is None:
        return PoseFrame(path.stem, None, np.zeros((size, size), np.uint8), np.zeros((size, size, 3), np.uint8),
                         None, frame_hw)
    resized = crop_and_resize(rgba, crop, size)
    return PoseFrame(path.stem, None, np.ascontiguousarray(resized[:, :, 3]),
                     np.ascontiguousarray(resized[:, :, :3]), crop, frame_hw)


def list_pose_files(folder: str | os.PathLike, images: bool) -> list[Path]:
    """Pose files of `folder` in natural order: RGBA pose images if `images`, else UDP frames."""
    if images:
        return _list_files(Path(folder), IMAGE_EXTENSIONS, "pose image")
    return _list_files(Path(folder), UDP_EXTENSIONS, "UDP pose")


# --------------------------------------------------------------------------------------------------- model arrays
# The one place where decoded uint8/float32 HWC arrays become the model's NCHW inputs in [0, 1]. uint8 / 255 is
# computed in float64 and then cast: in float32 this gives the same values as a float32 division (checked for all
# 256 levels), and the float64 parity runs get the exact quotient.


def _unit(u8: np.ndarray, dtype: DTypeLike) -> np.ndarray:
    return np.ascontiguousarray((u8.astype(np.float64) / 255.0).astype(dtype))


def sheet_array(sheet_u8: np.ndarray, dtype: DTypeLike = "float32") -> np.ndarray:
    """Character sheet uint8 (M, S, S, 4) -> (M, 4, S, S) premultiplied RGB + alpha in [0, 1]."""
    return _unit(np.asarray(sheet_u8).transpose(0, 3, 1, 2), dtype)


def udp_arrays(frames: Sequence[PoseFrame], dtype: DTypeLike = "float32") -> tuple[np.ndarray, np.ndarray]:
    """UDP pose frames -> xyz (B, 3, S, S) and alpha (B, 1, S, S), as the official loader builds them (the model
    makes concat(xyz * alpha, alpha) itself)."""
    xyz = np.ascontiguousarray(np.stack([f.xyz for f in frames]).transpose(0, 3, 1, 2).astype(dtype))
    alpha = _unit(np.stack([f.alpha for f in frames])[:, None], dtype)
    return xyz, alpha


def pose_image_array(frames: Sequence[PoseFrame], dtype: DTypeLike = "float32") -> np.ndarray:
    """Pose images -> premultiplied RGB (B, 3, S, S) in [0, 1], the UDP parser's input."""
    return _unit(np.stack([f.rgb for f in frames]).transpose(0, 3, 1, 2), dtype)


# --------------------------------------------------------------------------------------------------- output


def to_uint8(rgba_float: np.ndarray) -> np.ndarray:
    """`clamp(x * 255, 0, 255)` truncated toward zero, like torch `.byte()` in `train.py:save_output`
    (@660c4f7). Computed in the input's float precision (float32 as in the official); NaN becomes 0."""
    x = np.asarray(rgba_float)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    scaled = np.nan_to_num(x * x.dtype.type(255), nan=0.0)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def paste_back(rgba_u8: np.ndarray, crop: Crop | None, frame_hw: tuple[int, int]) -> np.ndarray:
    """Put an S x S render back into the pose frame's geometry, as `train.py:save_output` (@660c4f7): INTER_AREA
    resize to the padded crop's size, drop the padding, place it at the crop box of a zero (transparent) frame.
    """
    frame_h, frame_w = int(frame_hw[0]), int(frame_hw[1])
    channels = rgba_u8.shape[2:]
    if crop is None:
        return np.zeros((frame_h, frame_w) + channels, dtype=rgba_u8.dtype)
    if (crop.im_h, crop.im_w) != (frame_h, frame_w):
        raise ValueError(f"crop is for a {crop.im_h} x {crop.im_w} frame, asked for {frame_h} x {frame_w}")
    out = np.zeros((frame_h, frame_w) + channels, dtype=rgba_u8.dtype)
    width = crop.crop_right - crop.crop_left + crop.pad_left + crop.pad_right
    height = crop.crop_bottom - crop.crop_top + crop.pad_top + crop.pad_bottom
    resized = cv2.resize(rgba_u8, (width, height), interpolation=cv2.INTER_AREA)
    resized = resized.reshape((height, width) + channels)
    out[crop.crop_top:crop.crop_bottom, crop.crop_left:crop.crop_right] = resized[
        crop.pad_top:height - crop.pad_bottom, crop.pad_left:width - crop.pad_right
    ]
    return out
