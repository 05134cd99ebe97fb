"""Float64 on both sides: with float32 rounding out of the way, an exact port leaves differences of ~1e-10 or
less at every stage. This separates a wrong port from float32 rounding. Every op CoNR needs (conv2d,
conv2d_transpose, grid_sample, bilinear interpolate, instance_norm, prelu, softmax, sigmoid) has a float64 CPU
kernel in both frameworks, so the whole model runs in float64."""
from __future__ import annotations

from contextlib import contextmanager

import pytest

from conr_common.verification.compare import diff
from parity_tests.harness import (end_to_end, network_stages, pose_image_input, pose_input, release_models,
                                  sheet_input)
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


@pytest.fixture(scope="module")
def models64(weights_dir):
    """The float64 pair, built in float64 (`_built_in_float64`, declared by `unloaded` and filled by the strict
    loaders) from the session's official-format files. The numpy states are read here and dropped once loaded: the
    module holds the two float64 models (2.9 GB) and nothing else besides the session's pair."""
    from conr_common.contract.manifest import torch_to_paddle
    from conr_common.weights.checkpoints import load_folder
    from conr_paddle.model import load_networks, unloaded
    from conr_torch_ref.model import load_networks as load_torch_networks
    from conr_torch_ref.model import unloaded as torch_unloaded

    with _built_in_float64():
        tm, pm = torch_unloaded(), unloaded()
    states = load_folder(weights_dir, "torch")
    tm = load_torch_networks(tm.double(), states)  # both no-ops on float64 parameters: kept as the
    pm.to(dtype="float64")  # statement of what every parameter and buffer must be
    load_networks(pm, {n: torch_to_paddle(n, s) for n, s in states.items()})
    del states
    release_models()  # the float32 states' 0.7 GB back to the OS before the float64 passes
    assert {str(t.dtype) for t in tm.state_dict().values()} == {"torch.float64"}
    assert {str(t.dtype) for t in pm.state_dict().values()} == {"paddle.float64"}
    yield tm.eval(), pm
    del tm, pm
    release_models()  # 2.9 GB of float64 parameters back to the OS, not kept as the process's peak


def test_float64_every_stage_exact(models64, samples):
    tm, pm = models64
    sheet = sheet_input(samples, SIZE, VIEWS, "float64")
    xyz, alpha, _ = pose_input(samples, SIZE, 1, "float64")
    stages = network_stages(tm, pm, sheet, xyz, alpha, pose_image_input(samples, SIZE, "float64"))
    report, failures = [], []
    for name, ref, out in stages:
        assert ref.dtype.name == out.dtype.name == "float64", name
        d = diff(ref, out)
        report.append(f"{name:40s} {d}")
        if d.scaled > FEATURE_SCALED_FP64:
            failures.append(name)
    print("\n" + "\n".join(report))
    assert not failures, "not exact in float64: " + ", ".join(failures) + "\n" + "\n".join(report)


def test_float64_end_to_end_exact(models64, samples):
    tm, pm = models64
    sheet = sheet_input(samples, SIZE, VIEWS, "float64")
    xyz, alpha, _ = pose_input(samples, SIZE, 1, "float64")
    ref, out = end_to_end(tm, pm, sheet, xyz, alpha)
    d = diff(ref, out)
    print(f"\nfloat64 final RGBA {d}")
    assert d.max_abs <= RGBA_ATOL_FP64, str(d)
