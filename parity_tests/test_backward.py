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

# The crashing case (docs/facts.md, "GridSampleGrad crash"): the sampled input does not require grad, the grid does.
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


# ------------------------------------------------------------------------------------------- the engine, small
def _small_pair(paddle_extra=None):
    """A conv -> ReLU -> (extra) -> flatten -> linear pair with the torch weights moved to Paddle."""
    import paddle
    import torch

    from portcheck.transfer import transfer_weights

    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Identity(),
                             torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 5))
    pm = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3, padding=1), paddle.nn.ReLU(),
                              paddle_extra if paddle_extra is not None else paddle.nn.Identity(),
                              paddle.nn.Flatten(), paddle.nn.Linear(8 * 6 * 6, 5))
    transfer_weights(tm, pm)
    return tm, pm, np.random.default_rng(0).standard_normal((2, 3, 6, 6))


def test_backward_comparison_of_a_correct_pair_passes():
    from portcheck import compare

    tm, pm, x = _small_pair()
    result = compare(tm, pm, x, backward=True)
    g = result.summary()["gradients"]
    print("small pair backward:", g)
    assert result.passed and g["passed"]
    assert g["parameter_gradients"] == 4 and g["input_gradients"] == 1 and g["layer_gradients"] == 6
    assert g["worst_fp64_scaled"] < 1e-12
    linear = next(r for r in result.gradients["parameters"] if r["torch"] == "4.weight")
    assert linear["transposed"]  # Paddle stores Linear (in, out): its gradient is compared transposed


def _wrong_backward_identity():
    """A Paddle layer whose forward is the identity and whose backward scales the gradient by 1.01."""
    import paddle
    from paddle.autograd import PyLayer

    class WrongGrad(PyLayer):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * 1.01

    class Planted(paddle.nn.Layer):
        def forward(self, x):
            return WrongGrad.apply(x)

    return Planted()


def test_a_backward_only_fault_is_found_at_its_layer():
    """Forward identical, backward wrong: the forward rows pass, the gradients diverge first at the output of the
    layer before it (backward order) and name the planted layer as the suspect; the parameters upstream fail."""
    from portcheck import compare

    tm, pm, x = _small_pair(_wrong_backward_identity())
    result = compare(tm, pm, x, backward=True)
    assert all(r["structure"] for r in result.rows)  # the forward pass cannot see it
    first = result.summary()["gradients"]["first_diverging"]
    print("planted backward fault:", result.failure_line())
    assert first["paddle"] == "1#0" and [s["paddle"] for s in first["suspects"]] == ["2#0"]
    assert not result.passed and "backward order" in result.failure_line()
    bad = result.summary()["gradients"]["parameters_structure_failing"]
    assert bad == ["0.weight", "0.bias"]


# --------------------------------------------------------------------- kinks: a max-pool tie rounded differently
# 2**-51 relative is 2 float64 ulps (CoNR's case: torch's stem ReLU held ...882, ...882, ...886 where Paddle's held
# three equal values), and exactly nothing in float32 (1 + 2**-51 rounds to 1): the float32 passes see a tie on both
# sides, the float64 passes a tie on Paddle's side only.
NUDGE = 2.0**-51
TIE_AT = (0, 0, 3, 4)  # not the first element of the 3x3/stride-2 pool window rows 3-5, cols 3-5


def _tie(dtype=np.float64) -> np.ndarray:
    x = np.ones((1, 1, 8, 8), dtype)  # every 3x3 window a tie
    x[0, 0, 0, 0] = 0.5
    return x


def test_max_pool_backward_routes_a_tie_to_its_first_maximum_in_both_frameworks():
    """The bare ops in float64: on the same input, torch's and Paddle's max-pool backward agree exactly (both route a
    tie to its first maximum in row-major order); when one side's input holds the tie 2 ulps apart, the window's
    gradient lands on another pixel: the float64 gradients differ by the gradient's own size (scaled 1.0), while
    every window's gradient sum is the same. A kink, not a port bug: both one-sided derivatives are valid."""
    import paddle
    import torch

    def torch_grad(x):
        t = torch.from_numpy(x).requires_grad_(True)
        torch.nn.functional.max_pool2d(t, 3, 2, 1).sum().backward()
        return t.grad.numpy()

    def paddle_grad(x):
        p = paddle.to_tensor(x)
        p.stop_gradient = False
        paddle.nn.functional.max_pool2d(p, 3, 2, 1).sum().backward()
        return p.grad.numpy()

    tie, nudged = _tie(), _tie()
    nudged[TIE_AT] *= 1.0 + NUDGE
    assert nudged[TIE_AT] != tie[TIE_AT] and np.abs(nudged - tie).max() <= 4.5e-16
    np.testing.assert_array_equal(torch_grad(tie), paddle_grad(tie))
    np.testing.assert_array_equal(torch_grad(nudged), paddle_grad(nudged))
    moved = torch_grad(nudged) - paddle_grad(tie)
    print("max-pool tie 2 ulps apart, float64 gradient difference:", np.abs(moved).max(), "at", np.argwhere(moved))
    assert np.abs(moved).max() / np.abs(paddle_grad(tie)).max() >= 0.25 and moved[TIE_AT] > 0
    assert moved.sum() == 0.0  # the gradient moved, none was lost or made


def _nudge_layer(wrong_backward: bool = False):
    """Paddle layer: the identity, but one element times 1 + 2**-51 (2 ulps in float64, nothing in float32);
    `wrong_backward`: its backward also scales the gradient by 1.01 (a port bug next to the kink)."""
    import paddle
    from paddle.autograd import PyLayer

    class Nudge(PyLayer):
        @staticmethod
        def forward(ctx, x, factor):
            ctx.save_for_backward(factor)
            return x * factor

        @staticmethod
        def backward(ctx, grad):
            (factor,) = ctx.saved_tensor()
            return grad * factor * (1.01 if wrong_backward else 1.0)

    class Planted(paddle.nn.Layer):
        def forward(self, x):
            f = np.ones(x.shape)
            f[TIE_AT[:2] + (slice(None), slice(None))][TIE_AT[2], TIE_AT[3]] = 1.0 + NUDGE
            factor = paddle.to_tensor(f).astype(x.dtype)
            return Nudge.apply(x, factor)

    return Planted()


def _pool_pair(paddle_extra):
    """conv -> ReLU -> (extra) -> max-pool -> flatten -> linear, a constant input: the pool sees ties."""
    import paddle
    import torch

    from portcheck.transfer import transfer_weights

    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.ReLU(), torch.nn.Identity(),
                             torch.nn.MaxPool2d(3, 2, 1), torch.nn.Flatten(), torch.nn.Linear(16, 3))
    pm = paddle.nn.Sequential(paddle.nn.Conv2D(1, 1, 3, padding=1), paddle.nn.ReLU(), paddle_extra,
                              paddle.nn.MaxPool2D(3, 2, 1), paddle.nn.Flatten(), paddle.nn.Linear(16, 3))
    transfer_weights(tm, pm)
    with torch.no_grad():  # a positive conv: the ReLU passes the ties on
        tm[0].weight.abs_()
        tm[0].bias.fill_(0.1)
    transfer_weights(tm, pm)
    x = np.ones((1, 1, 8, 8))
    return tm, pm, x


def test_a_max_pool_tie_rounded_differently_is_a_kink_not_a_port_bug():
    """The engine, measured: the pool input's float64 gradients differ by the gradient's size, torch's max-pool
    derivative taken at Paddle's forward point reproduces Paddle's gradient, so the row is a kink of MaxPool2d; the
    rows upstream and the input follow it; the parameter gradients agree; the comparison passes and says why."""
    from portcheck import compare
    from portcheck.backward import kink_lines

    tm, pm, x = _pool_pair(_nudge_layer())
    result = compare(tm, pm, x, backward=True)
    g = result.gradients
    (kink,) = g["kinks"]
    print("kink:", kink_lines(g))
    assert kink["op"] == "MaxPool2d" and kink["row"] == "2#0" and kink["fp64_scaled"] > 1e-2
    assert kink["rerouted_fp64_scaled"] <= 1e-12
    rows = {r["paddle"]: r for r in g["layers"] + g["inputs"]}
    assert rows["2#0"]["verdict"] == "kink of MaxPool2d"
    assert {k for k, r in rows.items() if r.get("follows_kink")} >= {"1#0", "input 0"}
    assert result.passed and result.summary()["gradients"]["structure_failing"] == 0, result.failure_line()


def test_a_wrong_backward_beside_a_max_pool_tie_still_fails():
    """Control: the same kink plus a backward (of the layer before the pool) that scales the gradient by 1.01. The
    pool input's row is still a measured kink, and the rows upstream of it are labelled as following it (a limit:
    they cannot localise a second fault there), but parameter gradients are never explained away: the conv weight's
    fails structure and the comparison fails."""
    from portcheck import compare

    tm, pm, x = _pool_pair(_nudge_layer(wrong_backward=True))
    result = compare(tm, pm, x, backward=True)
    g = result.summary()["gradients"]
    print("kink + wrong backward:", result.failure_line())
    assert not result.passed and g["parameters_structure_failing"] == ["0.weight", "0.bias"]
    assert "parameter gradient" in result.failure_line()


# ------------------------------------------------------------------------------- the zoo, train-mode BatchNorm
@pytest.mark.parametrize("name, shape", [("resnet18", (2, 3, 64, 64)), ("mobilenet_v2", (2, 3, 96, 96))])
def test_zoo_backward_with_train_mode_batchnorm(name, shape):
    """torchvision vs paddle.vision with BatchNorm in train mode: every gradient structurally exact and as precise,
    and Paddle's running statistics after the step differ from torch's only by the named conventions. mobilenet_v2
    at 96 px: at 64 px its last blocks normalise 8 values per channel, which no float64 bound calibrated on CoNR
    survives (forward 1.2e-8); paddle.vision's mobilenet_v2 calls an AdaptiveAvgPool2D layer where torchvision calls
    the function, an unpaired forward call (not a gradient)."""
    from parity_tests.zoo import ZOO_BY_NAME, build_pair
    from portcheck import compare

    tm, pm, _ = build_pair(ZOO_BY_NAME[name], 0)
    x = np.random.default_rng(0).standard_normal(shape)
    result = compare(tm, pm, x, train=True, backward=True)
    s, g = result.summary(), result.summary()["gradients"]
    print(f"{name} {shape} train-mode backward:", g, "conventions", s["running_stats_conventions"])
    assert g["passed"], result.failure_line()
    assert g["median_parameter_ratio"] <= 1.5
    assert s["running_stats_failing"] == 0 and s["running_stats_conventions"] == len(result.running_stats) > 0
    assert all(r["verdict"] == "framework convention" for r in result.running_stats)
    assert result.unpaired_paddle == ([] if name == "resnet18" else ["pool2d_avg#0"])


def test_a_momentum_of_the_wrong_convention_is_not_a_convention():
    """Paddle momentum 0.1 (torch's number, the opposite convention): the running statistics fail."""
    import paddle
    import torch

    from portcheck import compare
    from portcheck.transfer import transfer_weights

    torch.manual_seed(0)
    tm = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    pm = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4, momentum=0.1))
    transfer_weights(tm, pm)
    result = compare(tm, pm, np.random.default_rng(0).standard_normal((2, 3, 6, 6)), train=True)
    assert not result.passed and result.summary()["running_stats_conventions"] == 0


# ------------------------------------------------------------------------------------- CoNR at 128 px, 1 view
@pytest.fixture(scope="module")
def conr_inputs(samples):
    from conr_common.data.pipeline import list_pose_files, load_character_sheet, load_udp_pose, sheet_array, udp_arrays

    sheet = sheet_array(load_character_sheet(samples.character_sheet, 128)[:1], np.float32)
    xyz, alpha = udp_arrays([load_udp_pose(list_pose_files(samples.poses, images=False)[0], 128)], np.float32)
    return sheet, xyz, alpha


def _detached_flow_warp(ops):
    """The planted fault: a warp that detaches its flow (the flow stops learning); same forward."""
    import paddle

    class DetachedFlowWarp(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.ops = ops

        def forward(self, x, flow):
            return self.ops.warp(x, flow.detach())

    return DetachedFlowWarp()


@pytest.mark.slow
def test_conr_planted_backward_faults_are_found(conr_inputs):
    """Two faults planted in the Paddle CoNR, judged in one comparison (they touch different rows):
    - `shader.warp` replaced by a warp that detaches its flow (the flow stops learning through the warps): the first
      diverging gradient in backward order is a rescaled flow, and the warp that consumes it is the suspect;
    - the slope of the shader's first PReLU set stop_gradient: its parameter row, and no other PReLU's, has no
      Paddle gradient.
    On the small CoNR (`parity_tests.tiny_conr`: every layer kind and shader level of the official one, 26 M
    parameters instead of 180 M): the four passes of the official networks cost ~150 s and ~10 GB in float64, for
    code paths that do not depend on the width. The same pair without the plants passes first, so what is found is
    the plants. Float32-only passes (truth="none") cannot do this for the official CoNR: torch's own float32
    gradients are more than 1e-3 (scaled) from Paddle's near the output (measured: rgbadecodernet.bottleneck.r0.norm2),
    so the float64 truth is kept."""
    from convert.backward import conr_backward
    from parity_tests.tiny_conr import tiny_pair

    tm, pm = tiny_pair(0)
    clean = conr_backward(tm, pm, conr_inputs)
    assert clean["summary"]["passed"] and clean["summary"]["first_diverging"] is None, clean["summary"]
    pm.shader.warp = _detached_flow_warp(pm.ops)
    name, layer = next((n, m) for n, m in pm.shader.named_sublayers() if type(m).__name__ == "PReLU")
    layer._weight.stop_gradient = True
    g = conr_backward(tm, pm, conr_inputs)
    first = g["summary"]["first_diverging"]
    missing = [r["paddle"] for r in g["parameters"] if "no gradient" in r.get("error", "")]
    print("planted detach:", first, "| planted stop_gradient:", missing)
    assert first["paddle"].startswith("shader.rescale_flow#")
    assert any(s["paddle"].startswith("shader.warp#") for s in first["suspects"])
    assert missing == [f"shader.{name}._weight"]
