"""What the web app's server holds for its lifetime (`AppContext`) and what one job may upload (`Limits`).

The context owns the weights folder, the server's private work folder (one temporary folder per job, the built-in
sample generated once), the one Renderer kept between renders and the lock that lets one job run at a time per
process. No web framework in here.
"""
from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Limits", "AppContext", "SAMPLE_SIZE", "SAMPLE_FRAMES"]

SAMPLE_SIZE = 256  # the built-in sample is generated at this size once per server
SAMPLE_FRAMES = 24


@dataclass(frozen=True)
class Limits:
    """What one job may upload. The web framework also refuses any single file over `max_file_bytes`."""

    max_file_bytes: int = 64 << 20
    max_total_bytes: int = 512 << 20
    max_views: int = 12
    max_poses: int = 1000


@dataclass
class AppContext:
    """What the server holds for its lifetime: the weights, its private work folder and the one-job lock.

    weights_dir: the four `<network>.pdparams`; torch_dir: the official `.pth` files of the same weights, for the
    parity tab (None: the parity tab converts the loaded weights back with `paddle2torch`); seeded: the weights
    are the demo's seeded random draw (the page says so); work_root: a private temporary folder (jobs, samples)
    removed when the server stops; upload_root: where the web framework stores uploads.
    """

    weights_dir: Path
    work_root: Path
    upload_root: Path
    torch_dir: Path | None = None
    seeded: bool = False
    cache_dir: Path | None = None
    limits: Limits = field(default_factory=Limits)
    work_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _renderer: object = field(default=None, init=False, repr=False)
    _renderer_key: tuple | None = field(default=None, init=False, repr=False)
    _samples: object = field(default=None, init=False, repr=False)
    _samples_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        from conr_common.weights.checkpoints import check_weights_dir
        from conr_common.platform.outputs import check_output

        self.weights_dir = Path(self.weights_dir)
        check_weights_dir(self.weights_dir)
        self.work_root = Path(self.work_root)
        self.upload_root = Path(self.upload_root)
        # job folders are outputs: never in, around or equal to the weights or the upload folder (the CLI's guard)
        check_output(self.work_root / "jobs", {"--weights": self.weights_dir, "--torch-weights": self.torch_dir,
                                               "upload folder": self.upload_root}, "job folders",
                     hint="give the server a work folder of its own")
        (self.work_root / "jobs").mkdir(parents=True, exist_ok=True)

    def samples(self):
        """The built-in sample (conr_common.data.samples), generated once per server into its work folder."""
        from conr_common.data.samples import ensure_samples

        with self._samples_lock:
            if self._samples is None:
                self._samples = ensure_samples(self.work_root / "samples", size=SAMPLE_SIZE, frames=SAMPLE_FRAMES)
            return self._samples

    def renderer(self, size: int, engine: str, precision: str):
        """The Renderer for these settings. One is kept (its model is 720 MB at official size): other settings
        replace it. Call only while holding `work_lock`."""
        from conr_common.cli.options import RenderOptions
        from conr_app.rendering.render import Renderer

        key = (size, engine, precision)
        if self._renderer_key != key:
            if self._renderer is not None:
                self._renderer.close()  # release the old model and predictors first
            self._renderer = None
            self._renderer = Renderer(self.weights_dir, RenderOptions(size=size, engine=engine, precision=precision,
                                                                     cache_dir=self.cache_dir))
            self._renderer_key = key
        return self._renderer

    def new_job_folder(self) -> Path:
        """A new empty folder for one job under the server's work folder (the job removes it when it ends)."""
        return Path(tempfile.mkdtemp(prefix="job-", dir=self.work_root / "jobs"))
