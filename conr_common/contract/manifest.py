"""The contract real checkpoints must meet, and the pure functions that check and convert state dicts against it.

`official_manifest()`: every tensor (key, shape, dtype) of the four official files, read from `official_manifest.json`
beside this module (state_dict() of the networks built by the official inference code, megvii-research/CoNR @ 660c4f7;
docs/facts.md, "Checkpoints").

The rest works over `dict[str, numpy.ndarray]` (unwrap, identify, check, convert); no framework object is used here
(`conr_common.weights.checkpoints` turns files into dicts of arrays and back, `conr_common.contract.rename` holds the rename table).
Everything is strict: a key set that differs from the official manifest, a wrong shape or a non-float tensor is an
error that names the tensors; nothing is skipped or filtered silently (what `unwrap` removes is reported in its notes).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import numpy as np

from conr_common.platform.errors import ConrInputError
from conr_common.contract.rename import paddle_to_torch_key, to_paddle_tensor, to_torch_tensor, torch_to_paddle_key, torch_to_paddle_shape

__all__ = [
    "TensorSpec",
    "NetworkManifest",
    "official_manifest",
    "ManifestMismatch",
    "ALLOWED_DTYPES",
    "unwrap",
    "expected_specs",
    "identify_network",
    "check_against_manifest",
    "torch_to_paddle",
    "paddle_to_torch",
    "dtype_name",
]


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class NetworkManifest:
    name: str
    file: str
    num_parameters: int
    tensors: dict[str, TensorSpec]


@cache
def official_manifest() -> dict[str, NetworkManifest]:
    """Network name -> manifest, in the official order (parser, pose encoder, shader, decoder)."""
    raw = json.loads(resources.files("conr_common.contract").joinpath("official_manifest.json").read_text())
    out: dict[str, NetworkManifest] = {}
    for name, comp in raw["components"].items():
        tensors = {k: TensorSpec(tuple(v["shape"]), v["dtype"]) for k, v in comp["tensors"].items()}
        out[name] = NetworkManifest(name, comp["file"], int(comp["num_parameters"]), tensors)
    return out


# float32 is what the official files hold; the other float types convert unchanged but are reported.
ALLOWED_DTYPES = ("float32", "float16", "bfloat16", "float64")

# Containers that training scripts wrap a state dict in, tried in this order.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "model")
# Paddle's `Layer.state_dict()` saved with `paddle.save` carries this name table; it holds no tensor.
PADDLE_NAME_TABLE = "StructuredToParameterName@@"

MIN_OVERLAP = 0.5  # Jaccard overlap of key sets below which a file is "no known network"
_LIST_FIRST = 5


def dtype_name(value) -> str:
    """'float32', 'bfloat16', ... of an ndarray or a TensorSpec."""
    if isinstance(value, TensorSpec):
        return value.dtype
    return np.dtype(value.dtype).name


def _is_tensor(value) -> bool:
    return isinstance(value, (np.ndarray, TensorSpec))


def _shape(value) -> tuple[int, ...]:
    return tuple(int(d) for d in value.shape)


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_FIRST])
    more = len(items) - _LIST_FIRST
    return shown + (f", ... and {more} more" if more > 0 else "")


def unwrap(state, *, source: str = "checkpoint") -> tuple[dict, list[str]]:
    """The flat `{name: array}` inside a loaded checkpoint, and notes saying what was unwrapped or dropped.

    Handles `{"state_dict": ...}` / `{"model_state_dict": ...}` / `{"model": ...}` containers (other entries of
    the container, such as an epoch counter, are named in a note), a `module.` prefix on every key
    (DataParallel) and Paddle's name table. Anything else that is not a tensor is an error.
    """
    notes: list[str] = []
    if not isinstance(state, Mapping):
        raise ConrInputError(f"{source}: holds a {type(state).__name__}, not a dict of tensors")
    for _ in range(4):  # containers nest at most a few levels deep in practice
        if all(_is_tensor(v) for k, v in state.items() if k != PADDLE_NAME_TABLE):
            break
        key = next((k for k in CONTAINER_KEYS if isinstance(state.get(k), Mapping)), None)
        if key is None:
            bad = [f"{k} ({type(v).__name__})" for k, v in state.items() if not _is_tensor(v)]
            raise ConrInputError(f"{source}: not a state dict of tensors: {len(bad)} entries are not tensors ({_names(bad)})")
        others = [str(k) for k in state if k != key]
        notes.append(f"unwrapped the {key!r} container" + (f" (ignored entries: {_names(others)})" if others else ""))
        state = state[key]
    if PADDLE_NAME_TABLE in state:
        state = {k: v for k, v in state.items() if k != PADDLE_NAME_TABLE}
        notes.append(f"dropped Paddle's parameter name table {PADDLE_NAME_TABLE!r}")
    bad_keys = [repr(k) for k in state if not isinstance(k, str)]
    if bad_keys:
        raise ConrInputError(f"{source}: tensor names must be strings, found {_names(bad_keys)}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
        notes.append("removed the 'module.' prefix of every key (a DataParallel checkpoint)")
    if not state:
        raise ConrInputError(f"{source}: holds no tensor")
    return dict(state), notes


@cache
def _paddle_specs(name: str) -> dict[str, tuple[str, TensorSpec]]:
    """Paddle key -> (torch key, spec in Paddle layout), in the official order."""
    out: dict[str, tuple[str, TensorSpec]] = {}
    for key, spec in official_manifest()[name].tensors.items():
        pkey = torch_to_paddle_key(key, spec.shape)
        out[pkey] = (key, TensorSpec(torch_to_paddle_shape(key, spec.shape), spec.dtype))
    return out


def expected_specs(name: str, naming: str = "torch") -> dict[str, TensorSpec]:
    """The official tensors of network `name`, named and shaped for `naming` ("torch" or "paddle")."""
    if name not in official_manifest():
        raise ConrInputError(f"unknown network {name!r} (known: {', '.join(official_manifest())})")
    if naming == "torch":
        return dict(official_manifest()[name].tensors)
    if naming == "paddle":
        return {k: spec for k, (_, spec) in _paddle_specs(name).items()}
    raise ValueError(f"naming must be 'torch' or 'paddle', not {naming!r}")


def identify_network(keys: Iterable[str], *, naming: str = "torch", source: str = "checkpoint") -> str:
    """The official network whose key set overlaps `keys` most (Jaccard index); an error below MIN_OVERLAP."""
    keys = set(keys) if naming == "torch" else {paddle_to_torch_key(k) for k in keys}
    scores = []
    for name, manifest in official_manifest().items():
        expected = set(manifest.tensors)
        scores.append((len(keys & expected) / max(1, len(keys | expected)), name))
    best, name = max(scores)
    if best < MIN_OVERLAP:
        raise ConrInputError(
            f"{source}: its {len(keys)} tensor names match no official CoNR network "
            f"(closest: {name}, {best:.0%} of names in common)"
        )
    return name


@dataclass
class ManifestMismatch:
    """How a state dict differs from the official manifest of one network."""

    network: str
    naming: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dtype_notes: list[tuple[str, str]] = field(default_factory=list)  # allowed float types other than float32
    dtype_errors: list[tuple[str, str]] = field(default_factory=list)  # non-float tensors

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches or self.dtype_errors)

    def problems(self) -> list[str]:
        """One phrase per kind of problem, the first few names and the count of each."""
        out = []
        if self.missing:
            out.append(f"{len(self.missing)} missing ({_names(self.missing)})")
        if self.unexpected:
            out.append(f"{len(self.unexpected)} unexpected ({_names(self.unexpected)})")
        if self.shape_mismatches:
            shown = [f"{k}: expected {list(e)} found {list(f)}" for k, e, f in self.shape_mismatches]
            out.append(f"{len(shown)} with a wrong shape ({_names(shown)})")
        if self.dtype_errors:
            shown = [f"{k}: {d}" for k, d in self.dtype_errors]
            out.append(f"{len(shown)} not floating point ({_names(shown)})")
        return out

    def dtype_summary(self) -> str | None:
        """A note for allowed dtypes other than float32 (e.g. a float16 checkpoint), or None."""
        if not self.dtype_notes:
            return None
        kinds = sorted({d for _, d in self.dtype_notes})
        return f"{len(self.dtype_notes)} tensors are {'/'.join(kinds)} (official: float32); their dtype is kept"


def check_against_manifest(name: str, state: Mapping, *, naming: str = "torch") -> ManifestMismatch:
    """Compare names, shapes and dtypes of `state` (arrays or TensorSpecs) with the official `name` network."""
    expected = expected_specs(name, naming)
    diff = ManifestMismatch(name, naming)
    diff.missing = [k for k in expected if k not in state]
    diff.unexpected = [k for k in state if k not in expected]
    for key, value in state.items():
        spec = expected.get(key)
        if spec is None:
            continue
        if _shape(value) != tuple(spec.shape):
            diff.shape_mismatches.append((key, tuple(spec.shape), _shape(value)))
        dt = dtype_name(value)
        if dt not in ALLOWED_DTYPES:
            diff.dtype_errors.append((key, dt))
        elif dt != spec.dtype:
            diff.dtype_notes.append((key, dt))
    return diff


def _require(diff: ManifestMismatch, source: str) -> None:
    if not diff.ok:
        raise ConrInputError(
            f"{source}: does not match the official {diff.network} checkpoint: " + "; ".join(diff.problems())
        )


def torch_to_paddle(name: str, state: Mapping[str, np.ndarray], *, source: str | None = None) -> dict[str, np.ndarray]:
    """Official-named tensors of network `name` -> Paddle-named ones, in the official order. Strict."""
    _require(check_against_manifest(name, state, naming="torch"), source or name)
    return {
        torch_to_paddle_key(key, spec.shape): to_paddle_tensor(key, state[key])
        for key, spec in expected_specs(name, "torch").items()
    }


def paddle_to_torch(name: str, state: Mapping[str, np.ndarray], *, source: str | None = None) -> dict[str, np.ndarray]:
    """Paddle-named tensors of network `name` -> official (torch) names and layout, in the official order. Strict."""
    _require(check_against_manifest(name, state, naming="paddle"), source or name)
    torch_specs = expected_specs(name, "torch")
    out: dict[str, np.ndarray] = {}
    for pkey, (tkey, _) in _paddle_specs(name).items():
        out[tkey] = to_torch_tensor(tkey, torch_specs[tkey].shape, state[pkey])
    return out
