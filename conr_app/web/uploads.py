"""Uploads of the web app: staging them into a job's folder, checking them as `render` will, thumbnails.

Only files that the web framework itself stored under the server's upload folder are read (a path from anywhere
else is refused), each within the context's `Limits`; they are copied into the job's own temporary folder under
names chosen here (`00000.png`, ...), in the natural order of the names the browser sent. The browser's names are
used for ordering and for messages only, never as a path: `user_message` turns server paths in an error back into
the names the user uploaded. No web framework in here.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from conr_common.platform.atomic import atomic_path
from conr_common.cli.args import one_line
from conr_common.platform.errors import ConrInputError
from conr_common.platform.outputs import check_output
from conr_common.data.pipeline import IMAGE_EXTENSIONS, UDP_EXTENSIONS, load_character_sheet, natural_key

from conr_app.web.context import AppContext

__all__ = ["Upload", "stage_uploads", "never_uploaded", "user_message", "check_sheet_view", "check_pose_uploads"]


@dataclass(frozen=True)
class Upload:
    """An uploaded file: `path` where the web framework stored it (server side), `name` what the browser called it
    (shown in messages and used for ordering; never a path)."""

    path: Path
    name: str

    @classmethod
    def from_server_path(cls, path: str | Path) -> Upload:
        """The web framework keeps the browser's file name as the last component of the stored path."""
        path = Path(path)
        return cls(path, path.name)


def _within(path: Path, root: Path) -> bool:
    try:
        path.resolve(strict=True).relative_to(root.resolve())
    except (OSError, ValueError):
        return False
    return True


def _not_uploaded(name: str) -> str:
    return f"{name}: not a file uploaded to this server"


def never_uploaded(value: object, upload_root: Path) -> str | None:
    """The one line for the first file of a request's value (the web framework's file records, dicts with a
    "path", nested in lists or dicts) that is not a regular file under `upload_root`; None if there is none."""
    if isinstance(value, dict):
        path = value.get("path")
        if isinstance(path, str):
            return None if _within(Path(path), upload_root) and Path(path).is_file() else _not_uploaded(Path(path).name)
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return next((line for line in (never_uploaded(v, upload_root) for v in value) if line), None)
    return None


def _bytes(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB" if n >= 1 << 20 else f"{n / 1024:.1f} kB"


def stage_uploads(uploads: Sequence[Upload], dest: Path, *, what: str, extensions: frozenset[str],
                  max_count: int, ctx: AppContext) -> dict[str, str]:
    """Copy `uploads` into the new folder `dest` as `00000<ext>`, `00001<ext>`, ... in the natural order of their
    browser names. Returns {server path text: browser name} for turning messages back into the user's names.
    Raises ConrInputError (one line) for a path outside the upload folder, a file type the CLI does not read,
    too many files or too many bytes."""
    if not uploads:
        raise ConrInputError(f"no {what} uploaded")
    if len(uploads) > max_count:
        raise ConrInputError(f"{len(uploads)} {what} uploaded; at most {max_count} per job")
    total = 0
    for up in uploads:
        if not _within(up.path, ctx.upload_root) or not up.path.is_file():
            raise ConrInputError(_not_uploaded(up.name))
        suffix = Path(up.name).suffix.lower()
        if suffix not in extensions:
            raise ConrInputError(f"{up.name}: {what} must be one of {' '.join(sorted(extensions))}")
        size = up.path.stat().st_size
        if size > ctx.limits.max_file_bytes:
            raise ConrInputError(f"{up.name}: {_bytes(size)}, over the {_bytes(ctx.limits.max_file_bytes)} limit")
        total += size
    if total > ctx.limits.max_total_bytes:
        raise ConrInputError(f"{what}: {_bytes(total)} in all, over the {_bytes(ctx.limits.max_total_bytes)} limit")
    # the staging folder is an output of the job: never the upload folder, nor in or around it (the same guard as
    # every command's outputs)
    check_output(dest, {"upload folder": ctx.upload_root}, "staging folder", hint="stage into the job's folder")
    dest.mkdir(parents=True)
    names: dict[str, str] = {}
    for i, up in enumerate(sorted(uploads, key=lambda u: natural_key(u.name))):
        target = dest / f"{i:05d}{Path(up.name).suffix.lower()}"
        with atomic_path(target) as tmp:
            shutil.copyfile(up.path, tmp)
        names[str(target)] = up.name
    return names


def user_message(exc: BaseException, names: dict[str, str], folder: Path | None) -> str:
    """The exception as one line with server paths replaced by the browser's names (longest paths first)."""
    text = one_line(exc)
    for server, name in sorted(names.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(server, name)
    if folder is not None:
        text = text.replace(str(folder) + "/", "").replace(str(folder), "job folder")
    return text


def _checkerboard(h: int, w: int, cell: int = 8) -> np.ndarray:
    """float32 (h, w, 3) grey checkerboard, the usual picture of transparency."""
    yy, xx = np.mgrid[0:h, 0:w]
    light = ((yy // cell + xx // cell) % 2).astype(np.float32)
    return np.repeat((0.75 + 0.15 * light)[:, :, None], 3, axis=2)


def check_sheet_view(upload: Upload, ctx: AppContext, thumb: int = 160) -> tuple[np.ndarray | None, str]:
    """Check one uploaded sheet view exactly as `render` will (conr_common.data.pipeline.load_character_sheet at 128
    px) and make its thumbnail over a checkerboard. Returns (RGB uint8 thumbnail or None, caption)."""
    from conr_app.rendering.video import composite

    with tempfile.TemporaryDirectory(prefix="check-", dir=ctx.work_root) as tmp:
        folder = Path(tmp)
        names: dict[str, str] = {}
        try:
            names = stage_uploads([upload], folder / "view", what="sheet views", extensions=IMAGE_EXTENSIONS,
                                  max_count=1, ctx=ctx)
            view = load_character_sheet(folder / "view", 128)[0]  # premultiplied RGBA (128, 128, 4)
        except ConrInputError as exc:
            return None, user_message(exc, names, folder)
        (staged,) = (folder / "view").iterdir()
        image = cv2.imdecode(np.fromfile(staged, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    h, w = image.shape[:2]
    scale = thumb / max(h, w)
    image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if image.shape[2] == 3:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    else:
        rgba = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
        a = rgba[:, :, 3:4].astype(np.float32) / 255
        premultiplied = np.concatenate([np.rint(rgba[:, :, :3] * a).astype(np.uint8), rgba[:, :, 3:]], axis=2)
        rgb = composite(premultiplied, _checkerboard(*rgba.shape[:2]))
    transparent = 1.0 - float(np.mean(view[:, :, 3])) / 255
    return rgb, f"{upload.name}: ok, {100 * transparent:.0f}% transparent around the character"


def check_pose_uploads(uploads: Sequence[Upload], pose_images: bool, ctx: AppContext) -> tuple[bool, str]:
    """Check uploaded pose frames as `render` will (every frame read at 128 px): (ok, one-line message)."""
    from conr_common.data.pipeline import list_pose_files, load_pose_image, load_udp_pose

    folder = ctx.new_job_folder()
    names: dict[str, str] = {}
    what = "pose images" if pose_images else "UDP poses"
    try:
        names = stage_uploads(uploads, folder / "poses", what=what,
                              extensions=IMAGE_EXTENSIONS if pose_images else UDP_EXTENSIONS,
                              max_count=ctx.limits.max_poses, ctx=ctx)
        load = load_pose_image if pose_images else load_udp_pose
        for path in list_pose_files(folder / "poses", images=pose_images):
            load(path, 128)
        return True, f"{len(uploads)} {what}: ok"
    except ConrInputError as exc:
        return False, user_message(exc, names, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
