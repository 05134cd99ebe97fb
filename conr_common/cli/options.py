"""The options of a render (`python -m conr_app render`, `Renderer`, the runners, the benchmark): one frozen
dataclass, validated once when it is built, and the choices it checks against.

Bad values raise ConrInputError with the one-line message the command line prints (`--size must be ...`). The
numeric bounds live beside the code that needs them: the working size in `conr_common.data.pipeline` (MAX_SIZE,
`check_size`), the command-line bounds of --batch and --fps in `conr_common.cli.args` (MAX_BATCH, MAX_FPS).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from conr_common.cli.args import MAX_BATCH, MAX_FPS
from conr_common.data.checks import check_positive_int
from conr_common.platform.cpu import usable_cores
from conr_common.platform.errors import ConrInputError
from conr_common.data.pipeline import check_size

__all__ = ["ENGINES", "DEFAULT_ENGINE", "PRECISIONS", "RenderOptions"]

ENGINES = ("predictor", "eager", "onnxruntime")
DEFAULT_ENGINE = "predictor"  # Paddle Inference + oneDNN (conr_engines.inference.predictor); "eager" is the slow reference
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class RenderOptions:
    """How to render, whatever the inputs: checked once, here (ConrInputError naming the option).

    size: working size S, a positive multiple of 128 up to MAX_SIZE; batch: frames per model call; engine: one of
    ENGINES; precision: one of PRECISIONS (bf16 with the predictor only); fps: video frame rate in (0, MAX_FPS];
    workers: local processes started through paddle.distributed.launch (the CLI's --workers), 1 to the cores this
    process may use (`conr_common.platform.cpu.usable_cores`); threads: the CPU
    threads of the predictor and of onnxruntime's intra-op pool (None: every core this process may use); cache_dir:
    the exported-graph cache of the predictor and onnxruntime engines (None: $CONR_PADDLE_CACHE or
    ~/.cache/conr_paddle).
    """

    size: int = 256
    batch: int = 1
    engine: str = DEFAULT_ENGINE
    precision: str = "fp32"
    fps: float = 30.0
    workers: int = 1
    threads: int | None = None
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        check_size(self.size)
        check_positive_int("--batch", self.batch)
        if self.batch > MAX_BATCH:  # the command line refuses it when parsing; library callers (the web app) here
            raise ConrInputError(f"--batch must be at most {MAX_BATCH}, got {self.batch!r}")
        if self.engine not in ENGINES:
            raise ConrInputError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise ConrInputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.engine != "predictor" and self.precision != "fp32":
            raise ConrInputError(f"--precision {self.precision} needs --engine predictor ({self.engine} runs fp32 only)")
        if self.threads is not None:
            check_positive_int("--threads", self.threads)
        check_positive_int("--workers", self.workers)
        cores = usable_cores()
        if self.workers > cores:  # finding 5: 64 ranks on 2 cores timed out talking to each other, then aborted
            raise ConrInputError(f"--workers {self.workers}: more processes than the {cores} core(s) this process may "
                                 f"use (each rank needs a core of its own); use --workers {cores} or fewer")
        fps = self.fps
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (0 < fps <= MAX_FPS):
            raise ConrInputError(f"--fps must be a number in (0, {MAX_FPS:g}], got {fps!r}")
        if self.cache_dir is not None and not isinstance(self.cache_dir, Path):
            object.__setattr__(self, "cache_dir", Path(os.fspath(self.cache_dir)))
