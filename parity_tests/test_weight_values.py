"""Weights that cannot be CoNR's (issue #13): NaN/Inf values and integer tensors are refused, naming the file and
the tensor, by the converter (unless --allow-nonfinite), the Paddle loader used by `render` and the torch reference
loader; nothing is written."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conr_common.platform.errors import ConrInputError

# The damaged network is the one the converter converts first: its refusal then comes before any output is staged
# (with the shader, third, the two networks before it were written to temporary files first: 0.3 GB per refusal).
NAN_NETWORK = "udpparsernet"
# convolutions of the parser, same names on both sides; the NaN one first in the file, so the errors name it
NAN_TENSOR = "backbone.0.weight"
INF_TENSOR = "backbone.3.weight"


def _copy_with(weights_dir: Path, out: Path, mutate) -> Path:
    """The official folder with NAN_NETWORK's file rewritten by `mutate(state)` (the other files linked). Written as
    float16, a dtype the converter and both loaders accept and keep (`conr_common.contract.manifest.ALLOWED_DTYPES`):
    these tests check refusals of non-finite values, which float16 holds alike, and the file is 110 MB instead of
    219."""
    out.mkdir()
    for f in weights_dir.glob("*.pth"):
        if f.name != f"{NAN_NETWORK}.pth":
            os.symlink(f, out / f.name)
    state = torch.load(weights_dir / f"{NAN_NETWORK}.pth", map_location="cpu", weights_only=True)
    mutate(state)
    torch.save({k: v.half() for k, v in state.items()}, out / f"{NAN_NETWORK}.pth")
    return out


@pytest.fixture(scope="module")
def nan_official(weights_dir, tmp_path_factory):
    def put_nan(state):
        state[NAN_TENSOR][0, 0, 0, 0] = float("nan")
        state[INF_TENSOR][0, 0, 0, 0] = float("inf")
    return _copy_with(weights_dir, tmp_path_factory.mktemp("nan") / "official", put_nan)


@pytest.fixture(scope="module")
def nan_pdparams(nan_official, pdparams_dir, tmp_path_factory):
    """nan_official's NAN_NETWORK converted with allow_nonfinite (the converter's library call), once for this module's
    two readers of it (the Paddle loader and `render`); the three clean networks are hard links to the session's
    conversion of the same files (`pdparams_dir`), which the readers only read. Removed when the module ends."""
    from conr_common.platform.links import link_or_copy
    from convert.conversion import convert_checkpoints

    out = tmp_path_factory.mktemp("nan") / "paddle"
    convert_checkpoints("torch2paddle", nan_official / f"{NAN_NETWORK}.pth", out, allow_nonfinite=True)
    for f in pdparams_dir.glob("*.pdparams"):
        if f.name != f"{NAN_NETWORK}.pdparams":
            link_or_copy(f, out / f.name)
    yield out
    shutil.rmtree(out)


def test_converter_refuses_nan_weights_naming_file_and_tensor(nan_official, tmp_path, capsys):
    from convert.cli import main

    out = tmp_path / "paddle"
    rc = main(["torch2paddle", str(nan_official), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    line = err.strip().splitlines()[-1]
    assert f"{NAN_NETWORK}.pth" in line and NAN_TENSOR in line and "NaN or Inf" in line and "1 more" in line, err
    assert not out.exists() or not any(out.iterdir())  # nothing written


@pytest.mark.slow  # a parser conversion and two 180 M models
def test_converter_allow_nonfinite_converts_and_loaders_still_refuse(nan_official, nan_pdparams):
    from conr_paddle.model import load_pdparams, unloaded
    from conr_torch_ref.model import load_official
    from conr_torch_ref.model import unloaded as torch_unloaded

    out = nan_pdparams
    assert (out / f"{NAN_NETWORK}.pdparams").is_file()
    # loaded into models built as the render builds them (`unloaded`: declared, filled by the load)
    with pytest.raises(ConrInputError, match=rf"{NAN_NETWORK}\.pdparams: tensor {re.escape(NAN_TENSOR)} .*NaN"):
        load_pdparams(unloaded(), out)
    with pytest.raises(ConrInputError, match=rf"{NAN_NETWORK}\.pth: tensor {re.escape(NAN_TENSOR)} .*NaN"):
        load_official(torch_unloaded(), nan_official)


@pytest.mark.slow  # a parser conversion and a subprocess render
def test_render_refuses_nan_weights_in_one_line(nan_pdparams, samples, tmp_path):
    import subprocess
    import sys

    from parity_tests.harness import ROOT, child_env

    weights = nan_pdparams
    out = tmp_path / "frames"
    proc = subprocess.run(
        [sys.executable, "-m", "conr_app", "render", "--weights", str(weights), "--character-sheet",
         str(samples.character_sheet), "--poses", str(samples.poses), "--out", str(out), "--size", "128",
         "--engine", "eager"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=child_env(),
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert "Traceback" not in proc.stderr and "NaN or Inf" in lines[-1], proc.stderr
    assert f"{NAN_NETWORK}.pdparams" in lines[-1], proc.stderr
    assert not out.exists() or not any(out.glob("*.png"))


def test_paddle_loader_refuses_integer_weights():
    from conr_paddle.model import build_network, strict_load

    net = build_network("rgbadecodernet")  # the network alone, not the 180 M-parameter model around it
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    key = next(iter(state))
    state[key] = state[key].astype(np.int64)
    with pytest.raises(ConrInputError, match=rf"{key} \(int64\).*not floating point"):
        strict_load(net, state, what="rgbadecodernet.pdparams")


@pytest.mark.parametrize("side", ["paddle", "torch"])
def test_both_loaders_name_a_missing_or_damaged_file_in_one_line(side, weights_dir, pdparams_dir, tmp_path):
    """The torch reference's loader reports a missing or unreadable file as the Paddle loader does: one
    ConrInputError line naming the file (both read through conr_common.weights.checkpoints)."""
    if side == "paddle":
        from conr_paddle.model import load_pdparams as load, unloaded

        source, first = pdparams_dir, "udpparsernet.pdparams"
    else:
        from conr_torch_ref.model import load_official as load, unloaded

        source, first = weights_dir, "udpparsernet.pth"
    model = unloaded()  # as the render builds it: declared, filled by the load
    missing = tmp_path / "missing"
    missing.mkdir()
    with pytest.raises(ConrInputError) as exc:
        load(model, missing)
    assert str(exc.value) == f"{missing / first}: missing (weights folder needs all four networks)"
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / first).write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(ConrInputError, match=rf"^{re.escape(str(damaged / first))}: cannot read it as a") as exc:
        load(model, damaged)
    assert "\n" not in str(exc.value)
