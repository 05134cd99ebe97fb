"""Every probe of the bad-input matrix (parity_tests/bad_inputs.py) gets its one line and exit status, writes
nothing and changes no input; the README's table is exactly what the probes print (regenerate it with
`python -m parity_tests.bad_inputs --write-readme`)."""
from __future__ import annotations

import shutil

import pytest

from parity_tests.bad_inputs import PROBES, README, make_scene, markdown, message, readme_table, run_probe


@pytest.fixture(scope="module")
def outcomes(samples, pdparams_dir, weights_dir, tmp_path_factory):
    """Every probe run in a scene of its own; the scenes (about 1300 files) are removed when this module is done,
    not at the session's end: every later test's temporary-folder measurement (conftest) walked them."""
    out, folders = [], []
    for i, probe in enumerate(PROBES):
        folders.append(tmp_path_factory.mktemp("bad_input"))
        scene = make_scene(folders[-1] / f"probe{i}", samples.root, pdparams_dir, weights_dir)
        out.append((probe, scene, run_probe(probe, scene)))
    yield out
    for folder in folders:
        shutil.rmtree(folder)


def test_matrix_has_at_least_30_probes():
    assert len(PROBES) >= 30 and len({p.what for p in PROBES}) == len(PROBES)


@pytest.mark.parametrize("index", range(len(PROBES)), ids=[p.what for p in PROBES])
def test_probe_one_line_exit_status_nothing_written(outcomes, index):
    probe, scene, outcome = outcomes[index]
    assert outcome.status == probe.status, (probe.what, outcome.status, outcome.stderr)
    lines = [l for l in outcome.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in outcome.stderr, (probe.what, outcome.stderr)
    assert lines[0].startswith("error: "), lines[0]
    assert probe.expect in lines[0], (probe.what, lines[0])
    assert outcome.written == [], (probe.what, outcome.written)
    assert not (scene.root / "pwned").exists(), "a pickle's code ran"


def test_readme_table_is_what_the_probes_print(outcomes):
    table = markdown([(p.what, message(o, s), o.status) for p, s, o in outcomes])
    assert readme_table(README.read_text()) == table, (
        "the README's bad-input table is out of date: run `python -m parity_tests.bad_inputs --write-readme`")


def test_truncated_image_error_is_one_line_on_the_real_stderr(samples, pdparams_dir, tmp_path):
    """Native libraries write to file descriptor 2 behind Python's back (OpenCV's PNG decoder warned "PNG input
    buffer is incomplete" on its own line): the whole process's stderr must still be one line."""
    import subprocess
    import sys

    from parity_tests.harness import ROOT, child_env

    sheet = tmp_path / "sheet"
    shutil.copytree(samples.character_sheet, sheet)
    data = (sheet / "0_front.png").read_bytes()
    (sheet / "0_front.png").write_bytes(data[: len(data) // 3])
    proc = subprocess.run(
        [sys.executable, "-m", "conr_app", "render", "--weights", str(pdparams_dir), "--character-sheet",
         str(sheet), "--poses", str(samples.poses), "--out", str(tmp_path / "out"), "--size", "128"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=child_env(),
    )
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "0_front.png" in lines[0], proc.stderr
