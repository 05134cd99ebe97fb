"""Keep chosen sub-networks in float32 inside a bf16 oneDNN graph (Paddle 3.3.1, PIR, CPU).

Paddle's bf16 placement pass (cpu_bfloat16_placement_pass) turns every op with a oneDNN bf16 kernel into bf16 and
ignores `Config.set_bfloat16_op`; it skips an op whose `use_quantizer` attribute is true. A trace-time
`use_quantizer` is not serialized, but `struct_name` is, so:

1. the kept layers are built with the float32-region ops of `conr_engines.inference.ops.export_ops`: their `x + y` is
   `x - (-y)` (subtract is not on the bf16 list; bit-identical) and a conv with bias is a bias-free conv plus a
   subtracted bias (conv_bias_fuse_pass would otherwise build an unmarked fused conv);
2. while tracing (`fp32_regions`), forward hooks on the kept layers record which ops each layer created and tag
   their `struct_name` with TAG;
3. after `paddle.jit.save`, `apply_marks(json)` turns each tag into `use_quantizer=true`.

Marks hold on conv2d / conv2d_transpose (bias-free), prelu, relu, sigmoid, softmax, multiply, matmul, slice; they are
reset on add, concat and reshape (their oneDNN ops declare use_quantizer), so a kept region still has its concats in
bf16 (which is why keeping every layer fp32 reached only 59-64 dB against the float64 truth, not the fp32 graph's
114-127 dB). Neighbours get quantize/dequantize reorders. Measured choice of regions: docs/bf16_bisect.md.
Nothing here acts in eager mode, and fp32 exports do not enter `fp32_regions` with any layer.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterable, Iterator

import paddle
import paddle.nn as nn

TAG = "#keep_fp32"


def _ops_of_program():
    return paddle.static.default_main_program().global_block().ops


class _Tagger:
    """Forward hooks that tag the ops each kept layer creates while tracing (innermost layer first)."""

    def __init__(self, keep: list[nn.Layer], skip: list[nn.Layer]) -> None:
        self.decisions = {id(layer): True for layer in keep}
        self.decisions.update({id(layer): False for layer in skip})
        self.stack: list[tuple[bool, int]] = []
        self.claimed: set[int] = set()

    def pre(self, layer, inputs):
        if not paddle.in_dynamic_mode():
            self.stack.append((self.decisions[id(layer)], len(_ops_of_program())))

    def post(self, layer, inputs, outputs):
        if paddle.in_dynamic_mode():
            return
        decision, start = self.stack.pop()
        ops = _ops_of_program()
        for i in range(start, len(ops)):  # innermost region first: an op belongs to the layer that created it
            if i in self.claimed:
                continue
            self.claimed.add(i)
            if decision:
                op = ops[i]
                old = op.attrs().get("struct_name", "") if op.has_attr("struct_name") else ""
                op.set_str_attr("struct_name", f"{old}{TAG}")


@contextlib.contextmanager
def fp32_regions(keep: Iterable[nn.Layer], skip: Iterable[nn.Layer] = ()) -> Iterator[None]:
    """While tracing: every op created inside a layer of `keep` (and not inside a nested layer of `skip`) is tagged
    to stay float32 (see `apply_marks`). The kept layers must be built with the float32-region ops
    (`conr_engines.inference.ops.export_ops`: no add, no fused conv+bias). No effect in eager mode; hooks are removed
    on exit."""
    keep, skip = list(keep), list(skip)
    tagger = _Tagger(keep, skip)
    handles = []
    for layer in keep + skip:
        handles.append(layer.register_forward_pre_hook(tagger.pre))
        handles.append(layer.register_forward_post_hook(tagger.post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _walk_ops(o, res):
    if isinstance(o, dict):
        if isinstance(o.get("#"), str) and "I" in o and "O" in o:
            res.append(o)
        for v in o.values():
            _walk_ops(v, res)
    elif isinstance(o, list):
        for v in o:
            _walk_ops(v, res)
    return res


def apply_marks(json_path: str | Path) -> int:
    """Turn the tags of a saved PIR program (.json) into use_quantizer=true (struct_name restored); returns how
    many ops were tagged. The placement pass then leaves those ops in float32."""
    path = Path(json_path)
    prog = json.loads(path.read_text())
    count = 0
    for op in _walk_ops(prog, []):
        for a in op.get("A", []) or []:
            if a.get("N") == "struct_name" and TAG in str(a.get("AT", {}).get("D")):
                a["AT"]["D"] = a["AT"]["D"].replace(TAG, "")
                if not any(b.get("N") == "use_quantizer" for b in op["A"]):
                    op["A"].append({"AT": {"#": "0.a_bool", "D": True}, "N": "use_quantizer"})
                count += 1
                break
    if count:
        path.write_text(json.dumps(prog))
    return count
