"""The whole inference step, Paddle vs the PyTorch reference, on the sample data through the shared pipeline:
final RGBA and the written uint8 frames (official truncation and paste-back)."""
from __future__ import annotations

import numpy as np
import pytest

from conr_common.verification.compare import diff, pixel_agreement
from conr_common.data.pipeline import paste_back, to_uint8
from parity_tests.harness import end_to_end, pose_input, sheet_input
from conr_common.verification.tolerances import PIXEL_MAX_LEVELS, PIXEL_MIN_IDENTICAL, RGBA_ATOL_FP32

CASES = [
    pytest.param(128, 1, 2, id="128px-1view-2frames"),
    pytest.param(128, 2, 1, id="128px-2views"),
    pytest.param(128, 4, 2, id="128px-4views-2frames", marks=pytest.mark.slow),
    pytest.param(256, 4, 1, id="256px-4views", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("size,views,frames", CASES)
def test_end_to_end_rgba_and_frames(torch_model, paddle_model, samples, size, views, frames):
    sheet = sheet_input(samples, size, views)
    xyz, alpha, poses = pose_input(samples, size, frames)
    ref, out = end_to_end(torch_model, paddle_model, sheet, xyz, alpha)
    assert ref.shape == out.shape == (frames, 4, size, size)
    d = diff(ref, out)
    print(f"\n{size}px {views} views: final RGBA {d}")
    assert d.max_abs <= RGBA_ATOL_FP32, f"final RGBA: {d}"
    # premultiplied output: colour never exceeds alpha
    assert np.all(out[:, :3] <= out[:, 3:4] + 1e-6)

    for i, pose in enumerate(poses):
        frame_ref = paste_back(to_uint8(ref[i].transpose(1, 2, 0)), pose.crop, pose.frame_hw)
        frame_out = paste_back(to_uint8(out[i].transpose(1, 2, 0)), pose.crop, pose.frame_hw)
        assert frame_out.shape == (*pose.frame_hw, 4)
        same, levels = pixel_agreement(frame_ref, frame_out)
        print(f"frame {pose.name}: {same:.6%} identical, max {levels} level(s)")
        assert same >= PIXEL_MIN_IDENTICAL and levels <= PIXEL_MAX_LEVELS
