"""The onnxruntime column of `python -m convert verify --onnx DIR`: a referee that runs neither framework's kernels.

Each side runs end to end on the same float32 inputs, with its own sheet features: onnxruntime runs DIR's sheet
graph then its step graph; torch fp32 and eager Paddle (its float64 sheet parse) their own models; the float64
truth (the torch reference in float64) when verify runs it. Every exported output is compared: the five sheet
features and the reference, the fused message of every shader level (message0..message5) and the final RGBA.
Figures only: the column does not change verify's pass/fail (the ONNX sheet graph parses in float32, so its
features are expected to sit further from the truth than eager Paddle's float64 parse; the column says by how much).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conr_common.verification.compare import diff
from conr_common.platform.errors import ConrInputError

__all__ = ["read_onnx_dir", "onnx_column", "onnx_verdict_line"]


def read_onnx_dir(folder: Path, size: int, views: int) -> dict:
    """meta.json of an export folder, checked against verify's settings (ConrInputError naming --onnx)."""
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise ConrInputError(f"{meta_path}: not an export-onnx folder ({e})") from e
    for graph in ("sheet", "step"):
        if graph not in meta.get("graphs", {}) or not (folder / f"{graph}.onnx").is_file():
            raise ConrInputError(f"{folder / (graph + '.onnx')}: missing (--onnx needs the sheet and step graphs)")
    wanted = {"size": size, "views": views, "batch": 1}
    for key, value in wanted.items():
        if meta.get(key) != value:
            raise ConrInputError(f"--onnx {folder}: exported with {key} {meta.get(key)}, verify runs {key} {value} "
                                 f"(re-export with --size {size} --views {views} --batch 1)")
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ConrInputError(f"--onnx needs the [onnx] extra ({e}): pip install -e '.[onnx]'") from e
    return meta


def _torch_side(tm, sheet, xyz, alpha, dtype) -> list[np.ndarray]:
    import torch

    T = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))  # noqa: E731
    graphs = torch_onnx_graphs(tm)
    with torch.no_grad():
        sheet_out = graphs["sheet"](T(sheet))
        step_out = graphs["step"](T(xyz), T(alpha), *sheet_out)
    return [t.numpy() for t in (*sheet_out, *step_out)]


def _paddle_side(pm, sheet, xyz, alpha) -> list[np.ndarray]:
    import paddle

    from conr_engines.onnx.graphs import paddle_onnx_graphs

    T = lambda a: paddle.to_tensor(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    step = paddle_onnx_graphs(pm)["step"]
    with paddle.no_grad():
        parsed = pm.parse_sheet(T(sheet))  # the project's eager parse: float64 features
        sheet_out = [*parsed.features, parsed.reference]
        step_out = step(T(xyz), T(alpha), *sheet_out)
    return [t.numpy() for t in (*sheet_out, *step_out)]


def _onnx_side(folder: Path, sheet, xyz, alpha) -> list[np.ndarray]:
    from conr_engines.onnx.runner import make_session

    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    s = make_session(folder / "sheet.onnx")
    names = [o.name for o in s.get_outputs()]
    sheet_out = s.run(names, {"sheet": f32(sheet)})
    del s
    s = make_session(folder / "step.onnx")
    feeds = {"xyz": f32(xyz), "alpha": f32(alpha), **dict(zip(names, sheet_out))}
    step_out = s.run([o.name for o in s.get_outputs()], feeds)
    return [*sheet_out, *step_out]


def _output_names(size: int, views: int) -> list[str]:
    """`graph.output` for every output of the sheet graph then the step graph, in the contract's order (the order
    every side returns them in)."""
    from conr_engines.onnx.export import io_contract

    contract = io_contract(size, views, 1)
    return [f"{graph}.{name}" for graph in ("sheet", "step") for name in contract[graph]["outputs"]]


def onnx_column(folder: Path, meta: dict, tm, pm, sheet, xyz, alpha, use_truth: bool) -> dict:
    """Per output: max abs and scaled error of onnxruntime against torch fp32, eager Paddle and (use_truth) the
    float64 truth, with torch fp32's and eager Paddle's own errors against the truth beside them."""
    from conr_torch_ref.model import float64_copy

    if sheet.shape[0] != meta["views"]:
        raise ConrInputError(f"--onnx {folder}: exported for {meta['views']} views, the sheet has {sheet.shape[0]}")
    sheet, xyz, alpha = (np.asarray(a, dtype=np.float32) for a in (sheet, xyz, alpha))
    names = _output_names(meta["size"], meta["views"])
    onnx = dict(zip(names, _onnx_side(folder, sheet, xyz, alpha), strict=True))
    torch32 = dict(zip(names, _torch_side(tm, sheet, xyz, alpha, np.float32), strict=True))
    paddle32 = dict(zip(names, _paddle_side(pm, sheet, xyz, alpha), strict=True))
    truth = None
    if use_truth:
        tm64 = float64_copy(tm)
        truth = dict(zip(names, _torch_side(tm64, sheet, xyz, alpha, np.float64), strict=True))
        del tm64
    rows = []
    for name, value in onnx.items():
        row = {"name": name, "shape": list(value.shape),
               "vs_torch": diff(torch32[name], value).as_dict(), "vs_paddle": diff(paddle32[name], value).as_dict()}
        if truth is not None:
            row["vs_truth"] = diff(truth[name], value).as_dict()
            row["torch_vs_truth"] = diff(truth[name], torch32[name]).as_dict()
            row["paddle_vs_truth"] = diff(truth[name], paddle32[name]).as_dict()
        rows.append(row)
    return {"folder": str(folder), "framework": meta["framework"], "opset": meta["opset"],
            "truth": truth is not None, "rows": rows}


def onnx_verdict_line(column: dict) -> str:
    rows = {r["name"]: r for r in column["rows"]}
    rgba = rows["step.rgba"]
    sheet_worst = max((r for n, r in rows.items() if n.startswith("sheet.")), key=lambda r: r["vs_torch"]["scaled"])
    line = (f"onnxruntime ({column['framework']} ONNX): RGBA max abs {rgba['vs_torch']['max_abs']:.3e} vs torch, "
            f"{rgba['vs_paddle']['max_abs']:.3e} vs eager Paddle; worst sheet feature {sheet_worst['name']} "
            f"{sheet_worst['vs_torch']['scaled']:.2e} scaled vs torch")
    if column["truth"]:
        line += (f"; against the float64 truth: RGBA {rgba['vs_truth']['max_abs']:.3e} (torch fp32 "
                 f"{rgba['torch_vs_truth']['max_abs']:.3e}, Paddle {rgba['paddle_vs_truth']['max_abs']:.3e}), "
                 f"{sheet_worst['name']} {sheet_worst['vs_truth']['scaled']:.2e} scaled (torch fp32 "
                 f"{sheet_worst['torch_vs_truth']['scaled']:.2e}, Paddle {sheet_worst['paddle_vs_truth']['scaled']:.2e})")
    return line


def torch_onnx_graphs(model) -> dict:
    """The sheet, step (with message0..message5) and pose graph layers of the torch reference `model`, as it
    computes (torch's Softmax over the views axis and its scale-factor resizes are kept: it is the referee, not the
    fast path), with the same names, inputs and outputs as the Paddle ones, so the two ONNX files of one checkpoint
    compare op for op on one runtime."""
    import torch

    import conr_torch_ref.model as torch_model
    from conr_engines.export.graphs import graph_layers

    return graph_layers(model, torch.nn.Module, torch_model, messages=True)
