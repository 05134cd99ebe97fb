"""`conr_engines.export.cache.cached_folder`, the one cache of both fast engines (the predictor's graphs, the onnxruntime
engine's ONNX files), on stand-in files: what it records, when it reuses, when it builds again. No model, no export:
the exports themselves are covered by test_cache_trust.py and test_onnx.py."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

pytest.importorskip("paddle")

from conr_engines.export.cache import cache_identity, cache_key, cached_folder  # noqa: E402


class _Filler:
    """fill(tmp): writes one graph file, one weights file and a log, and counts its calls."""

    def __init__(self, content: bytes = b"graph") -> None:
        self.calls = 0
        self.content = content

    def __call__(self, tmp: Path) -> dict:
        self.calls += 1
        (tmp / "step.onnx").write_bytes(self.content)
        (tmp / "pose.onnx").write_bytes(self.content + b"-pose")
        (tmp / "export.log").write_text("tracing chatter\n")
        return {"engine": "test"}


def test_builds_once_records_the_artifacts_and_reuses(tmp_path):
    folder, fill = tmp_path / "onnx-abc", _Filler()
    meta, built = cached_folder(folder, fill, (".onnx",))
    assert built and fill.calls == 1 and meta["engine"] == "test"
    assert sorted(meta["artifacts"]) == ["pose.onnx", "step.onnx"]  # the log is not an artifact
    assert json.loads((folder / "meta.json").read_text()) == meta
    again, built = cached_folder(folder, fill, (".onnx",))
    assert not built and fill.calls == 1 and again == meta
    assert not list(tmp_path.glob("onnx-abc.tmp-*"))


def test_a_damaged_artifact_is_built_again(tmp_path, caplog):
    folder, fill = tmp_path / "onnx-abc", _Filler()
    cached_folder(folder, fill, (".onnx",))
    (folder / "step.onnx").write_bytes(b"planted")
    with caplog.at_level(logging.WARNING, logger="conr_paddle"):
        _, built = cached_folder(folder, fill, (".onnx",))
    assert built and fill.calls == 2 and (folder / "step.onnx").read_bytes() == b"graph"
    assert any("not trusted" in r.getMessage() and "step.onnx" in r.getMessage() for r in caplog.records)


def test_a_byte_flipped_after_a_remembered_check_is_found(tmp_path, caplog):
    """Checks read each file once per version (`sha256_file_remembered`): a byte flipped in place afterwards, the
    size and modification time put back, is still a new version (its ctime moved) and is not trusted."""
    import os
    import time

    from conr_common.platform import integrity

    folder, fill = tmp_path / "onnx-abc", _Filler(b"graph" * 1000)
    cached_folder(folder, fill, (".onnx",))
    time.sleep(integrity.UNSETTLED_NS / 1e9 + 0.1)  # settled: the next check is remembered
    _, built = cached_folder(folder, fill, (".onnx",))
    assert not built and fill.calls == 1
    path = folder / "step.onnx"
    before = path.stat()
    with path.open("r+b") as f:
        f.seek(2500)
        f.write(b"X")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="conr_paddle"):
        _, built = cached_folder(folder, fill, (".onnx",))
    assert built and fill.calls == 2, "a damaged artifact was trusted from memory"


def test_a_folder_without_checksums_is_built_again(tmp_path):
    """A folder written before the checksums were recorded (an older ONNX cache) is not trusted."""
    folder, fill = tmp_path / "onnx-abc", _Filler()
    folder.mkdir()
    (folder / "step.onnx").write_bytes(b"old")
    (folder / "meta.json").write_text(json.dumps({"engine": "old"}))
    meta, built = cached_folder(folder, fill, (".onnx",))
    assert built and meta["engine"] == "test" and "artifacts" in meta


def test_a_killed_build_is_swept_and_a_failed_one_leaves_nothing(tmp_path):
    folder = tmp_path / "graphs"
    stale = tmp_path / "graphs.tmp-killed01"
    stale.mkdir()
    (stale / "step.json").write_text("half")

    def broken(tmp: Path) -> dict:
        (tmp / "step.json").write_text("half")
        raise RuntimeError("simulated export failure")

    with pytest.raises(RuntimeError, match="simulated"):
        cached_folder(folder, broken, (".json",))
    assert not folder.exists() and not list(tmp_path.glob("graphs.tmp-*"))


def test_the_key_names_every_field():
    base = cache_identity("w", 128, 2, 1, 1, opset=17)
    assert cache_key(base) == cache_key(dict(reversed(list(base.items()))))  # order does not matter
    changed = [cache_identity("v", 128, 2, 1, 1, opset=17), cache_identity("w", 256, 2, 1, 1, opset=17),
               cache_identity("w", 128, 3, 1, 1, opset=17), cache_identity("w", 128, 2, 2, 1, opset=17),
               cache_identity("w", 128, 2, 1, 2, opset=17), cache_identity("w", 128, 2, 1, 1, opset=18)]
    assert len({cache_key(base), *map(cache_key, changed)}) == 1 + len(changed)


def test_link_or_copy_links_copies_across_file_systems_and_names_a_missing_file(tmp_path):
    """`link_or_copy` (how export-onnx takes the engine's graphs and the tests share the session's weights): a hard
    link on one file system; a copy with the same bytes where a link cannot be made (a tmpfs, when the machine has
    one on another device); FileNotFoundError for a source that is gone, nothing left at the destination."""
    import os
    import tempfile

    from conr_common.platform.links import link_or_copy

    src = tmp_path / "graph.onnx"
    src.write_bytes(b"graph" * 100)
    link_or_copy(src, tmp_path / "linked.onnx")
    assert os.path.samefile(src, tmp_path / "linked.onnx")
    with pytest.raises(FileNotFoundError):
        link_or_copy(tmp_path / "gone.onnx", tmp_path / "never.onnx")
    assert not (tmp_path / "never.onnx").exists()
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system here to copy across")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        link_or_copy(src, Path(other) / "copied.onnx")
        copied = Path(other) / "copied.onnx"
        assert copied.read_bytes() == src.read_bytes() and not os.path.samefile(src, copied)
