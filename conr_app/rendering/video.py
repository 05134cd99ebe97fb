"""Encode rendered frames (premultiplied RGBA PNGs) into videos with the ffmpeg binary shipped by imageio-ffmpeg.

* MP4: H.264 (libx264, yuv420p), every frame composited over a background: `rgb + (1 - a) * bg`, because the
  frames are premultiplied. The background is a `#RRGGBB` colour or an image resized (cv2, INTER_AREA/LINEAR) to
  the frame; white when none is given.
* WebM: VP9 with alpha (libvpx-vp9, yuva420p) from un-premultiplied frames, so the transparency survives.

Frames are piped raw to ffmpeg's stdin. A video needs one frame size: frames of another size than the first
are resized to it (INTER_AREA when shrinking, INTER_LINEAR when enlarging). 4:2:0 chroma needs even
dimensions: odd sizes are padded by one pixel on the right/bottom (background colour in the MP4, transparent
in the WebM). The output is written under a temporary name next to the target and renamed once ffmpeg exits
with status 0; any failure removes it and raises `VideoError` (one line).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from conr_common.platform.atomic import atomic_paths
from conr_common.platform.errors import ConrInputError
from conr_common.data.headers import check_frame_bounds

__all__ = ["Background", "VideoError", "parse_background", "encode_videos", "ffmpeg_exe"]

_COLOUR = re.compile(r"#?([0-9a-fA-F]{6})")


class VideoError(RuntimeError):
    """ffmpeg failed (not the user's input): one-line message."""


@dataclass(frozen=True)
class Background:
    """A flat colour (RGB uint8) or an image (RGB uint8, any size; resized to each video's frame size)."""

    colour: tuple[int, int, int] | None = None
    image: np.ndarray | None = None
    source: str = "white"

    def as_array(self, h: int, w: int) -> np.ndarray:
        """float32 (h, w, 3) in [0, 1]."""
        if self.image is None:
            return np.broadcast_to(np.array(self.colour, np.float32) / np.float32(255), (h, w, 3))
        ih, iw = self.image.shape[:2]
        interpolation = cv2.INTER_LINEAR if (h > ih and w > iw) else cv2.INTER_AREA
        resized = cv2.resize(self.image, (w, h), interpolation=interpolation)
        return resized.astype(np.float32) / np.float32(255)


WHITE = Background(colour=(255, 255, 255), source="white")


def parse_background(value: str | os.PathLike | None) -> Background:
    """`#RRGGBB` (or `RRGGBB`) colour, or the path of an image; None gives white. Raises ConrInputError."""
    if value is None:
        return WHITE
    text = os.fspath(value)
    match = _COLOUR.fullmatch(text.strip())
    if match and not Path(text).exists():
        hexa = match.group(1)
        return Background(colour=tuple(int(hexa[i:i + 2], 16) for i in (0, 2, 4)), source=f"#{hexa.upper()}")
    path = Path(text)
    if not path.is_file():
        raise ConrInputError(f"--background {text}: neither a #RRGGBB colour nor an existing image file")
    check_frame_bounds(path, "background image")  # its size from the header, before OpenCV decodes it
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ConrInputError(f"{path}: cannot decode this background image (truncated, corrupt or not an image)")
    return Background(image=cv2.cvtColor(image, cv2.COLOR_BGR2RGB), source=str(path))


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _read_premultiplied(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None or image.ndim != 3 or image.shape[2] != 4:
        raise VideoError(f"{path}: cannot read this rendered frame as RGBA")
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)


def _fit(rgba: np.ndarray, h: int, w: int) -> np.ndarray:
    if rgba.shape[:2] == (h, w):
        return rgba
    interpolation = cv2.INTER_LINEAR if (h > rgba.shape[0] and w > rgba.shape[1]) else cv2.INTER_AREA
    return cv2.resize(rgba, (w, h), interpolation=interpolation)


def composite(rgba_u8: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA uint8 (h, w, 4) over a float background (h, w, 3) -> RGB uint8."""
    x = rgba_u8.astype(np.float32) / np.float32(255)
    rgb = x[:, :, :3] + (1 - x[:, :, 3:4]) * background
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def unpremultiply(rgba_u8: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA uint8 -> straight RGBA uint8 (fully transparent pixels get RGB 0)."""
    rgb = rgba_u8[:, :, :3].astype(np.float32)
    a = rgba_u8[:, :, 3:4].astype(np.float32)
    straight = np.divide(rgb * 255, a, out=np.zeros_like(rgb), where=a > 0)
    out = rgba_u8.copy()
    out[:, :, :3] = np.clip(np.rint(straight), 0, 255).astype(np.uint8)
    return out


class _Encoder:
    """One ffmpeg process reading raw frames from stdin, writing `tmp`."""

    def __init__(self, args: list[str], tmp: Path, final: Path) -> None:
        self.final = final
        self.log = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(args + [str(tmp)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=self.log)
        except OSError as e:
            self.log.close()
            raise VideoError(f"cannot start ffmpeg ({args[0]}): {e}") from e

    def write(self, frame: np.ndarray) -> None:
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except (BrokenPipeError, OSError):
            self.finish()  # raises with ffmpeg's message
            raise VideoError(f"{self.final}: ffmpeg stopped reading frames")

    def finish(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        code = self.proc.wait()
        self.log.seek(0)
        message = " ".join(self.log.read().decode(errors="replace").split())
        self.log.close()
        if code != 0:
            raise VideoError(f"{self.final}: ffmpeg failed with exit status {code}: {message[-300:] or 'no message'}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.log.closed:
            self.log.close()


def _ffmpeg_args(w: int, h: int, fps: float, pix_in: str, codec: list[str]) -> list[str]:
    return [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "rawvideo", "-pix_fmt", pix_in, "-s", f"{w}x{h}", "-framerate", f"{fps:g}", "-i", "pipe:0",
            "-an", *codec]


H264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "medium", "-crf", "18", "-movflags", "+faststart",
        "-f", "mp4"]
# VP9 keeps alpha only with yuva420p; -b:v 0 + -crf: constant quality.
VP9_ALPHA = ["-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p", "-b:v", "0", "-crf", "30", "-row-mt", "1",
             "-deadline", "good", "-cpu-used", "4", "-f", "webm"]


def encode_videos(frames: Sequence[Path], mp4: Path | None, fps: float = 30.0, background: Background | None = None,
                  webm: Path | None = None) -> list[Path]:
    """Encode the premultiplied RGBA PNG `frames` (in order) into `mp4` (over `background`, white if None) and/or,
    if `webm` is given, a VP9 WebM with alpha. Both encoders run side by side fed from one read of each frame.
    Returns the written paths."""
    if mp4 is None and webm is None:
        raise ValueError("encode_videos needs mp4 or webm")
    if not frames:
        raise VideoError(f"{mp4 or webm}: no frames to encode")
    background = background or WHITE
    first = _read_premultiplied(Path(frames[0]))
    h, w = first.shape[:2]
    eh, ew = h + h % 2, w + w % 2  # even size for 4:2:0 chroma
    bg = background.as_array(eh, ew)
    outputs = ([(Path(mp4), "rgb24", H264)] if mp4 is not None else []) + (
        [(Path(webm), "rgba", VP9_ALPHA)] if webm is not None else [])
    with atomic_paths([p for p, _, _ in outputs]) as tmps:
        encoders: list[_Encoder] = []
        try:
            for (final, pix, codec), tmp in zip(outputs, tmps):
                encoders.append(_Encoder(_ffmpeg_args(ew, eh, fps, pix, codec), tmp, final))
            for i, path in enumerate(frames):
                rgba = first if i == 0 else _fit(_read_premultiplied(Path(path)), h, w)
                if (eh, ew) != (h, w):
                    rgba = np.pad(rgba, ((0, eh - h), (0, ew - w), (0, 0)))  # transparent padding
                for encoder, (_, pix, _) in zip(encoders, outputs):
                    encoder.write(composite(rgba, bg) if pix == "rgb24" else unpremultiply(rgba))
            for encoder in encoders:
                encoder.finish()
        except BaseException:
            for encoder in encoders:
                encoder.kill()
            raise
    return [p for p, _, _ in outputs]
