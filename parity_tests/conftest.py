"""Session fixtures: the seeded official-format weight set is built once per test session (180 M parameters).

Both frameworks live in one process, both in eval mode, fed the same numpy inputs. Exported graphs and the compiled
operators live in one session cache (`graph_cache`); a test keeps a private cache only where the cache itself
(filling, trust, keys) is what it tests. At the end, the suite's cost is printed (`pytest_terminal_summary`).

`make test` runs the suite in two pytest-xdist workers (`-n 2`): each test module runs whole on one worker, the
memory-heavy modules one after another on one worker (HEAVY_MODULES, `pytest_xdist_make_scheduler`), each worker on
its share of the cores (`_take_core_share`), and the weight files, converted weights and graph cache are built once
for both workers in the run's base folder (`shared_root`). Without xdist (`-n 0`) everything runs in one process.
"""
from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conr_common.platform.cpu import prepare_math_libraries


# The cores an xdist worker could use before it took its share (`every_core` gives them back to a module).
_USABLE_CORES = pytest.StashKey[list]()


def _take_core_share(worker: str) -> list[int] | None:
    """Run this xdist worker `gw<i>` (and every process it starts) on its own share of the usable cores; returns the
    cores it could use before (None where affinity cannot be set). Unpinned, two workers on two cores each started
    two math threads, which spin while they wait for each other: measured on a 2-core Intel Xeon (AMX), the tests'
    in-process CPU time went from 794 s (one process) to 1055 s."""
    if not hasattr(os, "sched_setaffinity"):  # not Linux: the workers share the cores as the OS sees fit
        return None
    cores = sorted(os.sched_getaffinity(0))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    share = max(1, len(cores) // workers)
    start = int(worker.removeprefix("gw")) * share % len(cores)
    os.sched_setaffinity(0, cores[start:start + share])
    return cores


def pytest_configure(config) -> None:
    """Eager Paddle in a process that runs tests runs as under the command line (`python -m conr_app`,
    `python -m convert`): on the usable cores (an xdist worker's share) and, on AMD, MKL's AVX2 path. Before any test
    module imports paddle. Not in the xdist controller: it runs no test, and what it set would be its workers'."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None and getattr(config.option, "numprocesses", None):
        return
    if worker is not None:
        cores = _take_core_share(worker)
        if cores is not None:
            config.stash[_USABLE_CORES] = cores
    prepare_math_libraries()


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory) -> Path:
    """Where the artifacts every worker may share live: the run's base folder, whose `popen-gw<N>` folders are the
    xdist workers' own (removed with it when every test passed), or this session's base folder without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _built_once(root: Path, name: str, build: Callable[[Path], object]) -> Path:
    """`root/name`, built by `build(folder)` by the first worker that asks, under `root/name.lock`; the others wait
    for it and find it complete (`name.done`). A build that failed leaves no marker, and the next asker builds
    again from an empty folder."""
    from conr_common.platform.filelock import exclusive_lock

    folder, done = root / name, root / f"{name}.done"
    with exclusive_lock(root / f"{name}.lock"):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def weights_dir(shared_root):
    """Seeded random weights saved exactly like the official files (torch.save of each state_dict)."""
    from conr_torch_ref.seeded import write_seeded_weights

    return _built_once(shared_root, "official_weights", write_seeded_weights)


@pytest.fixture(scope="module")
def official_states(weights_dir):
    """The seeded official checkpoints as numpy dicts (torch names), read back by the production reader
    (`conr_common.weights.checkpoints`: torch.load with weights_only=True). Read once per module that asks (about
    1 s from the page cache) and dropped after it: held for the whole session, its 0.7 GB sat under every later
    module's peak."""
    from conr_common.weights.checkpoints import load_folder

    return load_folder(weights_dir, "torch")


@pytest.fixture(scope="module")
def paddle_states(official_states):
    """The same tensors under Paddle names, through the converter's strict mapping (`conr_common.contract.manifest`)."""
    from conr_common.contract.manifest import torch_to_paddle

    return {n: torch_to_paddle(n, s) for n, s in official_states.items()}


def _torch_fingerprint(model) -> tuple:
    return (model.training, tuple((n, str(p.dtype), float(p.detach().double().abs().sum()))
                                  for n, p in model.named_parameters()))


def _paddle_fingerprint(model) -> tuple:
    from conr_paddle.layers import norm_statistics

    return (model.training, norm_statistics(model),
            tuple((n, str(p.dtype), float(p.abs().sum())) for n, p in model.named_parameters()))


@pytest.fixture(scope="session")
def torch_model(weights_dir):
    """The torch reference, built once per session and loaded by the production loader (strict, weights_only).
    Shared by every test that needs the seeded reference (`harness.models_for_draw` too): a test that changed it
    (mode, dtype, a parameter) fails at the end of the session."""
    from conr_torch_ref.model import load_official, unloaded

    model = load_official(unloaded(), weights_dir).eval()
    before = _torch_fingerprint(model)
    yield model
    assert _torch_fingerprint(model) == before, "a test changed the session's torch_model"


@pytest.fixture(scope="session")
def paddle_model(pdparams_dir):
    """The Paddle port, built once per session and loaded by the production loader (strict, restricted unpickler)
    from the converter's output: every parity test runs on weights that went through the converter. Shared like
    `torch_model`, with the same end-of-session check (mode, norm statistics, parameters)."""
    from conr_paddle.model import load_pdparams, unloaded

    model = load_pdparams(unloaded(), pdparams_dir)
    before = _paddle_fingerprint(model)
    yield model
    assert _paddle_fingerprint(model) == before, "a test changed the session's paddle_model"


@pytest.fixture(scope="session")
def weights_label(pdparams_dir) -> str:
    """The cache key's weights field for `paddle_model`, as `render` computes it for `pdparams_dir`: graphs exported
    by one test from the session model are found by the next (and by in-process renders of the same folder)."""
    from conr_common.weights.checkpoints import check_weights_dir, weights_hash

    return weights_hash(check_weights_dir(pdparams_dir))


@pytest.fixture(scope="session")
def graph_cache(shared_root) -> Path:
    """The session's exported-graph cache (predictor and onnxruntime engines) and compiled-operator cache
    (`<graph_cache>/ops`, filled by `custom_ops`): what a user's `~/.cache/conr_paddle` is after the first run. Its
    keys hold the weights, size, views, batch, precision, warp and norm, so tests that only need *a* graph share it.
    Shared by the xdist workers as by a user's processes: every folder is written under its own lock
    (`conr_engines.export.cache.cached_folder`)."""
    folder = shared_root / "graph_cache"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def samples(tmp_path_factory):
    """The procedural sample character and a short UDP sequence (256 px sources, cropped per test size)."""
    from conr_common.data.samples import ensure_samples

    return ensure_samples(tmp_path_factory.mktemp("samples"), size=256, frames=4, seed=0)


@pytest.fixture(scope="module", autouse=True)
def _memory_returned_after_each_module():
    """When a module's own fixtures are gone (this autouse fixture is set up first, so torn down last), give their
    freed memory back to the OS (garbage collection, then malloc_trim): without it the process keeps the peak of
    every module's models and predictors, and the next heavy module starts from there.

    Then what survived is frozen (`gc.freeze`): at a module boundary that is what lives for the whole session (the
    imported libraries, the session's models and fixtures, pytest's own records), and later collections (after a test
    that grew the process, `harness.release_models`, a predictor's construction) no longer walk it. Unfrozen, every
    full collection walked all of it: 158 collections took 122 s of a 1242 s profiled run, 0.8 s each by the end.
    Frozen objects are still freed by reference counting; only a cycle among them would never be collected."""
    yield
    from conr_common.platform.memory import return_freed_memory

    return_freed_memory()
    gc.freeze()


@pytest.fixture(scope="module")
def every_core(request):
    """The module runs on every core this run may use, not on its xdist worker's share (`_take_core_share`): for
    renders whose ranks each need a core of their own (`--workers` is bounded by the usable cores). Nothing to do
    without xdist."""
    cores = request.config.stash.get(_USABLE_CORES, None)
    if cores is None:
        yield
        return
    share = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, share)


@pytest.fixture()
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def pdparams_dir(weights_dir, shared_root):
    """The seeded weights converted to `<network>.pdparams` by the converter's library function (what
    `python -m convert torch2paddle` runs), once for every worker. No fallback: a converter failure fails every test
    that needs these files, loudly."""
    from convert import conversion
    from conr_common.contract.config import NETWORK_NAMES

    out = _built_once(shared_root, "pdparams",
                      lambda folder: conversion.convert_checkpoints("torch2paddle", weights_dir, folder, force=True))
    missing = [n for n in NETWORK_NAMES if not (out / f"{n}.pdparams").is_file()]
    assert not missing, f"the converter returned but wrote no .pdparams for {missing}"
    return out


@pytest.fixture(scope="session")
def custom_ops(graph_cache):
    """The compiled operators (conr_engines.inference.ext), built once per session into the session cache (`graph_cache`), where
    every predictor built with `cache_dir=graph_cache` finds them.

    Where no C++ compiler exists, the tests that need them skip with the package's own reason: that is the
    documented fallback (the exporter keeps grid_sample), tested by test_custom_ops.py's simulated "no compiler"
    cases. With a compiler present, a failed build is a failure."""
    from conr_engines.inference.ext import find_cxx_compiler, load_warp_op

    op = load_warp_op(graph_cache)
    if not op.available:
        if find_cxx_compiler() is None:
            pytest.skip(f"custom operators cannot be built here (the predictor falls back to grid_sample): {op.reason}")
        pytest.fail(f"a C++ compiler is installed but the custom operators did not build: {op.reason}")
    return op


# ------------------------------------------------------------------------------------------ the suite's own cost
# Printed at the end of every run (`make test`), four figures (issue 24's bounds): wall time, peak resident memory of
# the pytest process (and of its largest child), bytes written by pytest and its children, and what is left in the
# temporary folders after pytest's own clean-up (its base folder, and entries new in the system temporary folder).
# Figures, never assertions: a shared machine's load changes them.
# Bytes written are the `wchar` of /proc/self/io: what the process passed to write calls. Linux adds the counters of
# a child process to its parent's when the parent waits for it (as it does CPU times), so the figure already holds
# every child's writes: measured, a child that wrote 100 MB raised its parent's wchar by 100 MB. Until 2026-12-08
# the children's block writes (ru_oublock) were added on top, counting their bytes twice (1.6 GB of 11.9).

_COST = pytest.StashKey[dict]()


def _folder_bytes(root: Path) -> int:
    """Bytes of the files under `root` (symbolic links counted as links, never followed). One `lstat` per file and
    none per folder (`os.scandir` knows which entries are folders): it runs after every test, and `os.walk` with a
    `join` and an `lstat` per file plus a link check per folder took 29 s of a profiled 1242 s run."""
    total, folders = 0, [root]
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            folders.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:  # removed while we walk (a child process's temporary file)
                        pass
        except OSError:  # the folder itself went away meanwhile
            pass
    return total


def _io_counters() -> dict[str, int]:
    try:
        with open("/proc/self/io") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f)}
    except OSError:  # not Linux
        return {}


def _system_temp_entries() -> set[str]:
    try:
        return set(os.listdir(tempfile.gettempdir()))
    except OSError:
        return set()


def pytest_sessionstart(session) -> None:
    session.config.stash[_COST] = {"start": time.monotonic(), "temp_peak": 0, "basetemp": None,
                                   "system_temp": _system_temp_entries()}


@pytest.fixture(scope="session", autouse=True)
def _cost_basetemp(request, shared_root) -> None:
    request.config.stash[_COST]["basetemp"] = shared_root


def _rss_now() -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):  # not Linux
        return 0


# The modules whose own growth above the process's resident set is the largest run first, in this order, while the
# process holds the least (the session's models, no other module's libraries or leftovers), since the resident set
# creeps up by ~0.7 GB over a run (libraries imported, allocator pools). Fresh clones, peak of each module and the
# resident set it started from: a9fdc2a (alphabetical order) test_worlds 6.51 from 3.1 GB, test_verify 6.16 from
# 3.05; 35fa34e (those two first) 5.29 from 2.54 and 5.61 from 2.54, and then the Paddle ONNX export 6.03 from 3.01,
# vgg11_bn in test_zoo 6.17 from 3.16, test_float64 5.73 from 2.9. The rest keep pytest's order.
# Under xdist they are one group, run one after another on one worker: two of them at once would hold ~12 GB.
HEAVY_MODULES = ("test_worlds.py", "test_verify.py", "test_onnx.py", "test_zoo.py", "test_float64.py")


def pytest_collection_modifyitems(session, config, items) -> None:
    """Move the tests of HEAVY_MODULES to the front, then the modules holding a `slow` test, then the rest (a stable
    sort: each module's own order is kept). Under xdist an idle worker takes the next module, so the modules left for
    the end of the run are then short ones: the workers finish close together. Measured on a fresh clone (2-core
    Intel Xeon, 2026-12-08), the heavy modules took one worker 598 s and the other worker's last module (the web
    app's, 65 s) started at 558 s; replayed with this order, both workers end within 1 s of 611 s."""
    rank = {name: i for i, name in enumerate(HEAVY_MODULES)}
    slow = {item.path.name for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: rank.get(item.path.name, len(HEAVY_MODULES) + (item.path.name not in slow)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist controller: hand out whole modules (module-scoped fixtures are built once), HEAVY_MODULES as one unit run
    on one worker, in collection order (HEAVY_MODULES first), each idle worker taking the next unit. (xdist's own
    `loadgroup` marks do not work under pytest 9.2: measured, the tests of one group were spread over both workers.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "heavy modules" if Path(module).name in HEAVY_MODULES else module

    config.option.loadscopereorder = False  # keep collection order, not the largest units first
    return ModuleScheduling(config, log)


def pytest_collection_finish(session) -> None:
    """Freeze what collection left (every test module and the libraries they import: torch, paddle, numpy) out of
    later garbage collections, as `_memory_returned_after_each_module` does at each module's end: the first module
    collects ~30 times between its draws and predictors."""
    gc.collect()
    gc.freeze()


# A test whose process grew by more than this (models, predictors, recorded layers it dropped) is followed by
# garbage collection and malloc_trim: without it glibc keeps the freed heap, and in the profile of issue 24 the
# process grew ~1.5 GB per in-process verify run. Below it, nothing is done (a collection and trim cost ~0.15 s with
# the session frozen, 0.3-0.8 s before).
RSS_GROWTH_TRIM_BYTES = 512 * 1024 ** 2


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """After each test (its fixtures torn down), memory it left freed goes back to the OS when the process grew by
    more than RSS_GROWTH_TRIM_BYTES; with CONR_COST_LOG=<file>, one json line per test (`_cost_row`)."""
    rss0, start, io0 = _rss_now(), time.monotonic(), _io_counters()
    kids0, me0 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    yield
    if _rss_now() - rss0 > RSS_GROWTH_TRIM_BYTES:
        from conr_common.platform.memory import return_freed_memory

        return_freed_memory()
    log = os.environ.get("CONR_COST_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(_cost_row(item, start, io0, (kids0, me0))) + "\n")


def _cost_row(item, start: float, io0: dict, usage0: tuple) -> dict:
    """Seconds, this process's RSS after the test and the peak so far, bytes written and CPU seconds used by this
    process and its children during it (usage0: both rusages before it), and the temporary folder after it (what
    finding the expensive tests starts from)."""
    (kids0, me0), io1 = usage0, _io_counters()
    kids1, me1 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    cost = item.config.stash.get(_COST, None)
    return {"test": item.nodeid, "worker": os.environ.get("PYTEST_XDIST_WORKER", ""),
            "seconds": round(time.monotonic() - start, 2),
            "rss_gb": round(_rss_now() / 1024 ** 3, 2),
            "peak_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2),
            "written_gb": round((io1.get("wchar", 0) - io0.get("wchar", 0)) / 1024 ** 3, 3),  # children's included
            "cpu_s": round(me1.ru_utime + me1.ru_stime - me0.ru_utime - me0.ru_stime, 1),
            "children_cpu_s": round(kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime, 1),
            "temp_gb": round(_folder_bytes(cost["basetemp"]) / 1024 ** 3, 2) if cost and cost["basetemp"] else None}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    cost = item.config.stash.get(_COST, None)
    if cost is not None and cost["basetemp"] is not None:  # before the test's own tmp_path is removed
        cost["temp_peak"] = max(cost["temp_peak"], _folder_bytes(cost["basetemp"]))
    yield


def _process_cost(cost: dict) -> dict:
    """This pytest process's figures (and its children's), as a worker sends them to the xdist controller."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu": me.ru_utime + me.ru_stime, "children_cpu": children.ru_utime + children.ru_stime,
            "peak": me.ru_maxrss * 1024, "children_peak": children.ru_maxrss * 1024,
            "written": _io_counters().get("wchar", 0),
            "temp_peak": cost["temp_peak"], "basetemp": None if cost["basetemp"] is None else str(cost["basetemp"])}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist controller: a worker has finished; keep the figures it sent (`_process_cost`)."""
    cost = node.config.stash.get(_COST, None)
    sent = getattr(node, "workeroutput", {}).get("conr_cost")
    if cost is not None and sent is not None:
        cost.setdefault("workers", []).append(sent)
        cost["temp_peak"] = max(cost["temp_peak"], sent["temp_peak"])
        if sent["basetemp"] is not None:
            cost["basetemp"] = Path(sent["basetemp"])


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session) -> None:
    cost = session.config.stash.get(_COST, None)
    if cost is not None and cost["basetemp"] is not None and cost["basetemp"].is_dir():
        cost["temp_peak"] = max(cost["temp_peak"], _folder_bytes(cost["basetemp"]))  # before tmpdir's clean-up
    if cost is not None and hasattr(session.config, "workeroutput"):  # an xdist worker: sent to the controller
        session.config.workeroutput["conr_cost"] = _process_cost(cost)


def _left_behind(cost: dict) -> tuple[int, int]:
    """Bytes still in pytest's base folder (after its clean-up: the terminal summary comes after it) and in entries
    of the system temporary folder that were not there when the session started."""
    base = cost["basetemp"]
    in_base = _folder_bytes(base) if base is not None and base.is_dir() else 0
    root = Path(tempfile.gettempdir())
    new = _system_temp_entries() - cost["system_temp"]
    own = set() if base is None else set(base.parents)  # pytest-of-<user>, when this session made it
    return in_base, sum(_entry_bytes(root / n) for n in new if root / n not in own)


def _entry_bytes(path: Path) -> int:
    try:
        return _folder_bytes(path) if path.is_dir() else os.lstat(path).st_size
    except OSError:  # removed meanwhile
        return 0


def _cost_lines(cost: dict) -> list[str]:
    """The four figures; under xdist the workers' figures (`pytest_testnodedown`) summed, their peaks each."""
    gb = 1024 ** 3
    procs = cost.get("workers") or [_process_cost(cost)]
    total = {k: sum(p[k] for p in procs) for k in ("cpu", "children_cpu", "written")}
    who = "pytest process" if len(procs) == 1 else f"{len(procs)} pytest workers"
    peaks = ", ".join(f"{p['peak'] / gb:.2f}" for p in procs)
    in_base, in_system = _left_behind(cost)
    return [
        f"time: {time.monotonic() - cost['start']:.0f} s wall "
        f"(CPU: {who} {total['cpu']:.0f} s, child processes {total['children_cpu']:.0f} s)",
        f"peak memory: {who} {peaks} GB resident "
        f"(largest child process {max(p['children_peak'] for p in procs) / gb:.2f} GB)",
        f"written: {total['written'] / gb:.2f} GB ({who} and {'its' if len(procs) == 1 else 'their'} child processes)",
        f"left in temporary folders: {(in_base + in_system) / gb:.2f} GB (pytest's {cost['basetemp']}: "
        f"{in_base / gb:.2f} GB, peak {cost['temp_peak'] / gb:.2f} GB during the run; new in "
        f"{tempfile.gettempdir()}: {in_system / gb:.2f} GB)",
    ]


def pytest_terminal_summary(terminalreporter, config) -> None:
    cost = config.stash.get(_COST, None)
    if cost is None:
        return
    terminalreporter.write_sep("-", "suite cost")
    for line in _cost_lines(cost):
        terminalreporter.write_line(line)


@pytest.fixture()
def web_ctx(tmp_path):
    """A web-app AppContext over four placeholder weight files that are never loaded (upload and request checks
    read no weights), with one empty upload folder `u0`."""
    from conr_app.web.context import AppContext

    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("udpparsernet", "target_pose_encoder", "shader", "rgbadecodernet"):
        (weights / f"{name}.pdparams").write_bytes(b"unused")
    (tmp_path / "uploads" / "u0").mkdir(parents=True)
    return AppContext(weights, tmp_path / "work", tmp_path / "uploads")
