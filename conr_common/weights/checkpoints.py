"""Reading and writing checkpoint files as `dict[str, numpy.ndarray]`, safely, and the weights folders made of them.

Nothing here executes code from a file: PyTorch files are read with `torch.load(weights_only=True)`, `.pdparams`
with a restricted unpickler that only rebuilds numpy arrays (what `paddle.save` writes for a state dict: a pickle,
protocol 4, of a dict of numpy arrays), and safetensors by the `safetensors` package. Any other content is
refused with a one-line `ConrInputError`.

bfloat16: numpy has no bfloat16 dtype and `ml_dtypes` is not a dependency of this project, so a bfloat16 tensor is
widened to float32 when read (exact: every bfloat16 value is a float32 value) and a note says so. The converted
file then holds float32; float16 and float64 are kept as they are.

Folders: `read_network` / `load_folder` read the four networks of a folder (official `.pth` files for the torch
naming, `<network>.pdparams` for Paddle's) as numpy state dicts; `check_weights_dir` is the renderer's check of a
Paddle weights folder and `weights_hash` the identity of its files (the key of compiled-graph caches).

A weights file must be a regular file (a symbolic link to one is fine): a name that exists as a FIFO, a device, a
folder or a broken link is reported as "not a regular file" by every reader and folder check here, never as
missing, and is never opened (a FIFO blocks the reader forever, /dev/zero never ends).

torch and paddle are imported inside the functions that need them: this module is framework-neutral and both model
packages, the converter and the tests read weights through it.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import stat
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from conr_common.contract.config import NETWORK_NAMES
from conr_common.platform.errors import ConrInputError
from conr_common.platform.integrity import sha256_file_remembered
from conr_common.contract.manifest import TensorSpec, official_manifest, unwrap

__all__ = [
    "TORCH_SUFFIXES",
    "PADDLE_SUFFIXES",
    "is_torch_zip",
    "not_regular_reason",
    "regular_file_present",
    "load_torch_file",
    "load_safetensors_file",
    "read_safetensors_specs",
    "load_paddle_file",
    "load_pdparams_with_sha256",
    "load_any",
    "save_pdparams",
    "save_safetensors",
    "save_torch_file",
    "save_state",
    "bitwise_equal",
    "network_path",
    "network_files",
    "holds_networks",
    "read_network",
    "load_folder",
    "check_weights_dir",
    "weights_hash",
    "check_state_fits",
    "import_paddle",
    "import_torch",
]

TORCH_SUFFIXES = (".pth", ".pt", ".safetensors")
PADDLE_SUFFIXES = (".pdparams", ".safetensors")

_REFUSED = "refused: the file needs to run code to load ({}); only plain tensor checkpoints are accepted"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = _ANSI.sub("", str(exc)).strip().splitlines()
    line = text[0].strip() if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def import_torch():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch
    return torch


def import_paddle():
    """paddle, imported with its import-time prints and warnings (ccache, OMP_NUM_THREADS) kept off stderr."""
    from conr_common.platform.quiet import import_paddle as quiet_import

    return quiet_import()


def is_torch_zip(path: str | os.PathLike) -> bool:
    """True for a `.pth`/`.pt` in torch's zip format (the one `torch.load(mmap=True)` can map)."""
    path = Path(path)
    if path.suffix not in (".pth", ".pt") or not regular_file_present(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def not_regular_reason(path: str | os.PathLike) -> str | None:
    """What `path` is when something exists under that name but is not a regular file after following links (`a
    FIFO`, `a character device through a symbolic link`, `a broken symbolic link`, ...); None for a regular file
    (or a link to one) and for a name that does not exist. Only `stat`: nothing is opened."""
    link = os.path.islink(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if link else None
    except OSError as exc:  # a loop of links, a name too long, no permission on a folder on the way
        return f"cannot be examined ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
    return kind + (" through a symbolic link" if link else "")


def regular_file_present(path: str | os.PathLike) -> bool:
    """True for a regular file (or a link to one), False when nothing is there; ConrInputError `<path>: not a
    regular file (<what it is>)` for anything else under that name."""
    reason = not_regular_reason(path)
    if reason is not None:
        raise ConrInputError(f"{path}: not a regular file ({reason})")
    return os.path.isfile(path)


def _check_readable(path: Path) -> None:
    if not regular_file_present(path):
        raise ConrInputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ConrInputError(f"{path}: the file is empty")


# --------------------------------------------------------------------------------------------------------- torch
def _torch_to_numpy(obj, path: Path, bf16: list[str], where: str = ""):
    """Replace every torch tensor in a loaded object by a numpy array (zero-copy where the dtype allows)."""
    torch = import_torch()
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.layout != torch.strided:
            raise ConrInputError(f"{path}: tensor {where or '?'} is {t.layout}; only dense tensors are accepted")
        if t.dtype == torch.bfloat16:
            bf16.append(where)
            return t.float().numpy()
        try:
            return t.numpy()
        except (TypeError, RuntimeError) as exc:
            raise ConrInputError(f"{path}: tensor {where or '?'} of dtype {t.dtype} has no numpy form ({_first_line(exc)})") from None
    if isinstance(obj, Mapping):
        return {k: _torch_to_numpy(v, path, bf16, f"{where}.{k}" if where else str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_torch_to_numpy(v, path, bf16, f"{where}[{i}]") for i, v in enumerate(obj))
    return obj


def _bf16_note(names: list[str], notes: list[str] | None) -> None:
    if names and notes is not None:
        notes.append(f"{len(names)} bfloat16 tensors widened to float32 (exact; numpy has no bfloat16)")


def load_torch_file(path: str | os.PathLike, *, mmap: bool = False, notes: list[str] | None = None):
    """Load a `.pth`/`.pt` (or `.safetensors`) file as nested dicts with numpy arrays in place of tensors.

    `torch.load(weights_only=True)`: a pickle that needs to run code is refused. With `mmap=True` the tensor data
    is mapped, not read (cheap for checking shapes); files in the legacy (pre-zip) format fall back to reading.
    Notes about dtype changes are appended to `notes`.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors_file(path, notes=notes)
    _check_readable(path)
    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"PK" and head[:1] != b"\x80":  # torch.save writes a zip archive (or, before 1.6, a pickle)
        raise ConrInputError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    torch = import_torch()
    loaded = None
    for use_mmap in ((True, False) if mmap else (False,)):
        try:
            with warnings.catch_warnings():
                # e.g. "Detected pickle protocol 4": the refusal below says what matters, on one line
                warnings.simplefilter("ignore")
                loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
            break
        except pickle.UnpicklingError as exc:
            text = _ANSI.sub("", str(exc))
            if "Weights only load failed" in text:
                found = re.search(r"Unsupported global: GLOBAL \S+|Unsupported operand \d+|Unsupported class \S+", text)
                raise ConrInputError(f"{path}: " + _REFUSED.format(found.group(0) if found else "not a plain tensor pickle")) from None
            raise ConrInputError(f"{path}: cannot read it as a PyTorch checkpoint ({_first_line(exc)})") from None
        except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError, ... on a damaged file
            if use_mmap and "mmap can only be used" in str(exc):
                continue
            raise ConrInputError(f"{path}: cannot read it as a PyTorch checkpoint ({_first_line(exc)})") from None
    bf16: list[str] = []
    out = _torch_to_numpy(loaded, path, bf16)
    _bf16_note(bf16, notes)
    return out


# --------------------------------------------------------------------------------------------------- safetensors
def read_safetensors_specs(path: str | os.PathLike) -> dict[str, TensorSpec]:
    """Names, shapes and dtypes of a safetensors file, without reading the data."""
    from safetensors import safe_open

    path = Path(path)
    _check_readable(path)
    names = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
    try:
        with safe_open(str(path), framework="numpy") as f:
            out = {}
            for key in f.keys():
                sl = f.get_slice(key)
                dt = sl.get_dtype()
                out[key] = TensorSpec(tuple(sl.get_shape()), names.get(dt, dt.lower()))
            return out
    except Exception as exc:  # SafetensorError, OSError
        raise ConrInputError(f"{path}: cannot read it as a safetensors file ({_first_line(exc)})") from None


def load_safetensors_file(path: str | os.PathLike, *, notes: list[str] | None = None) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays (bfloat16 widened to float32, with a note)."""
    import safetensors.numpy

    path = Path(path)
    specs = read_safetensors_specs(path)  # also validates the header
    try:
        if not any(s.dtype == "bfloat16" for s in specs.values()):
            return safetensors.numpy.load_file(str(path))
        from safetensors import safe_open

        torch = import_torch()
        out: dict[str, np.ndarray] = {}
        bf16 = []
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                if t.dtype == torch.bfloat16:
                    bf16.append(key)
                    t = t.float()
                out[key] = t.numpy()
        _bf16_note(bf16, notes)
        return out
    except Exception as exc:
        raise ConrInputError(f"{path}: cannot read it as a safetensors file ({_first_line(exc)})") from None


# -------------------------------------------------------------------------------------------------------- paddle
def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build dicts, lists, tuples, strings, numbers and numpy arrays, and nothing else.

    `paddle.save` of a state dict pickles (protocol 4) a dict of numpy arrays, whose only globals are
    `numpy._core.multiarray._reconstruct` (`numpy.core...` when written by numpy 1.x), `numpy.ndarray` and
    `numpy.dtype`. Every other global is refused before anything is called.
    """

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("collections", "OrderedDict"): lambda: OrderedDict,
    }

    def find_class(self, module: str, name: str):
        factory = self._ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(_REFUSED.format(f"global {module}.{name}"))
        return factory()

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(_REFUSED.format("a persistent id"))


class _HashingReader:
    """File wrapper that feeds every byte the unpickler reads into a sha256 (one pass for both)."""

    def __init__(self, f, digest):
        self._f = f
        self.digest = digest

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.digest.update(data)
        return data

    def readinto(self, buf) -> int:
        n = self._f.readinto(buf)
        self.digest.update(memoryview(buf)[:n])
        return n

    def readline(self) -> bytes:
        data = self._f.readline()
        self.digest.update(data)
        return data


def load_pdparams_with_sha256(path: str | os.PathLike) -> tuple[dict, str]:
    """`load_paddle_file` of a `.pdparams` and the sha256 of its bytes, reading the file once."""
    digest = hashlib.sha256()
    return _load_pdparams(Path(path), digest), digest.hexdigest()


def _load_pdparams(path: Path, digest=None) -> dict:
    _check_readable(path)
    try:
        with open(path, "rb") as raw:
            f = _HashingReader(raw, digest) if digest is not None else raw
            obj = _ArrayOnlyUnpickler(f).load()
            while digest is not None and f.read(1 << 20):  # bytes after the pickle's STOP, if any
                pass
    except pickle.UnpicklingError as exc:
        message = _first_line(exc)
        if message.startswith("refused:"):
            raise ConrInputError(f"{path}: {message}") from None
        raise ConrInputError(f"{path}: cannot read it as a Paddle .pdparams file ({message})") from None
    except Exception as exc:  # EOFError, ValueError, ... on a damaged file
        raise ConrInputError(f"{path}: cannot read it as a Paddle .pdparams file ({_first_line(exc)})") from None
    for value in (obj.values() if isinstance(obj, Mapping) else ()):
        if isinstance(value, np.ndarray) and value.dtype.hasobject:
            raise ConrInputError(f"{path}: holds an array of Python objects; only numeric tensors are accepted")
    return obj


def load_paddle_file(path: str | os.PathLike, *, notes: list[str] | None = None):
    """Load a Paddle `.pdparams` (restricted unpickler, no code runs) or a `.safetensors` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors_file(path, notes=notes)
    return _load_pdparams(path)


def load_any(path: str | os.PathLike, *, notes: list[str] | None = None, mmap: bool = False):
    """Read back any file this package writes, by suffix."""
    path = Path(path)
    if path.suffix == ".pdparams":
        return _load_pdparams(path)
    if path.suffix == ".safetensors":
        return load_safetensors_file(path, notes=notes)
    return load_torch_file(path, notes=notes, mmap=mmap)


# ------------------------------------------------------------------------------------------------------- writers
def save_pdparams(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """`paddle.save` of a dict of numpy arrays: `paddle.load` returns Paddle tensors with the same names, and
    `Layer.set_state_dict` accepts it. (Numpy arrays are written as they are, no copy into Paddle tensors.)"""
    paddle = import_paddle()
    paddle.save({k: np.asarray(v) for k, v in state.items()}, str(path), protocol=4)


def save_safetensors(state: Mapping[str, np.ndarray], path: str | os.PathLike, *, naming: str) -> None:
    import safetensors.numpy

    tensors = {k: np.ascontiguousarray(v) for k, v in state.items()}
    safetensors.numpy.save_file(tensors, str(path), metadata={"format": "np", "naming": naming})


def save_torch_file(state: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """`torch.save` of `{name: tensor}` (tensors share memory with the arrays)."""
    torch = import_torch()
    with warnings.catch_warnings():
        # from_numpy warns on read-only arrays (memory-mapped sources); torch.save only reads them
        warnings.simplefilter("ignore", UserWarning)
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    torch.save(tensors, str(path))


def save_state(state: Mapping[str, np.ndarray], path: str | os.PathLike, *, naming: str) -> None:
    """Write `state` in the format given by the suffix of `path` (.pdparams, .safetensors, .pth/.pt)."""
    suffix = Path(path).suffix
    if suffix == ".pdparams":
        save_pdparams(state, path)
    elif suffix == ".safetensors":
        save_safetensors(state, path, naming=naming)
    elif suffix in (".pth", ".pt"):
        save_torch_file(state, path)
    else:
        raise ValueError(f"no writer for {suffix!r}")


# --------------------------------------------------------------------------------------------------------- utils
def bitwise_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and bytes (NaN payloads and -0.0 included): np.array_equal on unsigned-int views."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" and a.dtype.itemsize in (2, 4, 8):
        view = np.dtype(f"u{a.dtype.itemsize}")
        return bool(np.array_equal(a.view(view), b.view(view)))
    return bool(np.array_equal(a, b))



# ------------------------------------------------------------------------------------------------------- folders
def _folder_file(name: str, naming: str) -> str:
    """File name of network `name` in a weights folder of `naming` ("torch": the official name, or "paddle")."""
    if naming == "torch":
        return official_manifest()[name].file
    if naming == "paddle":
        return f"{name}.pdparams"
    raise ValueError(f"naming must be 'torch' or 'paddle', not {naming!r}")


def network_path(folder: str | os.PathLike, name: str, naming: str, *, safetensors: bool = False,
                 needs: str = "weights folder needs all four networks") -> Path:
    """The file of network `name` in `folder` (with `safetensors`, `<network>.safetensors` is accepted too, after
    the usual name); ConrInputError `<file>: missing (<needs>)` when there is none."""
    folder = Path(folder)
    candidates = [folder / _folder_file(name, naming)]
    if safetensors:
        candidates.append(folder / f"{name}.safetensors")
    found = next((p for p in candidates if regular_file_present(p)), None)
    if found is None:
        raise ConrInputError(f"{candidates[0]}: missing ({needs})")
    return found


def _folder_paths(folder: Path, naming: str) -> list[Path]:
    return [folder / _folder_file(name, naming) for name in NETWORK_NAMES]


def network_files(folder: str | os.PathLike, naming: str, *,
                  needs: str = "weights folder needs all four networks") -> list[Path]:
    """The four files of `folder` in `naming` ("torch": the official names, "paddle": `<network>.pdparams`), in
    NETWORK_NAMES order; ConrInputError `<file>: missing (<needs>)` naming the first one that is not there."""
    paths = _folder_paths(Path(folder), naming)
    missing = next((p for p in paths if not regular_file_present(p)), None)
    if missing is not None:
        raise ConrInputError(f"{missing}: missing ({needs})")
    return paths


def holds_networks(folder: str | os.PathLike, naming: str) -> bool:
    """Whether `folder` holds the four files of `naming` (see `network_files`); ConrInputError when one of them
    exists but is not a regular file."""
    return all([regular_file_present(p) for p in _folder_paths(Path(folder), naming)])


def read_network(path: str | os.PathLike, naming: str) -> dict[str, np.ndarray]:
    """The flat state dict of one checkpoint file, read with the safe reader of its `naming` ("torch" or
    "paddle") and unwrapped (containers, `module.` prefix). Errors are one line naming the file."""
    path = Path(path)
    raw = load_torch_file(path) if naming == "torch" else load_paddle_file(path)
    state, _ = unwrap(raw, source=str(path))
    return state


def load_folder(folder: str | os.PathLike, naming: str) -> dict[str, dict[str, np.ndarray]]:
    """{network: state dict} of the four networks of `folder` (official `.pth` files for "torch", `<network>
    .pdparams` for "paddle"), in NETWORK_NAMES order; a missing or unreadable file is a ConrInputError naming it.
    Every file is looked up before the first is read."""
    paths = {name: network_path(folder, name, naming) for name in NETWORK_NAMES}
    return {name: read_network(path, naming) for name, path in paths.items()}


def check_weights_dir(folder: str | os.PathLike) -> list[Path]:
    """The four `<network>.pdparams` files of `folder`, or ConrInputError naming what is missing (and, when the
    folder holds the official `.pth` files instead, the conversion command)."""
    folder = Path(folder)
    if not folder.exists():
        raise ConrInputError(f"{folder}: weights folder not found")
    if not folder.is_dir():
        raise ConrInputError(f"{folder}: --weights must be a folder")
    paths = _folder_paths(folder, "paddle")
    missing = [p for p in paths if not regular_file_present(p)]
    if not missing:
        empty = [p for p in paths if p.stat().st_size == 0]
        if empty:
            raise ConrInputError(f"{empty[0]}: empty weights file")
        return paths
    if holds_networks(folder, "torch") and len(missing) == len(paths):
        raise ConrInputError(
            f"{folder}: holds the official PyTorch .pth files, not Paddle .pdparams; convert them with "
            f"`python -m convert torch2paddle {folder}` and pass --weights {folder / 'paddle'}"
        )
    names = ", ".join(p.name for p in missing)
    raise ConrInputError(f"{missing[0]}: missing (weights folder {folder} needs all four networks; missing: {names})")


def weights_hash(paths: list[Path]) -> str:
    """sha256 over the files' hashes (`<name>:<sha256>` lines, in the given order): the identity of a weight set,
    the key of compiled-graph caches. Pass `check_weights_dir(folder)` for a Paddle weights folder. Each file is read
    once per version in this process (`sha256_file_remembered`)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(f"{Path(path).name}:{sha256_file_remembered(path)}\n".encode())
    return h.hexdigest()


def check_state_fits(own: Mapping[str, tuple[int, ...]], state: Mapping[str, object], what: str, owner: str) -> None:
    """ConrInputError `<what> does not fit <owner>: ...` naming every missing key, unexpected key and shape
    mismatch of `state` against a network's own `{key: shape}`: the strict check both frameworks' loaders share
    (Paddle's `set_state_dict` only warns, torch's `load_state_dict` raises a multi-line RuntimeError)."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {list(state[k].shape)} vs model {list(shape)}"
              for k, shape in own.items() if k in state and tuple(state[k].shape) != tuple(shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {'; '.join(shapes)}")
    if problems:
        raise ConrInputError(f"{what} does not fit {owner}: " + " | ".join(problems))
