"""Internal errors are not input errors (issue #13): a failure that is not the input's fault exits 1 with one line
naming the step and a hint to rerun with --verbose (which shows the traceback); bad input keeps exit 2; Ctrl-C in
`convert` prints one line, no traceback, and leaves nothing behind."""
from __future__ import annotations

import pytest

from parity_tests.harness import SMALLEST_NETWORKS, linked_folder


def _render_args(pdparams_dir, samples, out, *extra: str) -> list[str]:
    return ["render", "--weights", str(pdparams_dir), "--character-sheet", str(samples.character_sheet),
            "--poses", str(samples.poses), "--out", str(out), "--size", "128", "--quiet", *extra]


def test_export_failure_is_internal_exit_1_naming_the_step(pdparams_dir, samples, tmp_path, capsys, monkeypatch):
    from conr_engines.inference import export
    from conr_app.cli import main

    def broken_export(*args, **kwargs):
        raise RuntimeError("simulated PIR failure")

    monkeypatch.setattr(export, "export_graphs", broken_export)
    rc = main(_render_args(pdparams_dir, samples, tmp_path / "out", "--cache-dir", str(tmp_path / "cache")))
    err = capsys.readouterr().err.strip()
    assert rc == 1, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "exporting or loading the predictor graphs failed" in err and "simulated PIR failure" in err, err
    assert "--verbose" in err


def test_verbose_shows_the_traceback(pdparams_dir, samples, tmp_path, monkeypatch):
    from conr_app.rendering import render
    from conr_app.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(render.Renderer, "render", broken)
    with pytest.raises(RuntimeError, match="simulated bug"):
        main(_render_args(pdparams_dir, samples, tmp_path / "out", "--engine", "eager", "--verbose"))


def test_convert_ctrl_c_is_one_line_and_writes_nothing(weights_dir, tmp_path, capsys, monkeypatch):
    """Ctrl-C after the first network's output was staged under its temporary name. A folder of the two smallest
    networks (hard links to the session's files), so the file staged is the pose encoder's 0.1 GB, not the parser's."""
    from convert import conversion
    from convert.cli import main

    source = linked_folder(weights_dir, tmp_path / "official", "*.pth", only=SMALLEST_NETWORKS)

    calls = {"n": 0}
    original = conversion.convert_network

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # after the first network was written to its temporary file
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(conversion, "convert_network", interrupted)
    out = tmp_path / "paddle"
    rc = main(["torch2paddle", str(source), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 130 and len(err.splitlines()) == 1 and "Traceback" not in err and "interrupted" in err, err
    assert calls["n"] == 2, calls
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
