"""The PyTorch reference of the render loop: official `train.py:infer` + `save_output` (megvii-research/CoNR
@ 660c4f7), one frame at a time, on the shared numpy pipeline. Parity tests and the demo compare the Paddle
renderer's frames with these.

Deliberately independent of `conr_app.rendering.render` (no batching, no resume, no atomic writes): only the data
pipeline (`conr_common.data.pipeline`) is shared, so a bug in the Paddle loop (order, batching, naming, alpha) shows.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from conr_common.data.pipeline import (
    list_pose_files,
    load_character_sheet,
    load_pose_image,
    load_udp_pose,
    paste_back,
    pose_image_array,
    sheet_array,
    to_uint8,
    udp_arrays,
)
from conr_torch_ref.model import CoNR, load_official, unloaded

__all__ = ["load_reference_model", "render_reference_frames"]


def load_reference_model(weights_dir: str | os.PathLike) -> CoNR:
    """The torch model with the four official `.pth` files of `weights_dir` (strict, weights_only)."""
    return load_official(unloaded(), weights_dir).eval()


@torch.no_grad()
def render_reference_frames(model: CoNR, character_sheet: str | os.PathLike, poses: str | os.PathLike,
                            size: int = 256, *, pose_images: bool = False,
                            names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Render the poses of folder `poses` (natural order; only the stems in `names` if given) -> {stem: uint8
    (H, W, 4) premultiplied RGBA pasted back into the pose frame}, exactly as the official loop would save them."""
    sheet_u8 = load_character_sheet(character_sheet, size)  # (M, S, S, 4)
    sheet_t = torch.from_numpy(sheet_array(sheet_u8))
    sheet = model.parse_sheet(sheet_t)
    wanted = set(names) if names is not None else None
    out: dict[str, np.ndarray] = {}
    for path in list_pose_files(poses, images=pose_images):
        if wanted is not None and path.stem not in wanted:
            continue
        frame = load_pose_image(path, size) if pose_images else load_udp_pose(path, size)
        if frame.crop is None:
            out[frame.name] = paste_back(np.zeros((size, size, 4), np.uint8), None, frame.frame_hw)
            continue
        if pose_images:
            pred = model.parse_pose(torch.from_numpy(pose_image_array([frame])))  # (1, 4, S, S)
            xyz, alpha = pred[:, :3], pred[:, 3:4]
        else:
            xyz, alpha = (torch.from_numpy(a) for a in udp_arrays([frame]))
        rgba = model.render(sheet, xyz, alpha)[0].permute(1, 2, 0).numpy()  # (S, S, 4)
        out[frame.name] = paste_back(to_uint8(rgba), frame.crop, frame.frame_hw)
    return out
