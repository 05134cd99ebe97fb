"""One sequence rendered by several processes: the ranks of `paddle.distributed.launch` (CPU processes, GPUs or
machines), each rendering its own shard of the frames into the same output folder.

A rank reads who it is from the launcher's environment (`PADDLE_TRAINER_ID`, `PADDLE_TRAINERS_NUM`,
`PADDLE_LOCAL_SIZE`). The ranks agree on the frames still to render once, before anyone writes: each checks its
slice of the sequence (complete frames when resuming, and every pose frame still to render for bad input), and
one `all_gather_object` over Paddle's collective (gloo on CPU, NCCL on GPU) merges the slices. The missing frames,
in sequence order, are dealt round-robin (`missing[rank::world]`), so any number of ranks resumes any partial
set evenly. Each rank loads its own model and predictor (the export cache is shared under a file lock, see
`conr_engines.export.cache.cached_folder`), parses the sheet once and writes its frames atomically. A frame's bytes do not
depend on the number of ranks: each frame is computed from its own pose and the same sheet features, with the default `--batch 1`
and the same threads per rank (measured at 128 px: 1 and 2 ranks byte-identical; with `--batch N` the frames
grouped into one call differ with the sharding, and eager Paddle may then differ in the last bit). The thread count
itself may change the last bit where oneDNN picks its kernels by it: on a 2-core AMD EPYC (Zen 5) 1 and 2 threads
gave identical frames, on an Intel Xeon with AMX they differ by 1 level on ~0.02% of pixels.
When rank 0 has finished its own shard it waits, polling the output folder, until every frame of the
sequence exists (frames appear by atomic rename, so existing means complete), then writes the video(s) and the
summary: frames per second over all ranks, from the moment all ranks had loaded their model.

A rank that dies leaves its finished frames; `paddle.distributed.launch` then stops the others (SIGTERM: they
exit after the frame in flight, leaving no partial file) and exits non-zero; `--resume` on any number of ranks
renders the rest. The output folder must be one shared folder for all ranks (a network file system across
machines).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

from conr_common.platform.cpu import usable_cores
from conr_common.platform.errors import ConrInputError

__all__ = ["RankInfo", "rank_info", "threads_per_rank", "shard", "Collective", "SingleProcess",
           "PaddleCollective", "ProgressLines", "render_sharded", "stop_on_sigterm"]

T = TypeVar("T")

ENV_RANK = "PADDLE_TRAINER_ID"
ENV_WORLD = "PADDLE_TRAINERS_NUM"
ENV_LOCAL_RANK = "PADDLE_LOCAL_RANK"
ENV_LOCAL_WORLD = "PADDLE_LOCAL_SIZE"


@dataclass(frozen=True)
class RankInfo:
    """This process's place in the job: global rank and world size, rank and process count on this machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def prefix(self) -> str:
        return f"[rank {self.rank}/{self.world}]"


def _env_int(environ: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    text = environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConrInputError(f"${name}={text!r}: expected an integer (set by paddle.distributed.launch)") from None
    if value < minimum:
        raise ConrInputError(f"${name}={text!r}: expected an integer >= {minimum}")
    return value


def rank_info(environ: Mapping[str, str] | None = None) -> RankInfo:
    """The rank of this process from the launcher's variables; a single process (rank 0 of 1) without them."""
    env = os.environ if environ is None else environ
    world = _env_int(env, ENV_WORLD, 1, 1)
    rank = _env_int(env, ENV_RANK, 0, 0)
    if rank >= world:
        raise ConrInputError(f"${ENV_RANK}={rank} is not below ${ENV_WORLD}={world}")
    local_world = _env_int(env, ENV_LOCAL_WORLD, world, 1)
    local_rank = _env_int(env, ENV_LOCAL_RANK, rank % local_world, 0)
    return RankInfo(rank=rank, world=world, local_rank=local_rank, local_world=local_world)


def threads_per_rank(info: RankInfo, explicit: int | None = None) -> int:
    """`explicit` (--threads) if given, else this machine's cores divided among its ranks (at least 1).

    OMP_NUM_THREADS cannot say what the user wanted here: `paddle.distributed.launch` imports Paddle, which sets
    it to 1 when unset, and every rank inherits that."""
    if explicit is not None:
        return explicit
    return max(1, usable_cores() // info.local_world)


def shard(items: Sequence[T], info: RankInfo) -> list[T]:
    """This rank's share, round-robin: items[rank], items[rank + world], ... (even whatever is already done)."""
    return list(items[info.rank::info.world])


# --------------------------------------------------------------------------------------------------- collectives


class Collective(Protocol):
    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (blocks until every rank has called it)."""
        ...


class SingleProcess:
    """The collective of a job of one."""

    def all_gather(self, obj: Any) -> list[Any]:
        return [obj]


class PaddleCollective:
    """`paddle.distributed` (gloo on CPU, NCCL on GPU), initialised from the launcher's environment; its C++
    start-up chatter goes to `log` (default: discarded)."""

    def __init__(self, log: Path | None = None) -> None:
        import paddle.distributed as dist

        from conr_common.platform.quiet import output_to

        with output_to(log or Path(os.devnull)):
            dist.init_parallel_env()
        self._dist = dist

    def all_gather(self, obj: Any) -> list[Any]:
        gathered: list[Any] = []
        self._dist.all_gather_object(gathered, obj)
        return gathered


# --------------------------------------------------------------------------------------------------- progress


class ProgressLines:
    """Progress as whole lines with the rank in front, at most one every `interval` seconds (plus the last):
    readable in the launcher's per-rank logs, where a redrawn progress bar would be garbage."""

    def __init__(self, info: RankInfo, total: int, done: int, stream: TextIO | None = None,
                 interval: float = 5.0, enabled: bool = True) -> None:
        self.info, self.total, self.done = info, total, done
        self.stream = stream or sys.stdout
        self.interval, self.enabled = interval, enabled
        self._start = time.perf_counter()
        self._first_done = done
        self._last = 0.0
        self._shown = -1

    def update(self, done: int, what: str, force: bool = False) -> None:
        self.done = done
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < self.interval) or (force and done == self._shown):
            return
        self._shown = done
        self._last = now
        rate = (done - self._first_done) / (now - self._start) if now > self._start else 0.0
        print(f"{self.info.prefix} {done}/{self.total} {what}, {rate:.3f} frames/s", file=self.stream, flush=True)


# --------------------------------------------------------------------------------------------------- render


def stop_on_sigterm() -> None:
    """Turn SIGTERM (how the launcher stops the other ranks when one dies) into KeyboardInterrupt, so the rank
    leaves after the frame in flight with its temporary file removed, like after Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _scan(renderer, plan, indices: Sequence[int], resume: bool) -> tuple[list[int], str | None, dict]:
    """(indices still to render, first input error or None, their decoded pose frames) for this rank's slice."""
    missing = plan.todo_indices(indices, resume)
    try:
        decoded = renderer.decode_poses(plan, [plan.jobs[i] for i in missing])
    except ConrInputError as exc:
        return missing, str(exc), {}
    return missing, None, decoded


def _wait_for_frames(jobs: Sequence, on_count: Callable[[int], None], poll: float = 0.5) -> None:
    """Block until every job's frame exists (written by rename, so complete), reporting the count as it grows."""
    pending = [job for job in jobs if not job.frame.is_file()]
    while pending:
        time.sleep(poll)
        pending = [job for job in pending if not job.frame.is_file()]
        on_count(len(jobs) - len(pending))


@dataclass(frozen=True)
class _Share:
    """What the ranks agreed on: every frame still to render (sequence order) and this rank's part of them."""

    todo: list
    mine: list
    skipped: int


def _agree(renderer, plan, info: RankInfo, collective: Collective, resume: bool) -> tuple[_Share, dict]:
    """Check this rank's slice, merge every rank's (ConrInputError on every rank if any found bad input) and deal
    the missing frames round-robin; the pose frames this rank decoded and will render itself are kept."""
    missing, error, decoded = _scan(renderer, plan, shard(range(len(plan.jobs)), info), resume)
    gathered = collective.all_gather((missing, error))
    errors = [e for _, e in gathered if e is not None]
    if errors:
        raise ConrInputError(errors[0])
    todo = [plan.jobs[i] for i in sorted(i for m, _ in gathered for i in m)]
    mine = shard(todo, info)
    decoded = {job.pose: decoded[job.pose] for job in mine if job.pose in decoded}
    return _Share(todo, mine, len(plan.jobs) - len(todo)), decoded


def _render_share(renderer, plan, share: _Share, decoded: dict, info: RankInfo, lines: ProgressLines,
                  stream: TextIO | None) -> tuple[int, float | None]:
    """Render this rank's frames (rank 0 then waits for everyone's); (frames this rank wrote, bf16 PSNR)."""
    written = 0

    def all_complete() -> int:
        return share.skipped + sum(1 for j in share.todo if j.frame.is_file())

    def done(job) -> None:
        nonlocal written
        written += 1
        if info.rank == 0:
            lines.update(all_complete(), "frames complete (all ranks)")
        else:
            lines.update(share.skipped + written, f"frames complete ({written}/{len(share.mine)} of this rank's)")

    try:
        psnr = renderer.render_jobs(plan, share.mine, decoded, done,
                                    note=lambda text: print(f"{info.prefix} {text}", file=stream or sys.stdout))
        if info.rank == 0:
            lines.update(all_complete(), "frames complete (all ranks)", force=True)
            _wait_for_frames(share.todo, lambda n: lines.update(share.skipped + n, "frames complete (all ranks)"))
    except KeyboardInterrupt as e:
        from conr_app.rendering.render import RenderInterrupted

        raise RenderInterrupted(written, share.skipped, len(plan.jobs), plan.out) from e
    return written, psnr


def render_sharded(renderer, character_sheet: str | os.PathLike, poses: str | os.PathLike, out: str | os.PathLike,
                   *, info: RankInfo, collective: Collective, pose_images: bool = False, resume: bool = False,
                   video: str | os.PathLike | None = None, background: str | os.PathLike | None = None,
                   progress: bool = True, stream: TextIO | None = None):
    """This rank's part of a sequence rendered by `info.world` ranks (module docstring); returns a RenderSummary.

    Rank 0's summary covers every rank (frames written by all, frames/s over all, the videos); another rank's
    covers its own frames. Raises ConrInputError on every rank (nothing written) if any rank found bad input,
    RenderInterrupted after Ctrl-C or SIGTERM."""
    from conr_app.rendering.render import prepare_output, render_summary
    from conr_app.rendering.resume import begin_record

    plan = renderer.plan(character_sheet, poses, out, pose_images=pose_images, video=video, background=background,
                         resume=resume)
    share, decoded = _agree(renderer, plan, info, collective, resume)
    if share.mine:
        renderer.runner(views=plan.sheet.shape[0])  # model + predictor (exported by one rank, loaded by the others)
    collective.all_gather(len(share.mine))  # everyone has loaded: the frame clock starts together
    prepare_output(plan)  # sweeps temporaries of killed processes only; the other ranks' stay
    if info.rank == 0:
        begin_record(plan.out, plan.identity, resume)  # one writer of the render's record (conr_app.rendering.resume)
    collective.all_gather(None)  # the record (and a new run's empty journal) exists before any rank's first frame
    lines = ProgressLines(info, len(plan.jobs), share.skipped, stream, enabled=progress)
    t0 = time.perf_counter()
    written, psnr = _render_share(renderer, plan, share, decoded, info, lines, stream)
    seconds = time.perf_counter() - t0
    total_written = len(share.todo) if info.rank == 0 else written
    lines.update(share.skipped + total_written, "frames complete", force=True)
    videos = renderer.encode_video(plan.jobs, plan.video, plan.background) if info.rank == 0 else ()
    return render_summary(plan, total_written, share.skipped, seconds, videos, renderer.engine_label(), psnr,
                          ranks=info.world if info.rank == 0 else 1)
