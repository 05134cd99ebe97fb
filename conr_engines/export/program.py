"""A traced Paddle graph saved as its program alone, and its parameters saved apart, once per weight set.

`paddle.jit.save` writes a graph's program (PIR `.json`, a few MB) and every parameter it reads (`.pdiparams`,
~0.4 GB for CoNR's step graph) side by side, so each graph set of one weight set (another size, view count, batch,
precision or warp) wrote the same parameters again. Here the program is saved by the steps `paddle.jit.save` takes
for it in Paddle 3.3 (`paddle/jit/api.py`, `save`: clone the traced program, `normalize_program` on its data inputs
and outputs, `serialize_pir_program`), and the parameters by `save_params`, in the order Paddle Inference reads a
combined parameter file: sorted by the names the program uses (`paddle/static/pir_io.py`, `save_vars_pir`). The bytes
of `save_params` are those `paddle.jit.save` writes; the programs differ only in their `struct_name` attributes
(per-process layer counters), which nothing reads (parity_tests/test_export_trace.py compares both).

A program names its parameters by their eager names (`conv2d_53.w_0`), drawn from a per-process counter (`CoNR` builds
its networks under a name scope of their own, so that every CoNR names them alike); `GraphParams` also records each
one's structured name (its `state_dict` key), so that a model named otherwise still writes the same file.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import paddle
import paddle.nn as nn

__all__ = ["GraphParams", "save_program", "save_params"]


@dataclass(frozen=True)
class GraphParams:
    """The parameters a saved program reads, in the order of its parameter file (by program name).

    names: the program's names of them; keys: the same parameters as `state_dict` keys of the layer the graph was
    traced over (which are the model's: the graph layers hold its sub-networks under their own names); shapes: their
    shapes."""

    names: tuple[str, ...]
    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def to_json(self) -> dict:
        return {"names": list(self.names), "keys": list(self.keys), "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_json(cls, record: object) -> GraphParams:
        """From `to_json`'s dict; ValueError when `record` is not one (a meta.json written by other code)."""
        try:
            params = cls(tuple(map(str, record["names"])), tuple(map(str, record["keys"])),
                         tuple(tuple(int(d) for d in s) for s in record["shapes"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a parameter record: {type(e).__name__}: {e}") from e
        if not len(params.names) == len(params.keys) == len(params.shapes):
            raise ValueError("not a parameter record: names, keys and shapes differ in length")
        return params

    def digest(self) -> str:
        """sha256 of the record: two programs with one digest read the same parameter file."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


def save_program(static: nn.Layer, specs: list, path: Path) -> GraphParams:
    """Save the program of `static` (a layer returned by `paddle.jit.to_static(..., input_spec=specs,
    full_graph=True)`; traced here if it was not yet) to `path` (`.json`), without its parameters, and return which
    parameters it reads, named by the layer's `state_dict` keys (a parameter the layer does not hold, which
    `paddle.jit.save` would not save either, is a ValueError)."""
    with paddle.pir_utils.IrGuard():
        concrete = static.forward.concrete_program
        mapping = paddle.pir.IrMapping()
        program = concrete.main_program.clone(mapping)
        data = {op.attrs()["name"]: op.result(0) for op in program.global_block().ops if op.name() == "pd_op.data"}
        feeds = [data[spec.name] for spec in specs]
        fetches = [mapping.look_up(value) for value in paddle.utils.flatten(concrete.outputs)]
        program = paddle.static.normalize_program(program, feeds, fetches)
        path.parent.mkdir(parents=True, exist_ok=True)
        # arguments as `save_inference_model` passes them: overwrite, not readable, trainable
        paddle.core.serialize_pir_program(program, str(path), True, False, True)
        names = sorted({value.name for value in paddle.static.pir_io.get_pir_parameters(program)[0]})
    state = static.state_dict()
    keys_of = {tensor.name: key for key, tensor in state.items()}
    missing = [name for name in names if name not in keys_of]
    if missing:
        raise ValueError(f"the traced program reads parameters its model does not hold: {missing[:5]}")
    shapes = {tensor.name: tuple(tensor.shape) for tensor in state.values()}
    return GraphParams(tuple(names), tuple(keys_of[n] for n in names), tuple(shapes[n] for n in names))


def save_params(state: dict, params: GraphParams, path: Path) -> None:
    """Write the parameter file of `params` to `path` from `state` (a `state_dict` of the model the graph was traced
    over, in this process), as `paddle.jit.save` would: one combined file, in the program's name order. A parameter
    `state` lacks or holds in another shape is a ValueError: the file would load into the wrong tensors."""
    tensors = []
    for key, shape in zip(params.keys, params.shapes):
        if key not in state or tuple(state[key].shape) != shape:
            found = tuple(state[key].shape) if key in state else "nothing"
            raise ValueError(f"parameter {key}: the graph reads shape {shape}, the model holds {found}")
        tensors.append(state[key].value().get_tensor())
    path.parent.mkdir(parents=True, exist_ok=True)
    # (tensors, names, path, overwrite, save as fp16, to memory): the call `save_vars_pir` makes
    paddle.base.core.save_combine_func(tensors, list(params.names), str(path), True, False, False)
