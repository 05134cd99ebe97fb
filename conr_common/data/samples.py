"""Deterministic procedural sample data for CoNR: a character sheet, a UDP pose sequence and RGBA pose images of
a small humanoid, generated in a second or two with numpy and OpenCV only (no downloads, no torch or paddle).

The humanoid is a set of spheres placed densely along bones (pelvis, chest, neck, head, ponytail, arms, hands,
legs, feet) in a standard A-pose. Rendering is orthographic with a z-buffer: for a pixel (x, y) and a sphere
(c, r) the visible depth is `c_z - sqrt(r^2 - dx^2 - dy^2)` (the camera looks along +z), and the nearest sphere
wins. Each sphere belongs to one bone, so a hit point in posed space maps back to the A-pose (canonical) position
through the inverse rigid transform of that bone: exactly what a UDP frame stores (CoNR, Lin et al. 2022,
megvii-research/CoNR @ 660c4f7: `.npz` key `i`, float32 H x W x 4, A-pose xyz in [0, 1] + visibility).

Canonical space: metres, y up, x towards the character's left hand, the character faces -z (the camera).
"""
from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conr_common.platform.atomic import atomic_write_bytes, write_png_atomic
from conr_common.platform.errors import ConrInputError

__all__ = [
    "SamplePaths",
    "SHEET_VIEWS",
    "make_character_sheet",
    "make_udp_sequence",
    "make_pose_images",
    "udp_frame",
    "ensure_samples",
    "main",
]

SAMPLES_FORMAT_VERSION = 1
MARKER_NAME = ".complete"

# (file name, camera angle about the vertical axis in degrees)
SHEET_VIEWS: tuple[tuple[str, float], ...] = (("0_front", 0.0), ("1_back", 180.0), ("2_left", 90.0), ("3_right", 270.0))

PARTS: tuple[str, ...] = ("skin", "head", "hair", "shirt", "pants", "shoes")


@dataclass(frozen=True)
class Bone:
    """A rigid body part: spheres from `start` (radius r_start) to `end` (radius r_end), rotating about `pivot`."""

    name: str
    parent: str | None
    pivot: tuple[float, float, float]
    start: tuple[float, float, float]
    end: tuple[float, float, float]
    r_start: float
    r_end: float
    part: str


def _limb(side: int, name: str, parent: str, start, end, r0: float, r1: float, part: str) -> Bone:
    """A limb on the character's left (side=+1) or right (side=-1): x mirrored."""
    s = (side * start[0], start[1], start[2])
    e = (side * end[0], end[1], end[2])
    prefix = "l_" if side > 0 else "r_"
    return Bone(prefix + name, prefix + parent if parent != "chest" and parent != "pelvis" else parent,
                s, s, e, r0, r1, part)


def _skeleton() -> tuple[Bone, ...]:
    """The A-pose humanoid, parents before children. Arms hang 40 degrees from the vertical."""
    bones = [
        Bone("pelvis", None, (0.0, 0.95, 0.0), (0.0, 0.93, 0.0), (0.0, 1.08, 0.0), 0.125, 0.115, "pants"),
        Bone("chest", "pelvis", (0.0, 1.08, 0.0), (0.0, 1.10, 0.0), (0.0, 1.36, 0.0), 0.115, 0.14, "shirt"),
        Bone("neck", "chest", (0.0, 1.42, 0.0), (0.0, 1.40, 0.0), (0.0, 1.53, 0.0), 0.045, 0.045, "skin"),
        Bone("head", "neck", (0.0, 1.52, 0.0), (0.0, 1.615, 0.0), (0.0, 1.655, 0.0), 0.105, 0.11, "head"),
        Bone("ponytail", "head", (0.0, 1.66, 0.10), (0.0, 1.66, 0.10), (0.0, 1.42, 0.17), 0.045, 0.025, "hair"),
    ]
    down = (math.sin(math.radians(40)), -math.cos(math.radians(40)))
    for side in (1, -1):
        shoulder = (0.17, 1.38, 0.0)
        elbow = (shoulder[0] + 0.28 * down[0], shoulder[1] + 0.28 * down[1], 0.0)
        wrist = (elbow[0] + 0.25 * down[0], elbow[1] + 0.25 * down[1], 0.0)
        fingers = (wrist[0] + 0.08 * down[0], wrist[1] + 0.08 * down[1], 0.0)
        bones += [
            _limb(side, "upper_arm", "chest", shoulder, elbow, 0.058, 0.046, "shirt"),
            _limb(side, "forearm", "upper_arm", elbow, wrist, 0.044, 0.034, "skin"),
            _limb(side, "hand", "forearm", wrist, fingers, 0.038, 0.03, "skin"),
            _limb(side, "thigh", "pelvis", (0.085, 0.93, 0.0), (0.105, 0.52, 0.0), 0.078, 0.056, "pants"),
            _limb(side, "shin", "thigh", (0.105, 0.52, 0.0), (0.115, 0.09, 0.0), 0.052, 0.04, "pants"),
            _limb(side, "foot", "shin", (0.115, 0.07, 0.0), (0.118, 0.04, -0.13), 0.042, 0.036, "shoes"),
        ]
    return tuple(bones)


@dataclass(frozen=True)
class _Body:
    """Spheres of the A-pose body: centres (K, 3), radii (K,), bone index and part index per sphere."""

    bones: tuple[Bone, ...]
    centres: np.ndarray
    radii: np.ndarray
    bone_of: np.ndarray
    part_of: np.ndarray
    box_min: np.ndarray  # A-pose bounding box of the body, for the UDP normalisation
    box_max: np.ndarray


def _build_body() -> _Body:
    bones = _skeleton()
    centres, radii, bone_of, part_of = [], [], [], []
    for b, bone in enumerate(bones):
        start, end = np.array(bone.start), np.array(bone.end)
        length = float(np.linalg.norm(end - start))
        # spacing of a third of the smaller radius: the union of spheres reads as a smooth capsule
        n = max(2, int(math.ceil(length / (0.33 * min(bone.r_start, bone.r_end)))) + 1)
        t = np.linspace(0.0, 1.0, n)[:, None]
        centres.append(start + t * (end - start))
        radii.append(bone.r_start + t[:, 0] * (bone.r_end - bone.r_start))
        bone_of.append(np.full(n, b))
        part_of.append(np.full(n, PARTS.index(bone.part)))
    c, r = np.concatenate(centres), np.concatenate(radii)
    return _Body(bones, c, r, np.concatenate(bone_of), np.concatenate(part_of),
                 (c - r[:, None]).min(0), (c + r[:, None]).max(0))


# --------------------------------------------------------------------------------------------------- posing


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _bone_transforms(body: _Body, local: dict[str, np.ndarray], root_shift: np.ndarray) -> list[tuple]:
    """World transform (R, t) of every bone, posed = R @ canonical + t: each bone rotates about its pivot
    (canonical coordinates) by `local[name]`, after its parent's transform."""
    index = {bone.name: i for i, bone in enumerate(body.bones)}
    out: list[tuple] = []
    for bone in body.bones:
        rl = local.get(bone.name, np.eye(3))
        j = np.array(bone.pivot)
        r, t = rl, j - rl @ j
        if bone.parent is None:
            t = t + root_shift
        else:
            rp, tp = out[index[bone.parent]]
            r, t = rp @ rl, rp @ (j - rl @ j) + tp
        out.append((r, t))
    return out


def _walk_pose(body: _Body, frame: int, frames: int, seed: int) -> list[tuple]:
    """Walk in place seen three-quarters on, swaying, while the right arm waves: every frame differs and the
    crop box moves from frame to frame. One loop over `frames`."""
    rng = np.random.default_rng(seed + 7919)
    amp = rng.uniform(0.85, 1.15)
    phase = 2 * math.pi * frame / frames + rng.uniform(0, 2 * math.pi)
    s, c = math.sin(phase), math.cos(phase)
    local = {
        "pelvis": _rot("y", math.radians(30) + 0.25 * s),
        "chest": _rot("y", -0.12 * s) @ _rot("z", 0.05 * c),
        "head": _rot("y", 0.25 * s) @ _rot("x", 0.08 * c),
        "ponytail": _rot("z", 0.25 * c),
        "l_thigh": _rot("x", 0.5 * amp * s),
        "r_thigh": _rot("x", -0.5 * amp * s),
        "l_shin": _rot("x", -(0.3 + 0.3 * c) * amp),
        "r_shin": _rot("x", -(0.3 - 0.3 * c) * amp),
        "l_upper_arm": _rot("x", -0.45 * amp * s),
        "l_forearm": _rot("x", 0.35),
        "r_upper_arm": _rot("z", -(1.45 + 0.2 * math.sin(2 * phase))),
        "r_forearm": _rot("z", -(0.5 + 0.45 * math.sin(3 * phase))),
        "r_hand": _rot("z", -0.2 * math.sin(3 * phase)),
    }
    shift = np.array([0.12 * s, 0.02 * math.cos(2 * phase), 0.0])
    return _bone_transforms(body, local, shift)


# --------------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class _Hits:
    """Per-pixel render result: hit mask (H, W) and, for the hit pixels in row-major order, canonical
    coordinates (N, 3), camera-space normals (N, 3) and part index (N,)."""

    mask: np.ndarray
    canonical: np.ndarray
    normal: np.ndarray
    part: np.ndarray


def _render(body: _Body, transforms: list[tuple], view_deg: float, size: int, scale: float,
            centre: tuple[float, float]) -> _Hits:
    """Orthographic z-buffer render of the posed spheres; `scale` pixels per metre, `centre` (x, y) in the middle."""
    view = _rot("y", math.radians(view_deg))
    rs = np.stack([transforms[b][0] for b in body.bone_of])  # (K, 3, 3)
    ts = np.stack([transforms[b][1] for b in body.bone_of])  # (K, 3)
    posed = np.einsum("kij,kj->ki", rs, body.centres) + ts
    cam = posed @ view.T  # (K, 3) camera space: x right, y up, z away from the camera
    # sphere centres and radii in pixel units; pixel (i, j) samples its centre (j + 0.5, i + 0.5)
    px = (cam[:, 0] - centre[0]) * scale + size / 2
    py = (centre[1] - cam[:, 1]) * scale + size / 2
    pz = cam[:, 2] * scale
    pr = body.radii * scale
    zbuf = np.full((size, size), np.inf)
    owner = np.full((size, size), -1, dtype=np.int64)
    for k in range(len(pr)):
        j0, j1 = max(int(px[k] - pr[k]), 0), min(int(px[k] + pr[k]) + 2, size)
        i0, i1 = max(int(py[k] - pr[k]), 0), min(int(py[k] + pr[k]) + 2, size)
        if j0 >= j1 or i0 >= i1:
            continue
        dx = np.arange(j0, j1) + 0.5 - px[k]
        dy = np.arange(i0, i1) + 0.5 - py[k]
        under = pr[k] ** 2 - dy[:, None] ** 2 - dx[None, :] ** 2  # (h, w)
        depth = pz[k] - np.sqrt(np.maximum(under, 0.0))
        window = zbuf[i0:i1, j0:j1]
        nearer = (under > 0) & (depth < window)
        window[nearer] = depth[nearer]
        owner[i0:i1, j0:j1][nearer] = k
    mask = owner >= 0
    k = owner[mask]
    ii, jj = np.nonzero(mask)
    hit_cam = np.stack([(jj + 0.5 - size / 2) / scale + centre[0],
                        centre[1] - (ii + 0.5 - size / 2) / scale,
                        zbuf[mask] / scale], axis=1)  # (N, 3)
    normal = (hit_cam - cam[k]) / body.radii[k][:, None]
    hit_world = hit_cam @ view  # inverse of the view rotation
    # canonical = R^T (p - t) of the sphere's bone
    canonical = np.einsum("nji,nj->ni", rs[k], hit_world - ts[k])
    return _Hits(mask, canonical, normal, body.part_of[k])


def _palette(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def hsv(h: float, s: float, v: float) -> np.ndarray:
        i = int(h * 6) % 6
        f = h * 6 - int(h * 6)
        p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
        return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])

    skins = ((0.98, 0.85, 0.74), (0.94, 0.78, 0.64), (0.80, 0.60, 0.45), (0.99, 0.90, 0.82))
    shirt_hue = rng.uniform()
    return {
        "skin": np.array(skins[rng.integers(len(skins))]),
        "hair": hsv(rng.uniform(), rng.uniform(0.5, 0.9), rng.uniform(0.2, 0.5)),
        "eyes": hsv(rng.uniform(), 0.8, 0.45),
        "shirt": hsv(shirt_hue, rng.uniform(0.5, 0.9), rng.uniform(0.7, 0.95)),
        "stripe": hsv((shirt_hue + 0.5) % 1.0, 0.3, 0.97),
        "pants": hsv(rng.uniform(), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.6)),
        "belt": np.array((0.25, 0.15, 0.08)),
        "shoes": hsv(rng.uniform(), 0.6, 0.25),
        "period": np.array(rng.uniform(0.045, 0.07)),
    }


def _texture(hits: _Hits, palette: dict[str, np.ndarray]) -> np.ndarray:
    """Colour (N, 3) in [0, 1] from canonical coordinates: per-part colours, stripes, face, hair; Lambert shading."""
    x, y, z = hits.canonical[:, 0], hits.canonical[:, 1], hits.canonical[:, 2]
    part = np.array(PARTS)[hits.part]
    colour = np.zeros((len(part), 3))
    for name in ("skin", "hair", "shirt", "pants", "shoes"):
        colour[part == name] = palette[name]
    head = part == "head"
    colour[head] = palette["skin"]
    hair = head & ((y > 1.665) | ((z > -0.03) & (y > 1.56)) | ((np.abs(x) > 0.085) & (y > 1.60)))
    colour[hair] = palette["hair"]
    face = head & ~hair & (z < -0.05)
    eye = face & (((np.abs(x) - 0.04) / 0.016) ** 2 + ((y - 1.625) / 0.022) ** 2 < 1)
    colour[eye] = palette["eyes"]
    colour[face & (np.abs(x) < 0.025) & (np.abs(y - 1.575) < 0.006)] = (0.8, 0.25, 0.3)
    stripes = (part == "shirt") & (np.mod(y, palette["period"]) < 0.35 * palette["period"])
    colour[stripes] = palette["stripe"]
    colour[(part == "pants") & (y > 1.03) & (y < 1.07)] = palette["belt"]
    # light from the upper left, slightly in front: keeps a 3-D look in every view
    light = np.array([-0.45, 0.55, -0.7])
    lambert = np.clip(hits.normal @ (light / np.linalg.norm(light)), 0.0, 1.0)
    return colour * (0.4 + 0.6 * lambert)[:, None]


def _render_rgba(body: _Body, transforms: list[tuple], view_deg: float, size: int, scale: float,
                 centre: tuple[float, float], palette: dict[str, np.ndarray], supersample: int = 2) -> np.ndarray:
    """Straight-alpha RGBA uint8 (size, size, 4), antialiased by rendering `supersample` times larger."""
    big = size * supersample
    hits = _render(body, transforms, view_deg, big, scale * supersample, centre)
    premult = np.zeros((big, big, 3))
    premult[hits.mask] = _texture(hits, palette)
    alpha = hits.mask.astype(np.float64)
    premult = premult.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    alpha = alpha.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    rgb = np.divide(premult, alpha[:, :, None], out=np.zeros_like(premult), where=alpha[:, :, None] > 0)
    rgba = np.concatenate([rgb, alpha[:, :, None]], axis=2)
    return np.round(np.clip(rgba, 0.0, 1.0) * 255).astype(np.uint8)


def _check_args(size: int, frames: int | None = None) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise ConrInputError(f"--size must be an integer of at least 32, got {size!r}")
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1):
        raise ConrInputError(f"--frames must be a positive integer, got {frames!r}")


def _pose_framing(size: int) -> tuple[float, tuple[float, float]]:
    # the waving arm reaches about 2.0 m: frame 2.1 m into 80% of the height
    return 0.8 * size / 2.1, (0.0, 1.0)


# --------------------------------------------------------------------------------------------------- public API


def make_character_sheet(out_dir: str | Path, size: int = 256, seed: int = 0) -> list[Path]:
    """Four A-pose views (`0_front`, `1_back`, `2_left`, `3_right`: camera at 0/180/90/270 degrees about the
    vertical axis) as RGBA PNGs on a transparent background; the body fills about 70% of the height."""
    _check_args(size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = _build_body()
    rest = _bone_transforms(body, {}, np.zeros(3))
    height = float(body.box_max[1] - body.box_min[1])
    scale = 0.7 * size / height
    centre = (0.0, float(body.box_min[1] + body.box_max[1]) / 2)
    palette = _palette(seed)
    paths = []
    for name, angle in SHEET_VIEWS:
        path = out_dir / f"{name}.png"
        write_png_atomic(path, _render_rgba(body, rest, angle, size, scale, centre, palette))
        paths.append(path)
    return paths


def udp_frame(frame: int, frames: int = 24, size: int = 256, seed: int = 0) -> np.ndarray:
    """One UDP frame float32 (size, size, 4): canonical xyz normalised to [0, 1] by the A-pose bounding box of
    the body, and visibility (1 on the body, 0 elsewhere with xyz 0)."""
    _check_args(size, frames)
    body = _build_body()
    scale, centre = _pose_framing(size)
    hits = _render(body, _walk_pose(body, frame, frames, seed), 0.0, size, scale, centre)
    label = np.zeros((size, size, 4), dtype=np.float32)
    xyz = (hits.canonical - body.box_min) / (body.box_max - body.box_min)
    label[hits.mask, :3] = np.clip(xyz, 0.0, 1.0)
    label[hits.mask, 3] = 1.0
    return label


def make_udp_sequence(out_dir: str | Path, frames: int = 24, size: int = 256, seed: int = 0) -> list[Path]:
    """The animation as UDP frames `{i}.npz` (np.savez_compressed, key `i`), written atomically."""
    _check_args(size, frames)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(frames):
        buffer = io.BytesIO()
        np.savez_compressed(buffer, i=udp_frame(i, frames, size, seed))
        path = out_dir / f"{i}.npz"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def make_pose_images(out_dir: str | Path, frames: int = 24, size: int = 256, seed: int = 0) -> list[Path]:
    """The same animation as textured RGBA PNGs `{i}.png` (input of the UDP-parser path)."""
    _check_args(size, frames)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body = _build_body()
    scale, centre = _pose_framing(size)
    palette = _palette(seed)
    paths = []
    for i in range(frames):
        path = out_dir / f"{i}.png"
        write_png_atomic(path, _render_rgba(body, _walk_pose(body, i, frames, seed), 0.0, size, scale, centre,
                                            palette))
        paths.append(path)
    return paths


@dataclass(frozen=True)
class SamplePaths:
    root: Path
    character_sheet: Path
    poses: Path
    pose_images: Path


def ensure_samples(root: str | Path, size: int = 256, frames: int = 24, seed: int = 0, *,
                   force: bool = False) -> SamplePaths:
    """Generate the sample set under `root` unless a `.complete` marker with the same parameters is there.

    The marker is written last, so an interrupted run is redone. Generation is deterministic; regenerating
    first deletes the sample files (only the names this module writes) of an earlier, different set.
    """
    _check_args(size, frames)
    root = Path(root)
    paths = SamplePaths(root, root / "character_sheet", root / "poses", root / "pose_images")
    marker = root / MARKER_NAME
    wanted = {"version": SAMPLES_FORMAT_VERSION, "size": int(size), "frames": int(frames), "seed": int(seed)}
    if not force and marker.is_file():
        try:
            if json.loads(marker.read_text()) == wanted:
                return paths
        except (ValueError, OSError):
            pass
    if root.exists() and not root.is_dir():
        raise ConrInputError(f"{root}: sample output path exists and is not a folder")
    marker.unlink(missing_ok=True)
    for folder, pattern in ((paths.poses, "*.npz"), (paths.pose_images, "*.png")):
        if folder.is_dir():
            for old in folder.glob(pattern):
                if old.stem.isdigit() and old.is_file():
                    old.unlink()
    make_character_sheet(paths.character_sheet, size, seed)
    make_udp_sequence(paths.poses, frames, size, seed)
    make_pose_images(paths.pose_images, frames, size, seed)
    atomic_write_bytes(marker, (json.dumps(wanted, sort_keys=True) + "\n").encode())
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conr_common.data.samples",
        description="Write a procedural CoNR sample: character sheet (4 views), UDP poses and RGBA pose images.",
    )
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (default 256)")
    parser.add_argument("--frames", type=int, default=24, help="number of pose frames (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="colour and animation seed (default 0)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the folder is complete")
    args = parser.parse_args(argv)
    try:
        paths = ensure_samples(args.out, args.size, args.frames, args.seed, force=args.force)
    except ConrInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"character sheet: {paths.character_sheet}")
    print(f"UDP poses:       {paths.poses}")
    print(f"pose images:     {paths.pose_images}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
