"""`python -m conr_app render ... --workers N`: the same render started through `paddle.distributed.launch`
with N ranks on this machine, for users who do not want to type the launch line.

The launcher runs `<this python> -m conr_app render <the same arguments without --workers>` in each rank
(PATH plays no part), with its per-rank logs in a temporary folder. Rank 0's output is what the launcher echoes;
its own `LAUNCH` lines are dropped. If a rank fails, the one line it printed (`error: ...` or `interrupted: ...`)
is repeated on stderr and the launcher's exit status is returned. The log folder is removed whatever the outcome
(a failed 64-rank run used to leave 193 files in /tmp, issue 23), unless `--verbose` asks for it: then it is kept
and named.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["launch_command", "strip_workers", "run_launcher"]

# what the launcher's own `import paddle` prints on stderr (two lines), not ours to show
_LAUNCHER_IMPORT_NOISE = "UserWarning: No ccache found"


def strip_workers(argv: Sequence[str]) -> list[str]:
    """`argv` without `--workers N` / `--workers=N`."""
    out: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--workers":
            skip = True
            continue
        if word.startswith("--workers="):
            continue
        out.append(word)
    return out


def launch_command(workers: int, argv: Sequence[str], log_dir: Path) -> list[str]:
    """The launcher command line that runs `python -m conr_app <argv>` in `workers` local ranks."""
    return [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(workers),
            "--log_dir", str(log_dir), sys.executable, "-m", "conr_app", *argv]


def _rank_message(log_dir: Path) -> str | None:
    """The first one-line `error:` / `interrupted:` message a rank printed, with its rank."""
    for log in sorted(log_dir.glob("workerlog.*")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(("error: ", "interrupted: ")):
                return f"{line} (rank {log.suffix.lstrip('.')})"
    return None


def run_launcher(workers: int, argv: Sequence[str], temp_root: Path | None = None) -> int:
    """Run the render in `workers` ranks through paddle.distributed.launch; returns its exit status. The per-rank
    logs live in a folder under `temp_root` (default: the system's temporary folder), removed at the end unless
    `argv` holds --verbose."""
    log_dir = Path(tempfile.mkdtemp(prefix="conr-paddle-launch-", dir=temp_root))
    keep = "--verbose" in argv
    try:
        status, interrupted = _launch(workers, argv, log_dir)
        if status == 0 and not interrupted:
            return 0
        message = _rank_message(log_dir) or f"error: a rank failed (launcher exit status {status})"
        if keep:
            message = f"{message}; per-rank logs in {log_dir}"
            log_dir = None
        print(" ".join(message.split()), file=sys.stderr)
        if interrupted:
            return 130
        return status if status > 0 else 1
    finally:
        if log_dir is not None:
            shutil.rmtree(log_dir, ignore_errors=True)


def _launch(workers: int, argv: Sequence[str], log_dir: Path) -> tuple[int, bool]:
    """Run the launcher, echoing rank 0's lines; (its exit status, whether Ctrl-C reached it)."""
    command = launch_command(workers, strip_workers(argv), log_dir)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    interrupted = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("LAUNCH ") or not line.strip() or _LAUNCHER_IMPORT_NOISE in line \
                    or line.strip() == "warnings.warn(warning_message)":
                continue  # the launcher's own log lines: its configuration dump and container status
            if line.startswith(("error: ", "interrupted: ")):
                continue  # repeated once below, with the rank
            sys.stdout.write(line)
            sys.stdout.flush()
        status = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the launcher too: it stops the ranks; wait for it
        interrupted = True
        status = proc.wait()
    return status, interrupted
