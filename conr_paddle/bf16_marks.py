"""Keep chosen sub-networks in float32 inside a bf16 oneDNN graph (Paddle 3.3.1, PIR, CPU).

Paddle's bf16 placement pass (cpu_bfloat16_placement_pass) turns every op with a oneDNN bf16 kernel into bf16 and
ignores `Config.set_bfloat16_op`; it skips an op whose `use_quantizer` attribute is true. A trace-time
`use_quantizer` is not serialized, but `struct_name` is, so:

1. while tracing (`fp32_regions`), forward hooks on the kept layers record which ops each layer created and tag
   their `struct_name` with TAG; inside a kept layer, `x + y` is traced as `x - (-y)` (subtract is not on the bf16
   list; bit-identical) and a conv with bias as a bias-free conv plus a subtracted bias (conv_bias_fuse_pass would
   otherwise build an unmarked fused conv);
2. after `paddle.jit.save`, `apply_marks(json)` turns each tag into `use_quantizer=true`.

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
import paddle.nn.functional as F

TAG = "#keep_fp32"


def _ops_of_program():
    return paddle.static.default_main_program().global_block().ops


def _conv_fp32(self, x, transpose: bool):
    """The layer's convolution without bias (so no fused conv+bias op), then the bias by subtract (fp32)."""
    if transpose:
        out = F.conv2d_transpose(x, self.weight, None, padding=self._padding, output_padding=self.output_padding,
                                 stride=self._stride, dilation=self._dilation, groups=self._groups,
                                 data_format=self._data_format)
    else:
        out = F.conv2d(x, self.weight, None, stride=self._stride, padding=self._padding, dilation=self._dilation,
                       groups=self._groups, data_format=self._data_format)
    if self.bias is None:
        return out
    return out - (-self.bias.unsqueeze([0, 2, 3]))  # unsqueeze: no bf16 kernel (reshape has one)


@contextlib.contextmanager
def fp32_regions(keep: Iterable[nn.Layer], skip: Iterable[nn.Layer] = ()) -> Iterator[None]:
    """While tracing: every op created inside a layer of `keep` (and not inside a nested layer of `skip`) is tagged
    to stay float32 (see `apply_marks`). No effect in eager mode; with nothing to keep, nothing is patched."""
    keep, skip = list(keep), list(skip)
    if not keep:
        yield
        return
    decisions = {id(layer): True for layer in keep}
    decisions.update({id(layer): False for layer in skip})
    stack: list[tuple[bool, int]] = []
    claimed: set[int] = set()

    def fp32_now() -> bool:
        return bool(stack) and stack[-1][0] and not paddle.in_dynamic_mode()

    def pre(layer, inputs):
        if not paddle.in_dynamic_mode():
            stack.append((decisions[id(layer)], len(_ops_of_program())))

    def post(layer, inputs, outputs):
        if paddle.in_dynamic_mode():
            return
        decision, start = stack.pop()
        ops = _ops_of_program()
        for i in range(start, len(ops)):  # innermost region first: an op belongs to the layer that created it
            if i in claimed:
                continue
            claimed.add(i)
            if decision:
                op = ops[i]
                old = op.attrs().get("struct_name", "") if op.has_attr("struct_name") else ""
                op.set_str_attr("struct_name", f"{old}{TAG}")

    value_cls = paddle.pir.Value
    saved = (value_cls.__add__, nn.Conv2D.forward, nn.Conv2DTranspose.forward)
    add, conv_fwd, deconv_fwd = saved

    def patched_add(x, y):
        if fp32_now() and isinstance(y, value_cls):
            return x - (-y)  # subtract is not on the bf16 list; bit-identical to x + y
        return add(x, y)

    def conv_forward(self, x):
        return _conv_fp32(self, x, False) if fp32_now() else conv_fwd(self, x)

    def deconv_forward(self, x, output_size=None):
        if fp32_now() and output_size is None:
            return _conv_fp32(self, x, True)
        return deconv_fwd(self, x, output_size)

    handles = []
    for layer in keep + skip:
        handles.append(layer.register_forward_pre_hook(pre))
        handles.append(layer.register_forward_post_hook(post))
    value_cls.__add__ = patched_add
    nn.Conv2D.forward = conv_forward
    nn.Conv2DTranspose.forward = deconv_forward
    try:
        yield
    finally:
        value_cls.__add__, nn.Conv2D.forward, nn.Conv2DTranspose.forward = saved
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
