"""The cache is not trusted blindly (issue #13): every artifact the toolkit writes there (the compiled operator
library, the exported graph files) carries a sha256 recorded when it was written and checked before it is loaded.

- a library planted in the cache (one whose load runs code) is not loaded: it is rebuilt, with one line saying so;
- a damaged graph file or a corrupt meta.json is exported again (one line) instead of crashing every later run;
- a complete cache the process cannot write is used as it is (the library loads from a private copy).
Each case runs in a child process where a crash or a stale per-process registry could hide the result.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from parity_tests.harness import ROOT, child_env

pytestmark = pytest.mark.slow  # every case exports or builds in child processes
paddle = pytest.importorskip("paddle")


def _child(code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=child_env(), cwd=ROOT)


LOAD_OPS = """
    import sys
    from pathlib import Path
    from conr_engines.inference import ext
    {setup}
    op = ext.load_warp_op(Path({cache!r}))
    print("AVAILABLE" if op.available else "MISSING: " + op.reason)
"""


@pytest.fixture(scope="module")
def built_cache(custom_ops, graph_cache, tmp_path_factory) -> Path:
    """A cache with the operator library built by another process: a copy of the session's build (conftest's
    `custom_ops`, which skips with the reason where no C++ compiler exists), loaded by a child process as is."""
    import shutil

    cache = tmp_path_factory.mktemp("ops_cache")
    shutil.copytree(graph_cache / "ops", cache / "ops")
    proc = _child(LOAD_OPS.format(setup="", cache=str(cache)))
    assert "AVAILABLE" in proc.stdout and "not trusted" not in proc.stderr, proc.stderr[-2000:]
    return cache


def _library(cache: Path) -> Path:
    from conr_engines.inference import ext

    (lib,) = list(cache.glob(f"ops/*/{ext.LIBRARY_FILE}"))
    return lib


def test_planted_library_is_rebuilt_not_run(built_cache, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(built_cache, cache)
    marker = tmp_path / "planted-code-ran"
    src = tmp_path / "evil.c"
    src.write_text(f'#include <fcntl.h>\n__attribute__((constructor)) static void ran(void) {{ '
                   f'creat("{marker}", 0644); }}\n')
    library = _library(cache)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(src)], check=True)
    os.utime(library)  # newer than the source, as in the report
    proc = _child(LOAD_OPS.format(setup="", cache=str(cache)))
    assert "AVAILABLE" in proc.stdout, proc.stderr[-2000:]
    assert not marker.exists(), "the planted library's code ran"
    warnings = [l for l in proc.stderr.splitlines() if "not trusted" in l]
    assert len(warnings) == 1 and "rebuilding" in warnings[0], proc.stderr[-2000:]
    # and the rebuilt library is trusted on the next run: no warning
    again = _child(LOAD_OPS.format(setup="", cache=str(cache)))
    assert "AVAILABLE" in again.stdout and "not trusted" not in again.stderr, again.stderr[-2000:]


def test_read_only_complete_cache_is_used_as_is(built_cache, tmp_path):
    """Root can write anywhere, so the read-only state is what the process is told (`ext._writable`); the cache's
    files must not change and the verified library must load."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(built_cache, cache)
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    proc = _child(LOAD_OPS.format(setup="ext._writable = lambda folder: False", cache=str(cache)))
    assert "AVAILABLE" in proc.stdout, proc.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()} == before
    # an unverifiable library in a read-only cache is not loaded: the fallback says why
    (_library(cache).parent.parent / "library.sha256.json").write_text("{}")
    proc = _child(LOAD_OPS.format(setup="ext._writable = lambda folder: False", cache=str(cache)))
    assert "MISSING" in proc.stdout and "read-only" in proc.stdout, proc.stdout + proc.stderr[-2000:]


EXPORT = """
    import json
    from conr_engines.inference.predictor import PredictorRunner
    from parity_tests.tiny_conr import tiny_paddle_model
    # the trust checks hash whatever files the export writes: a small CoNR writes 100 MB where the official 720 MB
    runner = PredictorRunner(tiny_paddle_model(0), "trust-test", size=128, views=1, cache_dir={cache!r},
                             custom_warp=False)
    print(json.dumps({{"exported": runner.exported, "folder": str(runner.folder), "params": str(runner.params_file)}}))
"""


def _run_export(cache: Path) -> tuple[dict, str]:
    proc = _child(EXPORT.format(cache=str(cache)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _flip_middle_byte(path: Path) -> None:
    """One byte in the middle of `path` flipped in place (one byte written, not the file)."""
    middle = path.stat().st_size // 2
    with path.open("r+b") as f:
        f.seek(middle)
        byte = f.read(1)[0]
        f.seek(middle)
        f.write(bytes([byte ^ 0xFF]))


def _damage_graph(info: dict) -> Path:
    """The step graph's program damaged; the folder that must be written again."""
    _flip_middle_byte(Path(info["folder"]) / "step.json")
    return Path(info["folder"])


def _damage_params(info: dict) -> Path:
    """The parameter file the step graph reads damaged (a folder of its own, shared by the weight set's graphs)."""
    _flip_middle_byte(Path(info["params"]))
    return Path(info["params"]).parent


def _damage_meta(info: dict) -> Path:
    (Path(info["folder"]) / "meta.json").write_text('{"truncated": ')
    return Path(info["folder"])


def _damage_params_record(info: dict) -> Path:
    """A meta.json whose checksums hold but whose parameter record does not (it names the parameter file's order)."""
    meta_file = Path(info["folder"]) / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["params"]["names"] = meta["params"]["names"][:-1]
    meta_file.write_text(json.dumps(meta))
    return Path(info["folder"])


def test_damaged_export_is_exported_again(tmp_path):
    cache = tmp_path / "cache"
    info, _ = _run_export(cache)
    assert info["exported"]
    for damage in (_damage_graph, _damage_params, _damage_meta, _damage_params_record):
        rebuilt = damage(info)
        again, stderr = _run_export(cache)
        # the program is exported again only when its own folder was damaged; a damaged parameter file is written
        # again from the model, the program reused
        assert again["exported"] is (rebuilt == Path(info["folder"])), damage.__name__
        assert again["params"] == info["params"], damage.__name__
        lines = [l for l in stderr.splitlines() if "not trusted" in l]
        assert len(lines) == 1 and "exporting again" in lines[0] and str(rebuilt) in lines[0], \
            (damage.__name__, stderr[-2000:])
        assert "artifacts" in json.loads((rebuilt / "meta.json").read_text())
    clean, stderr = _run_export(cache)
    assert clean["exported"] is False and "not trusted" not in stderr
