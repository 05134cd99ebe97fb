"""Weights files that exist but are not regular files (issue 23, findings 15 and 16): a FIFO, a symbolic link to
/dev/zero, a folder or a broken link named like a network is "not a regular file" for every reader and folder
check (conr_common.weights.checkpoints, `convert inspect`, `torch2paddle`, `render --weights`), never "missing", never
skipped, and never opened (a FIFO blocks its reader forever, /dev/zero never ends).

No real weights are needed: each refusal comes from the name's file type, before any byte is read, so the other
networks are one-byte placeholders (which these checks never open either).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conr_common.weights import checkpoints as ckpt
from conr_common.contract.config import NETWORK_NAMES
from conr_common.platform.errors import ConrInputError

OFFICIAL = {name: ckpt.official_manifest()[name].file for name in NETWORK_NAMES}
KINDS = {
    "fifo": "a FIFO",
    "link_to_dev_zero": "a character device through a symbolic link",
    "folder": "a folder",
    "broken_link": "a broken symbolic link",
}


def _plant(path: Path, kind: str) -> Path:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link_to_dev_zero":
        os.symlink("/dev/zero", path)
    elif kind == "folder":
        path.mkdir()
    else:
        os.symlink(path.parent / "nothing-here", path)
    return path


def _folder(root: Path, naming: str, kind: str, network: str = "shader") -> tuple[Path, Path]:
    """A weights folder of `naming` whose `network` file is a `kind`, the other three placeholder files."""
    root.mkdir()
    for name in NETWORK_NAMES:
        file = OFFICIAL[name] if naming == "torch" else f"{name}.pdparams"
        if name != network:
            (root / file).write_bytes(b"x")
    bad = root / (OFFICIAL[network] if naming == "torch" else f"{network}.pdparams")
    return root, _plant(bad, kind)


def _line(bad: Path, kind: str) -> str:
    return f"{bad}: not a regular file ({KINDS[kind]})"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("naming", ["torch", "paddle"])
def test_folder_checks_say_not_a_regular_file(tmp_path, naming, kind):
    folder, bad = _folder(tmp_path / "w", naming, kind)
    for check in (lambda: ckpt.network_files(folder, naming), lambda: ckpt.holds_networks(folder, naming),
                  lambda: ckpt.load_folder(folder, naming), lambda: ckpt.network_path(folder, "shader", naming)):
        with pytest.raises(ConrInputError) as exc:
            check()
        assert str(exc.value) == _line(bad, kind)
    if naming == "paddle":
        with pytest.raises(ConrInputError) as exc:
            ckpt.check_weights_dir(folder)
        assert str(exc.value) == _line(bad, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_file_readers_say_not_a_regular_file(tmp_path, kind):
    for name, reader in (("a.pth", ckpt.load_torch_file), ("a.pdparams", ckpt.load_paddle_file),
                         ("a.safetensors", ckpt.read_safetensors_specs), ("b.pdparams", ckpt.load_any)):
        bad = _plant(tmp_path / name, kind)
        with pytest.raises(ConrInputError) as exc:
            reader(bad)
        assert str(exc.value) == _line(bad, kind)
    assert ckpt.is_torch_zip(tmp_path / "nothing.pth") is False


def test_a_link_to_a_regular_file_is_still_a_weights_file(tmp_path):
    real = tmp_path / "real.pdparams"
    real.write_bytes(b"x")
    os.symlink(real, tmp_path / "link.pdparams")
    assert ckpt.regular_file_present(tmp_path / "link.pdparams") is True
    assert ckpt.regular_file_present(tmp_path / "absent.pdparams") is False


def test_inspect_of_a_folder_with_a_fifo_shader_fails_exit_2(weights_dir, tmp_path, capsys):
    """Finding 15: `inspect` listed the three other networks and exited 0, skipping the FIFO."""
    from convert.cli import main

    folder = tmp_path / "official"
    folder.mkdir()
    for name in NETWORK_NAMES:
        if name != "shader":
            os.symlink(weights_dir / OFFICIAL[name], folder / OFFICIAL[name])
    bad = _plant(folder / OFFICIAL["shader"], "fifo")
    assert main(["inspect", str(folder)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: {_line(bad, 'fifo')}" and captured.out == ""


@pytest.mark.parametrize("kind", ["fifo", "link_to_dev_zero"])
def test_torch2paddle_and_inspect_of_the_file_itself(tmp_path, capsys, kind):
    """Finding 15: torch2paddle called a FIFO in the folder absent (and a FIFO given as the source, a folder
    holding nothing)."""
    from convert.cli import main

    folder, bad = _folder(tmp_path / "w", "torch", kind)
    for argv in (["torch2paddle", str(folder), "-o", str(tmp_path / "o")],
                 ["torch2paddle", str(bad), "-o", str(tmp_path / "o")], ["inspect", str(bad)]):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.strip() == f"error: {_line(bad, kind)}", argv
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["fifo", "link_to_dev_zero"])
def test_render_weights_folder(tmp_path, capsys, kind):
    """Finding 16: `render --weights` with a FIFO or a link to /dev/zero said "missing"."""
    from conr_app.cli import main

    folder, bad = _folder(tmp_path / "w", "paddle", kind)
    argv = ["render", "--weights", str(folder), "--character-sheet", str(tmp_path), "--poses", str(tmp_path),
            "--out", str(tmp_path / "out"), "--size", "128", "--engine", "eager", "--quiet"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"error: {_line(bad, kind)}"
    assert not (tmp_path / "out").exists()
