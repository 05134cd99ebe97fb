"""Which stage of CoNR first produced NaN/Inf for a frame whose output was not finite (issue 23, finding 9).

The renderer checks every frame's RGBA before writing it (`check_frame`, one `np.isfinite` over (4, S, S): cheap);
only when that fails is the frame run again, eagerly and stage by stage (`first_nonfinite_stage`), to name the
first network whose output went non-finite: the parser on the sheet, the parser on a pose image, the target pose
encoder, the shader, the RGBA decoder. Weights that are finite but scaled wrongly (1e3 times the trained ones)
overflow float32 inside the networks in a few layers; the weight checks cannot see that, so the output is checked.
"""
from __future__ import annotations

import numpy as np
import paddle

from conr_common.platform.errors import ConrNonFiniteError

from conr_paddle.model import CoNR, broadcast_sheet

__all__ = ["check_frame", "first_nonfinite_stage", "nonfinite_error"]


def check_frame(rgba: np.ndarray) -> bool:
    """True when every value of one frame's output is finite."""
    return bool(np.isfinite(rgba).all())


def _finite(tensors) -> bool:
    return all(bool(paddle.isfinite(t).all()) for t in tensors)


@paddle.no_grad()
def first_nonfinite_stage(model: CoNR, sheet: np.ndarray, xyz: np.ndarray, alpha: np.ndarray,
                          rgb: np.ndarray | None = None) -> str | None:
    """The first stage whose output holds NaN/Inf for one frame run eagerly (float32, the sheet parsed as the
    renderer parses it), or None if every stage is finite. sheet (M, 4, S, S); xyz (1, 3, S, S); alpha
    (1, 1, S, S); rgb: the pose image (1, 3, S, S) when the poses are images (the parser predicts xyz and alpha)."""
    t = paddle.to_tensor
    parsed = model.parse_sheet(t(np.ascontiguousarray(sheet, np.float32)))
    if not _finite(parsed.features):
        return "the parser (udpparsernet) on the character sheet"
    if rgb is not None:
        pred = model.parse_pose(t(np.ascontiguousarray(rgb, np.float32)))
        if not _finite([pred]):
            return "the parser (udpparsernet) on the pose image"
        xyz, alpha = pred[:, :3].numpy(), pred[:, 3:4].numpy()
    target = model.encode_target(t(np.ascontiguousarray(xyz, np.float32)), t(np.ascontiguousarray(alpha, np.float32)))
    if not _finite(target):
        return "the pose encoder (target_pose_encoder)"
    reference, features = broadcast_sheet(parsed, target[0].shape[0])
    message = model.shader(target, reference, features)
    if not _finite([message]):
        return "the shader"
    if not _finite([model.rgbadecodernet(message)]):
        return "the RGBA decoder (rgbadecodernet)"
    return None


def nonfinite_error(pose: str, stage: str | None, engine: str) -> ConrNonFiniteError:
    """The one-line error for the frame of `pose` whose output was not finite, `stage` from first_nonfinite_stage."""
    where = (f"the output of {stage} became NaN/Inf" if stage is not None else
             f"the frame became NaN/Inf on the {engine} engine (every stage is finite when run eagerly)")
    return ConrNonFiniteError(
        f"{pose}: {where}, so the frame would be transparent; it was not written (frames already written are "
        f"kept). The weights are finite: are they scaled wrongly, or not trained CoNR weights?")
