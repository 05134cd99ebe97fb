"""Shared plumbing of the parity tests: sample inputs through the shared data pipeline, and both models run on
the same numpy arrays, stage by stage ("each network alone") and end to end."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import paddle
import torch

from conr_common.contract.config import NETWORK_NAMES
from conr_common.verification.draws import SEEDED, WeightDraw
from conr_common.data.pipeline import (PoseFrame, list_pose_files, load_character_sheet, load_pose_image, load_udp_pose,
                                   pose_image_array, sheet_array, udp_arrays)


ROOT = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python process of the tests: this checkout first on PYTHONPATH (so the child
    imports the code under test, not an installed copy), plus `extra` (e.g. CONR_PADDLE_CACHE)."""
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


def sheet_input(samples, size: int, views: int, dtype: str = "float32") -> np.ndarray:
    """(M, 4, S, S) premultiplied RGB + alpha in [0, 1] from the first `views` sample views."""
    return sheet_array(load_character_sheet(samples.character_sheet, size)[:views], dtype)


def pose_input(samples, size: int, frames: int, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray, list[PoseFrame]]:
    """xyz (B, 3, S, S) and alpha (B, 1, S, S) of the first `frames` UDP frames, as the official loader builds them."""
    poses = [load_udp_pose(p, size) for p in list_pose_files(samples.poses, images=False)[:frames]]
    xyz, alpha = udp_arrays(poses, dtype)
    return xyz, alpha, poses


def pose_image_input(samples, size: int, dtype: str = "float32") -> np.ndarray:
    pose = load_pose_image(list_pose_files(samples.pose_images, images=True)[0], size)
    return pose_image_array([pose], dtype)


def _np(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else x.numpy()


def _side_stages(model, to_tensor, no_grad, sheet, xyz, alpha, pose_rgb, fed: dict | None
                 ) -> tuple[list[tuple[str, np.ndarray]], dict]:
    """One side's stages, (stage, output) in order. fed None: this is the reference, and what it computes is
    returned as `fed`, what every network of the port is then fed (the shader and decoder get the reference's own
    features, so their numbers show only their own error); else the networks take `fed` where those go in."""
    T = to_tensor
    with no_grad():
        parsed = model.parse_sheet(T(sheet))
        out = [(f"udpparsernet.features[{i}]", _np(f)) for i, f in enumerate(parsed.features)]
        out.append(("udpparsernet.udp", _np(model.parse_pose(T(pose_rgb)))))
        target = model.encode_target(T(xyz), T(alpha))
        out += [(f"target_pose_encoder.features[{i}]", _np(f)) for i, f in enumerate(target)]
        reference = fed is None
        if reference:
            fed = {"features": [_np(f)[None] for f in parsed.features], "reference": _np(parsed.reference)[None],
                   "target": [_np(f) for f in target]}
        levels = model.shader.run_levels([T(f) for f in fed["target"]], T(fed["reference"]),
                                         [T(f) for f in fed["features"]])
        for level, outputs in enumerate(levels):
            out += [(f"shader.level{level}.{k}", _np(v)) for k, v in outputs.items()]
        if reference:
            fed["message"] = _np(levels[-1]["message"])
        out.append(("rgbadecodernet.rgba", _np(model.rgbadecodernet(T(fed["message"])))))
    return out, fed


def reference_stages(tm, sheet, xyz, alpha, pose_rgb) -> tuple[list[tuple[str, np.ndarray]], dict]:
    """The reference's half of `network_stages`: (stage, output) in order, and what each network of the port is fed
    (the reference's own upstream outputs), for `port_stages`. Apart, so that a caller can drop one model before it
    builds the other (test_float64: two float64 models never resident together)."""
    return _side_stages(tm, torch.from_numpy, torch.no_grad, sheet, xyz, alpha, pose_rgb, None)


def port_stages(pm, sheet, xyz, alpha, pose_rgb, fed: dict) -> list[tuple[str, np.ndarray]]:
    """The port's half of `network_stages`: the same stages in the same order, each network fed `fed`
    (`reference_stages`) where the reference's upstream outputs go in."""
    return _side_stages(pm, paddle.to_tensor, paddle.no_grad, sheet, xyz, alpha, pose_rgb, fed)[0]


def paired_stages(reference: list[tuple[str, np.ndarray]], port: list[tuple[str, np.ndarray]]
                  ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(stage, reference, paddle) from the two halves; a stage missing on one side is an error, not a skipped row."""
    if [n for n, _ in reference] != [n for n, _ in port]:
        raise AssertionError(f"stages differ: {[n for n, _ in reference]} vs {[n for n, _ in port]}")
    return [(n, a, b) for (n, a), (_, b) in zip(reference, port)]


def network_stages(tm, pm, sheet, xyz, alpha, pose_rgb) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Each network alone on identical inputs (the reference's own upstream outputs): (stage, reference, paddle)."""
    reference, fed = reference_stages(tm, sheet, xyz, alpha, pose_rgb)
    return paired_stages(reference, port_stages(pm, sheet, xyz, alpha, pose_rgb, fed))


def end_to_end(tm, pm, sheet, xyz, alpha) -> tuple[np.ndarray, np.ndarray]:
    """The whole inference step on each side independently: premultiplied RGBA (B, 4, S, S)."""
    with torch.no_grad(), paddle.no_grad():
        ref = tm.render(tm.parse_sheet(torch.from_numpy(sheet)), torch.from_numpy(xyz), torch.from_numpy(alpha))
        out = pm.render(pm.parse_sheet(paddle.to_tensor(sheet)), paddle.to_tensor(xyz), paddle.to_tensor(alpha))
    return _np(ref), _np(out)


def models_for_draw(draw: WeightDraw, seeded_models: tuple):
    """(torch reference in eval mode, Paddle port) loaded with one weight draw: for the seeded draw the session's
    `seeded_models` (conftest's torch_model, paddle_model: nothing is built); other draws are new pairs
    (`torch_for_draw`, `paddle_like`): drop every reference to them after use and call `release_models()`."""
    if draw == SEEDED:
        return seeded_models
    tm = torch_for_draw(draw)
    return tm, paddle_like(tm)


def torch_for_draw(draw: WeightDraw):
    """The torch reference (eval mode) loaded with a non-seeded draw, alone: `paddle_like` gives its Paddle twin
    when it is needed, so that the two need not be resident together (`models_for_draw` builds both)."""
    from conr_torch_ref.model import load_networks, unloaded
    from conr_torch_ref.seeded import seeded_state_dicts

    if draw == SEEDED:
        raise ValueError("the seeded draw is the session's pair (conftest's torch_model, paddle_model)")
    states = {n: {k: v.numpy() for k, v in s.items()} for n, s in seeded_state_dicts(draw).items()}
    return load_networks(unloaded(), states).eval()


def paddle_like(tm):
    """The Paddle port holding the tensors of the float32 torch model `tm`, through the converter's mapping
    (`torch_to_paddle`), as `models_for_draw` builds its Paddle side."""
    from conr_common.contract.manifest import torch_to_paddle
    from conr_paddle.model import load_networks, unloaded

    return load_networks(unloaded(), {n: torch_to_paddle(n, {k: v.detach().numpy() for k, v in
                                                             getattr(tm, n).state_dict().items()})
                                      for n in NETWORK_NAMES})


def release_models() -> None:
    """Give the memory of dropped models back to the OS (garbage collection, then malloc_trim): a 180 M-parameter
    pair is about 1.5 GB, and without this the process keeps the peak of every draw it built."""
    from conr_common.platform.memory import return_freed_memory

    return_freed_memory()


def linked_folder(src: Path, dst: Path, pattern: str, only: tuple[str, ...] | None = None) -> Path:
    """`dst`, a new folder holding hard links to the files of `src` matching `pattern` (a session's weight files:
    0 bytes written instead of 0.7 GB) and real copies of its other files (a report a test may edit in place);
    only: the names of the files to take (default: all of them).

    Read-only sharing: the toolkit replaces a weight file by renaming a finished temporary over it
    (`conr_common.platform.atomic`), which leaves the linked original untouched; a test must never write into a
    linked file in place. Falls back to a copy where `src` and `dst` are on different file systems (`link_or_copy`)."""
    from conr_common.platform.links import link_or_copy

    dst.mkdir()
    for f in sorted(Path(src).iterdir()):
        if not f.is_file() or (only is not None and f.name not in only):
            continue
        if f.match(pattern):
            link_or_copy(f, dst / f.name)
        else:
            shutil.copy2(f, dst / f.name)
    return dst


# The two smallest official networks (0.11 GB of the 0.72 GB set): a whole weight set for the converter's tests
# whose point is the command's behaviour, not the size of what it converts (`linked_folder(..., only=...)`).
SMALLEST_NETWORKS = ("target_pose_encoder.pth", "rgbadecodernet.pth")
