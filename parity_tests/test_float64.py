"""Float64 on both sides: with float32 rounding out of the way, an exact port leaves differences of ~1e-10 or
less at every stage. This separates a wrong port from float32 rounding. Every op CoNR needs (conv2d,
conv2d_transpose, grid_sample, bilinear interpolate, instance_norm, prelu, softmax, sigmoid) has a float64 CPU
kernel in both frameworks, so the whole model runs in float64."""
from __future__ import annotations

from contextlib import contextmanager

import pytest

from conr_common.verification.compare import diff
from parity_tests.harness import (paired_stages, port_stages, pose_image_input, pose_input, reference_stages,
                                  release_models, sheet_input)
from conr_common.verification.tolerances import FEATURE_SCALED_FP64, RGBA_ATOL_FP64

pytestmark = pytest.mark.slow
SIZE, VIEWS = 128, 2


@contextmanager
def _built_in_float64():
    """Both frameworks create new parameters as float64 inside: a model is built in float64 directly, without the
    float32 model that `.double()` / `.to("float64")` copy from (0.7 GB more at the fixture's peak, per framework).
    The previous defaults come back on exit."""
    import paddle
    import torch

    before = torch.get_default_dtype(), paddle.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    paddle.set_default_dtype("float64")
    try:
        yield
    finally:
        torch.set_default_dtype(before[0])
        paddle.set_default_dtype(before[1])


def _check_float64(model, framework: str) -> None:
    assert {str(t.dtype) for t in model.state_dict().values()} == {f"{framework}.float64"}


@pytest.fixture(scope="module")
def outputs64(weights_dir, samples):
    """Every stage (`reference_stages` / `port_stages`) and the end-to-end RGBA of each side in float64, one side at
    a time: the float64 torch reference is built in float64 (`_built_in_float64`, declared by `unloaded` and filled
    by the strict loader from the session's official-format files), run, and dropped before the float64 Paddle port
    is built and run on the reference's upstream outputs. One float64 model (1.4 GB) is resident at a time besides
    the session's pair (the float32 states, 0.7 GB, are read for each load and dropped with it)."""
    import paddle
    import torch

    from conr_common.contract.manifest import torch_to_paddle
    from conr_common.weights.checkpoints import load_folder
    from conr_paddle.model import load_networks, unloaded
    from conr_torch_ref.model import load_networks as load_torch_networks
    from conr_torch_ref.model import unloaded as torch_unloaded

    sheet = sheet_input(samples, SIZE, VIEWS, "float64")
    xyz, alpha, _ = pose_input(samples, SIZE, 1, "float64")
    pose_rgb = pose_image_input(samples, SIZE, "float64")
    with _built_in_float64():
        tm = torch_unloaded()
    # .double(): a no-op on float64 parameters, kept as the statement of what every parameter and buffer must be
    tm = load_torch_networks(tm.double(), load_folder(weights_dir, "torch")).eval()
    _check_float64(tm, "torch")
    reference, fed = reference_stages(tm, sheet, xyz, alpha, pose_rgb)
    with torch.no_grad():
        ref_rgba = tm.render(tm.parse_sheet(torch.from_numpy(sheet)), torch.from_numpy(xyz),
                             torch.from_numpy(alpha)).numpy()
    del tm
    release_models()
    with _built_in_float64():
        pm = unloaded()
    pm.to(dtype="float64")  # as .double() above
    load_networks(pm, {n: torch_to_paddle(n, s) for n, s in load_folder(weights_dir, "torch").items()})
    _check_float64(pm, "paddle")
    port = port_stages(pm, sheet, xyz, alpha, pose_rgb, fed)
    with paddle.no_grad():
        rgba = pm.render(pm.parse_sheet(paddle.to_tensor(sheet)), paddle.to_tensor(xyz),
                         paddle.to_tensor(alpha)).numpy()
    del pm
    release_models()  # 1.4 GB of float64 parameters back to the OS, not kept as the process's peak
    return {"stages": paired_stages(reference, port), "rgba": (ref_rgba, rgba)}


def test_float64_every_stage_exact(outputs64):
    report, failures = [], []
    for name, ref, out in outputs64["stages"]:
        assert ref.dtype.name == out.dtype.name == "float64", name
        d = diff(ref, out)
        report.append(f"{name:40s} {d}")
        if d.scaled > FEATURE_SCALED_FP64:
            failures.append(name)
    print("\n" + "\n".join(report))
    assert not failures, "not exact in float64: " + ", ".join(failures) + "\n" + "\n".join(report)


def test_float64_end_to_end_exact(outputs64):
    ref, out = outputs64["rgba"]
    assert ref.dtype.name == out.dtype.name == "float64"
    d = diff(ref, out)
    print(f"\nfloat64 final RGBA {d}")
    assert d.max_abs <= RGBA_ATOL_FP64, str(d)
