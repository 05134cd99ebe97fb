"""Input checks run before any compute, shared by both frameworks (they look at shapes only)."""
from __future__ import annotations

from collections.abc import Sequence

from .errors import ConrInputError
from .pipeline import check_size


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

