"""Checkpoint converter: rename table, strict mapping, safe readers, CLI behaviour and a full-size round trip.

Official-format checkpoints are seeded random weights (`conr_torch_ref.seeded`, the project's one generator); most
CLI cases use the small rgbadecodernet (10 tensors) and the target pose encoder. Converted weights are checked in the
real networks through the production loaders: the single-file case in both frameworks' rgbadecodernet (strict),
the full four-file folder through conftest's session fixtures (the seeded official-format files, their conversion
and the two 180 M parameter models loaded by `load_official` / `load_pdparams`, built once per session).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conr_common.weights import checkpoints as cio
from conr_common.verification.compare import diff
from conr_common.contract.config import NETWORK_NAMES, OFFICIAL
from conr_common.verification.draws import SEEDED
from conr_common.platform.errors import ConrInputError
from conr_common.platform import integrity
from conr_common.platform.integrity import sha256_file
from conr_common.verification.tolerances import DECODER_SCALED_FP32
from conr_paddle.model import strict_load
from conr_common.contract.manifest import (
    check_against_manifest,
    expected_specs,
    identify_network,
    official_manifest,
    paddle_to_torch,
    torch_to_paddle,
    unwrap,
)
from conr_common.contract.rename import (
    layer_kind,
    paddle_to_torch_key,
    to_paddle_tensor,
    to_torch_tensor,
    torch_to_paddle_key,
)
from conr_torch_ref.seeded import seeded_network_state
from convert.cli import main
from parity_tests.harness import ROOT as REPO, child_env

SMALL = "rgbadecodernet"


def random_official_state(name: str, seed: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """Seeded weights of one network (official names, manifest order), drawn with `seed`, cast to `dtype`."""
    state = seeded_network_state(name, dataclasses.replace(SEEDED, seed=seed))
    return {k: v.astype(dtype, copy=False) for k, v in state.items()}


def write_official_file(folder: Path, name: str, seed: int) -> Path:
    """`<official file name>` of network `name` (e.g. rgbadecodernet.pth) in `folder`, with `torch.save`."""
    return _save_pth(random_official_state(name, seed), folder / official_manifest()[name].file)


def _save_pth(state: dict, path: Path) -> Path:
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, path)
    return path


def _assert_one_line_error(capsys, rc: int, *, contains: str | None = None) -> str:
    captured = capsys.readouterr()
    assert rc == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and "Traceback" not in captured.err
    if contains:
        assert contains in lines[0], lines[0]
    return lines[0]


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


# ------------------------------------------------------------------------------------------------ rename table
def test_rename_rules_on_official_keys():
    shader = official_manifest()["shader"].tensors
    assert torch_to_paddle_key("backbone.1.norm.weight", (64,)) == "backbone.1.norm.scale"
    assert torch_to_paddle_key("upsample_blocks.0.bn1.norm.weight", (512,)) == "upsample_blocks.0.bn1.norm.scale"
    assert torch_to_paddle_key("upsample_blocks.0.bn1.norm.bias", (512,)) == "upsample_blocks.0.bn1.norm.bias"
    for key in ("decoder_blocks.0.conv0.1.weight", "decoder_blocks.5.convblocks.1.11.weight", "decoder_blocks.3.conv_last.1.weight"):
        assert layer_kind(key, shader[key].shape) == "prelu"
        assert torch_to_paddle_key(key, shader[key].shape) == key[: -len("weight")] + "_weight"
    # conv and conv-transpose weights keep name and layout; the decoder's 1x1 convs named norm1/norm2 are convs
    assert torch_to_paddle_key("decoder_blocks.0.conv_last.2.weight", (224, 6212, 4, 4)) == "decoder_blocks.0.conv_last.2.weight"
    assert torch_to_paddle_key("bottleneck.r0.norm1.weight", (64, 64, 1, 1)) == "bottleneck.r0.norm1.weight"
    # every official key survives the round trip of names, and the renames are exactly norms and PReLUs
    renamed = 0
    for manifest in official_manifest().values():
        for key, spec in manifest.tensors.items():
            pkey = torch_to_paddle_key(key, spec.shape)
            assert paddle_to_torch_key(pkey) == key
            renamed += pkey != key
    prelus = sum(1 for k, s in shader.items() if len(s.shape) == 1 and k.endswith(".weight"))
    norms = sum(1 for m in official_manifest().values() for k in m.tensors if k.endswith(".norm.weight"))
    assert prelus == 6 * 3 + 7 * 6 and renamed == prelus + norms


def test_linear_rule_transposes_both_ways():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)  # torch [out, in]
    p = to_paddle_tensor("head.weight", w)
    assert p.shape == (3, 2) and np.array_equal(p, w.T)
    assert np.array_equal(to_torch_tensor("head.weight", (2, 3), p), w)
    conv = np.ones((4, 3, 3, 3), np.float32)
    assert to_paddle_tensor("c.weight", conv) is conv  # identity: no copy


# ----------------------------------------------------------------------------------------------- pure mapping
def test_pure_round_trip_and_identification():
    for i, name in enumerate(("rgbadecodernet", "target_pose_encoder")):
        state = random_official_state(name, seed=i)
        assert identify_network(state) == name
        pstate = torch_to_paddle(name, state)
        assert list(pstate) == list(expected_specs(name, "paddle"))
        assert identify_network(pstate, naming="paddle") == name
        back = paddle_to_torch(name, pstate)
        assert list(back) == list(state)
        assert all(np.array_equal(back[k], state[k]) and back[k].dtype == state[k].dtype for k in state)


def test_check_against_manifest_reports_every_kind():
    state = random_official_state(SMALL, seed=0)
    state["conv_rgba.0.weight"] = np.zeros((4, 64, 1, 1), np.float32)
    del state["conv_rgba.0.bias"]
    state["extra.weight"] = np.zeros(3, np.float32)
    state["bottleneck.r0.conv1.bias"] = np.zeros(64, np.int64)
    state["bottleneck.r0.conv2.bias"] = np.zeros(64, np.float16)
    mismatch = check_against_manifest(SMALL, state)
    assert not mismatch.ok
    assert mismatch.missing == ["conv_rgba.0.bias"] and mismatch.unexpected == ["extra.weight"]
    assert mismatch.shape_mismatches == [("conv_rgba.0.weight", (4, 64, 3, 3), (4, 64, 1, 1))]
    assert mismatch.dtype_errors == [("bottleneck.r0.conv1.bias", "int64")]
    assert mismatch.dtype_notes == [("bottleneck.r0.conv2.bias", "float16")]
    with pytest.raises(ConrInputError, match=r"1 missing \(conv_rgba.0.bias\).*1 unexpected \(extra.weight\)"):
        torch_to_paddle(SMALL, state, source="x.pth")


def test_unwrap_containers_and_errors():
    state = random_official_state(SMALL, seed=0)
    flat, notes = unwrap({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3})
    assert list(flat) == list(state)
    assert any("'state_dict'" in n and "epoch" in n for n in notes) and any("module." in n for n in notes)
    with pytest.raises(ConrInputError, match="not tensors"):
        unwrap({"a": np.zeros(2), "b": "text"}, source="f.pth")
    with pytest.raises(ConrInputError, match="match no official"):
        identify_network(["a.weight", "b.bias"], source="f.pth")


# ------------------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def small_file(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    return _save_pth(random_official_state(SMALL, seed=1), src / "decoder_weights.pth")


def test_single_file_to_pdparams_and_back(tmp_path, small_file, capsys):
    paddle = cio.import_paddle()
    out = tmp_path / "pd"
    assert main(["torch2paddle", str(small_file), "-o", str(out), "--verbose"]) == 0
    stdout = capsys.readouterr().out
    assert "bottleneck.r0.conv1.weight -> bottleneck.r0.conv1.weight [64, 64, 3, 3] float32" in stdout
    report = json.loads((out / "conversion_report.json").read_text())
    net = report["networks"][SMALL]
    assert report["reloaded_bit_identical"] is True and net["reloaded_bit_identical"] is True
    assert net["tensors"] == 10 and net["parameters"] == official_manifest()[SMALL].num_parameters
    assert net["input"]["sha256"] == sha256_file(small_file)
    assert net["output"]["sha256"] == sha256_file(out / f"{SMALL}.pdparams")
    assert report["versions"]["torch"] and report["versions"]["paddlepaddle"] and report["tool"]["version"]

    # the production reader gives the same bytes (and so does Paddle's own paddle.load), the production strict
    # loader puts them into the real Paddle decoder; the torch decoder loaded with the original state computes the
    # same function
    original = random_official_state(SMALL, seed=1)
    loaded = cio.read_network(out / f"{SMALL}.pdparams", "paddle")
    assert sorted(loaded) == sorted(original)
    assert all(np.array_equal(loaded[k], original[k]) for k in original)
    assert all(np.array_equal(v.numpy(), loaded[k]) for k, v in paddle.load(str(out / f"{SMALL}.pdparams")).items())
    pnet, tnet = _real_decoders(original)
    strict_load(pnet, loaded, what=SMALL)
    assert all(cio.bitwise_equal(v.numpy(), original[k]) for k, v in pnet.state_dict().items())
    x = np.random.default_rng(0).standard_normal((2, OFFICIAL.decoder.channels, 16, 16)).astype(np.float32)
    with torch.no_grad():
        reference = tnet(torch.from_numpy(x)).numpy()
    assert diff(reference, pnet(paddle.to_tensor(x)).numpy()).scaled <= DECODER_SCALED_FP32

    back = tmp_path / "back"
    assert main(["paddle2torch", str(out / f"{SMALL}.pdparams"), "-o", str(back)]) == 0
    restored = cio.read_network(back / official_manifest()[SMALL].file, "torch")
    assert list(restored) == list(original)
    assert all(np.array_equal(restored[k], original[k]) for k in original)
    _, tnet_back = _real_decoders(restored)
    with torch.no_grad():
        assert torch.equal(tnet_back(torch.from_numpy(x)), torch.from_numpy(reference))


def _real_decoders(torch_state: dict | None):
    """The real rgbadecodernet of each side (conr_paddle / conr_torch_ref, official config, eval mode); the torch
    one strictly loaded with `torch_state` (numpy, torch names) when given."""
    from conr_paddle.decoder import RGBADecoderNet as PaddleDecoder
    from conr_torch_ref.decoder import RGBADecoderNet as TorchDecoder
    from conr_torch_ref.model import strict_load as torch_strict_load

    pnet, tnet = PaddleDecoder(OFFICIAL.decoder), TorchDecoder(OFFICIAL.decoder)
    pnet.eval()
    tnet.eval()
    if torch_state is not None:
        torch_strict_load(tnet, torch_state, what=SMALL)
    return pnet, tnet


def test_file_hash_is_remembered_per_version_and_never_stale(tmp_path, monkeypatch):
    """`sha256_file_remembered` (the weight set's identity, asked for by every render): a settled file is read once,
    through any link to it; a rewrite is seen even when it keeps the inode and size and puts the old mtime back
    (ctime moves); a file changed within UNSETTLED_NS is read on every call."""
    import hashlib

    reads = []
    monkeypatch.setattr(integrity, "sha256_file", lambda path: reads.append(path) or sha256_file(path))
    path, link = tmp_path / "w.bin", tmp_path / "link.bin"
    path.write_bytes(b"a" * 4096)
    link.symlink_to(path)
    first = integrity.sha256_file_remembered(path, unsettled_ns=0)
    assert first == hashlib.sha256(b"a" * 4096).hexdigest() and len(reads) == 1
    assert integrity.sha256_file_remembered(path, unsettled_ns=0) == first
    assert integrity.sha256_file_remembered(link, unsettled_ns=0) == first and len(reads) == 1
    old = path.stat()
    time.sleep(0.05)  # past the file system's coarse time stamp tick (what UNSETTLED_NS guards in real use)
    with open(path, "r+b") as f:  # in place: same inode, same size
        f.write(b"b")
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    now = path.stat()
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (old.st_ino, old.st_size, old.st_mtime_ns)
    assert now.st_ctime_ns != old.st_ctime_ns
    second = hashlib.sha256(b"b" + b"a" * 4095).hexdigest()
    assert integrity.sha256_file_remembered(path, unsettled_ns=0) == second and len(reads) == 2
    path.write_bytes(b"c" * 4096)  # just changed: read on every call
    third = hashlib.sha256(b"c" * 4096).hexdigest()
    assert integrity.sha256_file_remembered(path) == integrity.sha256_file_remembered(path) == third
    assert len(reads) == 4


def test_safetensors_output_and_back(tmp_path, small_file, capsys):
    out = tmp_path / "st"
    assert main(["torch2paddle", str(small_file), "-o", str(out), "--format", "safetensors"]) == 0
    import safetensors.numpy

    written = safetensors.numpy.load_file(str(out / f"{SMALL}.safetensors"))
    assert sorted(written) == sorted(expected_specs(SMALL, "paddle"))
    back = tmp_path / "back"
    assert main(["paddle2torch", str(out), "-o", str(back)]) == 0
    original = random_official_state(SMALL, seed=1)
    restored = cio.load_torch_file(back / official_manifest()[SMALL].file)
    assert all(np.array_equal(restored[k], original[k]) for k in original)


def test_float16_keeps_dtype_and_report_says_so(tmp_path, capsys):
    src = _save_pth(random_official_state(SMALL, seed=2, dtype=np.float16), tmp_path / "half.pth")
    assert main(["torch2paddle", str(src), "-o", str(tmp_path / "out")]) == 0
    net = json.loads((tmp_path / "out" / "conversion_report.json").read_text())["networks"][SMALL]
    assert net["dtypes"] == {"float16": 10} and "float16" in net["dtype_note"]
    written = cio.load_paddle_file(tmp_path / "out" / f"{SMALL}.pdparams")
    assert all(v.dtype == np.float16 for v in written.values())


def test_bfloat16_is_widened_exactly_with_a_note(tmp_path, capsys):
    state = random_official_state(SMALL, seed=3)
    bf = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in state.items()}
    torch.save(bf, tmp_path / "bf.pth")
    assert main(["torch2paddle", str(tmp_path / "bf.pth"), "-o", str(tmp_path / "out")]) == 0
    net = json.loads((tmp_path / "out" / "conversion_report.json").read_text())["networks"][SMALL]
    assert net["dtypes"] == {"float32": 10} and any("bfloat16" in n for n in net["notes"])
    written = cio.load_paddle_file(tmp_path / "out" / f"{SMALL}.pdparams")
    assert all(np.array_equal(written[k], bf[k].float().numpy()) for k in bf)


def test_container_and_module_prefix_are_unwrapped_with_a_note(tmp_path, capsys):
    """A training checkpoint's wrapping (the smallest network: the unwrapping does not depend on which)."""
    state = random_official_state(SMALL, seed=4)
    wrapped = {"state_dict": {f"module.{k}": torch.from_numpy(v) for k, v in state.items()}, "epoch": 7}
    torch.save(wrapped, tmp_path / "ckpt.pt")
    assert main(["torch2paddle", str(tmp_path / "ckpt.pt"), "-o", str(tmp_path / "out")]) == 0
    notes = json.loads((tmp_path / "out" / "conversion_report.json").read_text())["networks"][SMALL]["notes"]
    assert any("'state_dict' container" in n for n in notes) and any("'module.' prefix" in n for n in notes)
    assert "note: " in capsys.readouterr().out


def test_existing_output_needs_force(tmp_path, small_file, capsys):
    out = tmp_path / "out"
    assert main(["torch2paddle", str(small_file), "-o", str(out)]) == 0
    target = out / f"{SMALL}.pdparams"
    target.write_bytes(b"old")
    capsys.readouterr()
    rc = main(["torch2paddle", str(small_file), "-o", str(out)])
    _assert_one_line_error(capsys, rc, contains="--force")
    assert target.read_bytes() == b"old"
    assert main(["torch2paddle", str(small_file), "-o", str(out), "--force"]) == 0
    assert target.stat().st_size > 1000 and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_partial_folder_converts_what_is_there(tmp_path, capsys):
    write_official_file(tmp_path, SMALL, seed=5)
    assert main(["torch2paddle", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "absent" in out and "shader.pth" in out
    report = json.loads((tmp_path / "paddle" / "conversion_report.json").read_text())
    assert list(report["networks"]) == [SMALL] and "udpparsernet.pth" in report["absent"]


class _OpensFile:
    """Unpickling this object would create a file: proves loaders never run pickled code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _RunsShell:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_input(kind: str, src: Path, marker: Path) -> tuple[Path, str]:
    """Create bad input `kind` under folder `src`; return the path to convert and a piece of the expected error."""
    src.mkdir(parents=True)
    good = random_official_state(SMALL, seed=6)
    if kind == "empty_folder":
        return src, "none of the official checkpoint files"
    if kind == "text_file":
        (src / "rgbadecodernet.pth").write_text("these are not weights\n")
        return src / "rgbadecodernet.pth", "not a PyTorch checkpoint"
    if kind == "truncated":
        path = _save_pth(good, src / "rgbadecodernet.pth")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path, "cannot read it"
    if kind == "pickle_opens_file":
        torch.save({"conv_rgba.0.weight": torch.zeros(1), "x": _OpensFile(str(marker))}, src / "rgbadecodernet.pth")
        return src / "rgbadecodernet.pth", "refused: the file needs to run code"
    if kind == "plain_pickle_runs_shell":
        with open(src / "rgbadecodernet.pth", "wb") as f:
            pickle.dump({"x": _RunsShell(str(marker))}, f, protocol=2)
        return src / "rgbadecodernet.pth", "refused: the file needs to run code"
    if kind == "wrong_shape":
        good["conv_rgba.0.weight"] = np.zeros((4, 64, 1, 1), np.float32)
        return _save_pth(good, src / "rgbadecodernet.pth"), "conv_rgba.0.weight: expected [4, 64, 3, 3] found [4, 64, 1, 1]"
    if kind == "extra_key":
        good["conv_rgba.1.weight"] = np.zeros(4, np.float32)
        return _save_pth(good, src / "rgbadecodernet.pth"), "1 unexpected (conv_rgba.1.weight)"
    if kind == "missing_key":
        del good["bottleneck.r0.norm2.bias"]
        return _save_pth(good, src / "rgbadecodernet.pth"), "1 missing (bottleneck.r0.norm2.bias)"
    if kind == "unknown_network":
        return _save_pth({"fc.weight": np.zeros((3, 2), np.float32)}, src / "mystery.pth"), "match no official"
    if kind == "bad_second_file":  # a good decoder next to a broken shader: nothing is written
        _save_pth(good, src / "rgbadecodernet.pth")
        (src / "shader.pth").write_bytes(b"PK\x03\x04 broken")
        return src, "shader.pth"
    raise AssertionError(kind)


BAD_INPUTS = [
    "empty_folder",
    "text_file",
    "truncated",
    "pickle_opens_file",
    "plain_pickle_runs_shell",
    "wrong_shape",
    "extra_key",
    "missing_key",
    "unknown_network",
    "bad_second_file",
]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, capsys, kind):
    marker = tmp_path / "MARKER"
    path, expected = _bad_input(kind, tmp_path / "src", marker)
    rc = main(["torch2paddle", str(path)])
    _assert_one_line_error(capsys, rc, contains=expected)
    assert not marker.exists(), "a loader ran code from the checkpoint"
    assert not (tmp_path / "src" / "paddle").exists()
    if kind in ("wrong_shape", "extra_key", "missing_key", "unknown_network"):
        assert main(["inspect", str(path)]) == 1
    elif kind != "empty_folder":
        _assert_one_line_error(capsys, main(["inspect", str(path)]))
    assert not marker.exists()


def test_pdparams_loader_refuses_code(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    src = tmp_path / "src"
    src.mkdir()
    with open(src / f"{SMALL}.pdparams", "wb") as f:
        pickle.dump({"conv_rgba.0.weight": _OpensFile(str(marker))}, f, protocol=4)
    rc = main(["paddle2torch", str(src), "-o", str(tmp_path / "out")])
    _assert_one_line_error(capsys, rc, contains="refused: the file needs to run code to load (global io.open)")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_paddle2torch_needs_out(tmp_path, capsys):
    _assert_one_line_error(capsys, main_exit(["paddle2torch", str(tmp_path)]), contains="-o/--out")


def main_exit(argv) -> int:
    """main() for argv that argparse rejects (it exits via SystemExit)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_inspect_table(tmp_path, capsys):
    write_official_file(tmp_path, SMALL, seed=7)
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert SMALL in out and "84,484" in out and "ok" in out and sha256_file(tmp_path / "rgbadecodernet.pth") in out
    # the same network without one tensor (the smallest network: 0.3 MB written, not the pose encoder's 0.1 GB)
    bad = random_official_state(SMALL, seed=8)
    del bad["bottleneck.r0.norm2.bias"]
    _save_pth(bad, tmp_path / f"{SMALL}.pth")
    assert main(["inspect", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "DIFFERS" in out and "1 missing (bottleneck.r0.norm2.bias)" in out


@pytest.mark.slow  # three child processes importing torch and paddle
def test_module_entry_point_subprocess(tmp_path, small_file):
    env = child_env()
    help_run = subprocess.run([sys.executable, "-m", "convert", "--help"], capture_output=True, text=True, env=env, cwd=REPO)
    assert help_run.returncode == 0 and "torch2paddle" in help_run.stdout and "inspect" in help_run.stdout
    run = subprocess.run(
        [sys.executable, "-m", "convert", "torch2paddle", str(small_file), "-o", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == "", run.stderr  # framework import warnings stay off the user's stderr
    assert (tmp_path / "o" / f"{SMALL}.pdparams").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "convert", "torch2paddle", str(tmp_path / "nothing")],
        capture_output=True, text=True, env=env, cwd=REPO,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: ")


# -------------------------------------------------------------------------------------- full-size round trip
@pytest.fixture(scope="module")
def round_trip_dir(pdparams_dir, tmp_path_factory):
    """The session's converted folder (conftest's pdparams_dir: the CLI's torch2paddle of the seeded official-format
    files) converted back to torch, once for this module."""
    out = tmp_path_factory.mktemp("round_trip") / "torch"
    assert main(["paddle2torch", str(pdparams_dir), "-o", str(out)]) == 0
    return out


def test_full_folder_round_trip_bit_identical(weights_dir, pdparams_dir, round_trip_dir):
    report = json.loads((pdparams_dir / "conversion_report.json").read_text())
    assert list(report["networks"]) == list(NETWORK_NAMES) and report["absent"] == []
    for name in NETWORK_NAMES:
        file = official_manifest()[name].file
        assert report["networks"][name]["parameters"] == official_manifest()[name].num_parameters
        original = cio.load_torch_file(weights_dir / file, mmap=True)
        restored = cio.load_torch_file(round_trip_dir / file, mmap=True)
        assert list(restored) == list(original)
        for key in original:
            assert cio.bitwise_equal(restored[key], original[key]), (name, key)
        del original, restored


def test_production_loaders_hold_the_official_tensors_bitwise(official_states, torch_model, paddle_model):
    """The session models are built by the production loaders (conftest: `load_official` of the official-format
    files, `load_pdparams` of the converter's output). Every tensor of every network equals the file's, read
    independently with torch.load: under the rename table on the Paddle side, bit for bit on both."""
    for name, official in official_states.items():
        tstate = getattr(torch_model, name).state_dict()
        pstate = getattr(paddle_model, name).state_dict()
        assert list(tstate) == list(official), name
        assert sorted(pstate) == sorted(torch_to_paddle_key(k, v.shape) for k, v in official.items()), name
        for key, value in official.items():
            assert cio.bitwise_equal(tstate[key].numpy(), value), (name, key)
            pvalue = pstate[torch_to_paddle_key(key, value.shape)].numpy()
            assert cio.bitwise_equal(pvalue, to_paddle_tensor(key, value)), (name, key)


def test_round_trip_folder_loads_with_load_official_and_computes_identically(round_trip_dir, torch_model, samples):
    """torch -> Paddle -> torch weights, loaded by the torch reference's production loader (strict), hold the same
    tensors as the session model, and its networks give the same outputs bit for bit: the target pose encoder on a
    128 px sample pose and the RGBA decoder on its features' scale (the full render is the parity tests' job)."""
    from conr_torch_ref.model import load_official, unloaded
    from parity_tests.harness import pose_input

    again = load_official(unloaded(), round_trip_dir).eval()
    for name in NETWORK_NAMES:
        mine, theirs = getattr(again, name).state_dict(), getattr(torch_model, name).state_dict()
        assert list(mine) == list(theirs), name
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), name
    xyz, alpha = (torch.from_numpy(a) for a in pose_input(samples, 128, 1)[:2])
    message = torch.from_numpy(np.random.default_rng(0).standard_normal((1, OFFICIAL.decoder.channels, 128, 128))
                               .astype(np.float32))
    with torch.no_grad():
        features = [m.encode_target(xyz, alpha) for m in (torch_model, again)]
        rgba = [m.rgbadecodernet(message) for m in (torch_model, again)]
    del again
    assert len(features[0]) == len(features[1]) and features[0][-1].abs().max() > 0
    assert all(torch.equal(a, b) for a, b in zip(*features))
    assert torch.equal(rgba[0], rgba[1]) and rgba[0].std() > 0


def test_output_folder_equal_to_source_is_refused(weights_dir, tmp_path, capsys):
    """`torch2paddle SRC -o SRC` used to write beside the inputs (with --format safetensors the folder then held two
    files per network and was no longer a usable source)."""
    import os

    from convert.cli import main

    src = tmp_path / "official"
    src.mkdir()
    for f in weights_dir.glob("*.pth"):
        os.symlink(f, src / f.name)
    before = sorted(p.name for p in src.iterdir())
    assert main(["torch2paddle", str(src), "-o", str(src), "--format", "safetensors"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is the source folder" in err, err
    assert sorted(p.name for p in src.iterdir()) == before


def test_output_folder_containing_the_source_is_refused(pdparams_dir, tmp_path, capsys):
    """`paddle2torch weights/paddle -o weights --force` would replace the official .pth files that sit next to the
    source folder: an -o that contains the source is refused, nothing written."""
    import os

    from convert.cli import main

    parent = tmp_path / "weights"
    src = parent / "paddle"
    src.mkdir(parents=True)
    for f in pdparams_dir.glob("*.pdparams"):
        os.symlink(f, src / f.name)
    (parent / "shader.pth").write_bytes(b"the user's official file")
    assert main(["paddle2torch", str(src), "-o", str(parent), "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "contains the source folder" in err, err
    assert (parent / "shader.pth").read_bytes() == b"the user's official file"


@pytest.mark.parametrize("naming", ["torch", "paddle"])
def test_network_files_lists_the_four_or_names_the_first_missing(tmp_path, naming):
    names = [official_manifest()[n].file if naming == "torch" else f"{n}.pdparams" for n in NETWORK_NAMES]
    for name in names[:2] + names[3:]:
        (tmp_path / name).write_bytes(b"x")
    assert not cio.holds_networks(tmp_path, naming)
    with pytest.raises(ConrInputError) as exc:
        cio.network_files(tmp_path, naming, needs="--torch folder needs all four networks")
    assert str(exc.value) == f"{tmp_path / names[2]}: missing (--torch folder needs all four networks)"
    (tmp_path / names[2]).write_bytes(b"x")
    assert cio.holds_networks(tmp_path, naming)
    assert cio.network_files(tmp_path, naming) == [tmp_path / n for n in names]
    assert not cio.holds_networks(tmp_path, "paddle" if naming == "torch" else "torch")
