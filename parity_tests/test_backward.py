"""Issue 22, backward parity: the grid_sample backward crash avoided on the Paddle warp, portcheck's backward
comparison (gradients of every parameter, every paired layer's output and the inputs, judged against float64),
train-mode BatchNorm's framework conventions, and planted backward faults found at the right layer.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A child that imports Paddle and runs one small backward takes ~5 s; 120 s only catches a hang.
CHILD_TIMEOUT_S = 120

# The crashing case (../shared/CONR_FACTS.md): the sampled input does not require grad, the grid does.
_CHILD = textwrap.dedent("""
    import paddle
    import paddle.nn.functional as F
    from conr_paddle.warp import warp
    paddle.seed(0)
    x = paddle.rand([1, 3, 8, 8])  # features, stop_gradient=True: the case that crashes
    flow = paddle.rand([1, 2, 8, 8]) * 2.0 - 1.0
    flow.stop_gradient = False
    if {bare}:
        grid = (paddle.rand([1, 8, 8, 2]) * 2.0 - 1.0)
        grid.stop_gradient = False
        out, leaf = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True), grid
    else:
        out, leaf = warp(x, flow), flow
    out.sum().backward()
    assert leaf.grad is not None and x.grad is None
    print("backward ran", float(leaf.grad.abs().sum()))
""")


def _run_child(bare: bool) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CHILD.format(bare=bare)], capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_warp_backward_with_a_flow_that_trains_does_not_crash():
    """The Paddle warp's backward, with features that do not require grad and a flow that does, exits 0."""
    child = _run_child(bare=False)
    assert child.returncode == 0, f"exit {child.returncode}: {child.stderr[-2000:]}"
    assert "backward ran" in child.stdout


def test_the_bare_op_is_what_crashes():
    """The same case on bare F.grid_sample crashes the child (so the test above tests the workaround): SIGSEGV in
    Paddle 3.3.1's GridSampleGradKernel. A Paddle build where it no longer crashes skips with what it measured."""
    child = _run_child(bare=True)
    if child.returncode == 0:
        pytest.skip(f"bare grid_sample backward no longer crashes on this Paddle build: {child.stdout.strip()}")
    assert child.returncode == -signal.SIGSEGV, f"exit {child.returncode}: {child.stderr[-2000:]}"


def test_workaround_costs_nothing_without_gradients():
    """Under no_grad, or when the sampled input requires grad itself, the warp gets the very tensor it was given:
    inference is byte-identical and pays no copy."""
    import paddle

    from conr_paddle.warp import sampled_for_backward

    x = paddle.rand([1, 3, 4, 4])
    grid = paddle.rand([1, 4, 4, 2])
    grid.stop_gradient = False
    with paddle.no_grad():
        assert sampled_for_backward(x, grid) is x
    trained = paddle.rand([1, 3, 4, 4])
    trained.stop_gradient = False
    assert sampled_for_backward(trained, grid) is trained
    leaf = sampled_for_backward(x, grid)
    assert leaf is not x and not leaf.stop_gradient
    np.testing.assert_array_equal(leaf.numpy(), x.numpy())
