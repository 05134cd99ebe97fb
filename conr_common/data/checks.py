"""Input checks run before any compute, shared by both frameworks (shapes, and the values of weights)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from conr_common.platform.errors import ConrInputError
from conr_common.data.pipeline import check_size


def check_positive_int(name: str, value: object) -> None:
    """`value` is an int (not a bool) of at least 1; ConrInputError "<name> must be a positive integer" otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConrInputError(f"{name} must be a positive integer, got {value!r}")


def check_sheet_shapes(shapes: Sequence[Sequence[int]]) -> int:
    """Shapes of the sheet views, each (4, S, S) (or one stacked (M, 4, S, S)); returns S."""
    if len(shapes) == 1 and len(shapes[0]) == 4:
        shapes = [tuple(shapes[0][1:])] * int(shapes[0][0])
    if len(shapes) == 0:
        raise ConrInputError("character sheet: zero views; CoNR needs at least one sheet image")
    first = tuple(shapes[0])
    for i, shape in enumerate(shapes):
        shape = tuple(shape)
        if len(shape) != 3 or shape[0] != 4:
            raise ConrInputError(f"character sheet view {i}: shape {list(shape)}, expected (4, S, S) RGBA")
        if shape != first:
            raise ConrInputError(f"character sheet view {i}: size {list(shape[1:])} differs from view 0 {list(first[1:])}")
    _, h, w = first
    if h != w:
        raise ConrInputError(f"character sheet: views are {h}x{w}; CoNR works on square S x S inputs")
    check_size(h)
    return h


def check_pose_shape(shape: Sequence[int], size: int, channels: int, what: str = "target pose") -> None:
    """A batch of pose tensors (B, channels, S, S) matching the sheet size."""
    shape = tuple(shape)
    if len(shape) != 4 or shape[1] != channels or shape[2:] != (size, size):
        raise ConrInputError(f"{what}: shape {list(shape)}, expected (B, {channels}, {size}, {size}) to match the sheet")


def check_frames(array: np.ndarray, channels: int, size: int, what: str, count: int | None = None) -> None:
    """A fast runner's input batch (predictor, onnxruntime) is (count or any, channels, size, size). ValueError, not
    ConrInputError: the renderer builds these arrays from checked inputs, so a wrong shape here is a caller's bug,
    not the user's input. Unlike `check_pose_shape` it also holds the batch to `count` (sheet views, xyz frames)."""
    want = (count if count is not None else array.shape[0], channels, size, size)
    if array.ndim != 4 or tuple(array.shape) != want:
        raise ValueError(f"{what}: expected shape {want}, got {tuple(array.shape)}")


def check_weight_values(state: Mapping[str, object], source: str, *, allow_nonfinite: bool = False) -> None:
    """Refuse weights that cannot be the official ones: a non-float tensor, or NaN/Inf values. The error names the
    file (`source`) and the first such tensor, and counts the others. Why: NaN weights used to give fully transparent
    frames with exit 0 (eager) and a crash in the custom warp (predictor); int64 tensors loaded silently.
    allow_nonfinite: accept NaN/Inf (the converter's --allow-nonfinite, for debugging a damaged checkpoint)."""
    bad_dtype, non_finite = [], []
    for key, value in state.items():
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.dtype.kind != "f":
            bad_dtype.append(f"{key} ({arr.dtype.name})")
        elif not allow_nonfinite and not np.isfinite(arr).all():
            non_finite.append(f"{key} ({int(arr.size - np.isfinite(arr).sum())} of {arr.size} values NaN/Inf)")
    if bad_dtype:
        more = f" and {len(bad_dtype) - 1} more" if len(bad_dtype) > 1 else ""
        raise ConrInputError(f"{source}: tensor {bad_dtype[0]}{more} is not floating point; CoNR weights are float")
    if non_finite:
        more = f" and {len(non_finite) - 1} more tensor(s)" if len(non_finite) > 1 else ""
        raise ConrInputError(f"{source}: tensor {non_finite[0]}{more} has NaN or Inf values")
