"""The parity job of the web app: `python -m convert verify` on the server's loaded weights, run as a `Job`.

No web framework in here: `conr_app.web.app` starts it from the parity tab.
"""
from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

from conr_app.web.context import AppContext
from conr_app.web.jobs import JobEvent

__all__ = ["PARITY_SIZE", "run_parity", "parity_work"]

PARITY_SIZE = 128


def run_parity(ctx: AppContext, folder: Path, size: int = PARITY_SIZE, views: int = 4) -> tuple[dict, Path, str]:
    """`python -m convert verify` on the loaded weights at `size` px (sample data, `views` views, float64 referee):
    returns (report, report.png, the CLI's verdict line). Without official .pth files for these weights the
    reference side is the loaded weights converted back with paddle2torch (then the weight check is a round
    trip, the layer-by-layer comparison still tests the port). Call while holding `ctx.work_lock`."""
    from convert.conversion import convert_checkpoints
    from convert.verify import verdict_lines, verify

    torch_dir = ctx.torch_dir
    if torch_dir is None:
        torch_dir = folder / "torch"
        convert_checkpoints("paddle2torch", ctx.weights_dir, torch_dir, force=True)
    t0 = time.perf_counter()
    report = verify(torch_dir, ctx.weights_dir, folder / "report", size=size, views=views, stdout=io.StringIO())
    verdict = "\n".join(verdict_lines(report)) + f"\n({time.perf_counter() - t0:.0f} s)"
    return report, folder / "report" / "report.png", verdict


def parity_work(request: None, ctx: AppContext, folder: Path, report: Callable[[JobEvent], None],
                stop: Callable[[], bool]) -> tuple[dict, Path, str]:
    """`run_parity` in the shape a Job runs (it cannot stop half way: verify is one pass)."""
    report(JobEvent("status", f"running python -m convert verify at {PARITY_SIZE} px (4 views, float64 referee)"))
    return run_parity(ctx, folder)
