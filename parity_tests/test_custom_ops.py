"""The custom CPU operators of the fast path (conr_engines/inference/csrc/conr_warp.cc) against the eager ops they replace.

`conr_warp` stands for conr_paddle.warp.warp / warp_grouped (grid_sample, bilinear, border, align_corners=True),
`conr_resize` for conr_paddle.warp.resize (bilinear, align_corners=False, align_mode=0) and `conr_fuse` for
conr_paddle.shader.fuse_views, inside exported graphs only. Compiling the library takes ~12 s once per test session
(conftest's `custom_ops`, a session-wide cache folder). Where no C++ compiler exists those tests skip with the
reason, and the fallback (grid_sample, said by the predictor's warp label) is tested by simulating a failed build.
"""
from __future__ import annotations

import numpy as np
import pytest

from conr_common.verification.compare import diff
from conr_common.verification.tolerances import OP_SCALED_FP32, PREDICTOR_RGBA_ATOL

paddle = pytest.importorskip("paddle")


def _scaled(reference, candidate) -> float:
    return diff(reference.numpy(), candidate.numpy()).scaled


WARP_CASES = [
    # (N, C, H, W, flow groups, flow scale in pixels): CoNR's plain and grouped warps, a non-square plane, and
    # flows of several image sizes (border padding: samples clamp to the edge)
    (2, 3, 16, 16, 1, 2.0),
    (4, 16, 32, 32, 4, 3.0),
    (1, 8, 24, 40, 2, 60.0),
    (3, 4, 8, 8, 1, 0.0),
    (2, 32, 20, 70, 1, 4.0),  # more than 8 channels per group: taps stored per plane (the other kernel path)
    (1, 48, 16, 16, 3, 5.0),
]


@pytest.mark.parametrize("n,c,h,w,groups,scale", WARP_CASES)
def test_conr_warp_matches_eager_warp(custom_ops, n, c, h, w, groups, scale):
    from conr_paddle.warp import warp, warp_grouped

    rs = np.random.RandomState(n * 1000 + c * 10 + groups)
    x = paddle.to_tensor(rs.standard_normal((n, c, h, w)).astype(np.float32))
    flow = paddle.to_tensor((rs.standard_normal((n, 2 * groups, h, w)) * scale).astype(np.float32))
    reference = warp(x, flow) if groups == 1 else warp_grouped(x, flow)
    assert _scaled(reference, custom_ops.function(x, flow)) <= OP_SCALED_FP32


def test_conr_warp_zero_flow_is_identity(custom_ops):
    x = paddle.to_tensor(np.random.RandomState(1).standard_normal((2, 5, 33, 17)).astype(np.float32))
    out = custom_ops.function(x, paddle.zeros([2, 2, 33, 17], dtype="float32"))
    # the identity grid lands within float32 rounding of every pixel centre
    assert _scaled(x, out) <= OP_SCALED_FP32


RESIZE_CASES = [
    ((4, 6, 8, 8), (16, 16)),  # CoNR's x2 upsampling between shader levels
    ((2, 4, 8, 8), (32, 32)),  # x4 (a mask straight to full size)
    ((1, 4, 64, 64), (2, 2)),  # the reference down to the first level (1/32)
    ((1, 3, 7, 10), (15, 4)),  # non-integer ratios both ways
]


@pytest.mark.parametrize("shape,size", RESIZE_CASES)
def test_conr_resize_matches_eager_resize(custom_ops, shape, size):
    from conr_paddle.warp import resize

    x = paddle.to_tensor(np.random.RandomState(sum(shape)).standard_normal(shape).astype(np.float32))
    out = custom_ops.resize(x, size[0], size[1])
    assert list(out.shape) == list(shape[:2]) + list(size)
    assert _scaled(resize(x, size), out) <= OP_SCALED_FP32


@pytest.mark.parametrize("b,m,k,h,w", [(1, 4, 6, 8, 8), (2, 3, 66, 16, 12), (1, 1, 2, 5, 5)])
def test_conr_fuse_matches_eager_fusion(custom_ops, b, m, k, h, w):
    from conr_paddle.shader import fuse_views, fusion_weights

    rs = np.random.RandomState(b * 100 + m * 10 + k)
    # masks as the shader makes them (sigmoid outputs in (0, 1)), plus large logits-like values for the softmax
    mask = paddle.to_tensor(np.concatenate([rs.rand(b * m, k - 1, h, w), rs.standard_normal((b * m, 1, h, w)) * 20],
                                           axis=1).astype(np.float32))
    flow = paddle.to_tensor(rs.standard_normal((b * m, 2, h, w)).astype(np.float32))
    wref = paddle.to_tensor(rs.rand(b * m, 4, h, w).astype(np.float32))
    message = paddle.to_tensor(rs.standard_normal((b * m, k - 2, h, w)).astype(np.float32))
    expected = fuse_views(mask, flow, wref, message, m)
    got = custom_ops.fuse(fusion_weights(mask, m).reshape(mask.shape), flow, wref, message, m)
    assert len(got) == 3
    for e, g in zip(expected, got):
        assert list(e.shape) == list(g.shape)
        assert _scaled(e, g) <= OP_SCALED_FP32


def test_conr_warp_rejects_mismatched_flow(custom_ops):
    x = paddle.zeros([1, 6, 8, 8], dtype="float32")
    with pytest.raises(Exception, match="flow"):
        custom_ops.function(x, paddle.zeros([1, 3, 8, 8], dtype="float32"))  # odd channel count
    with pytest.raises(Exception, match="groups"):
        custom_ops.function(x, paddle.zeros([1, 8, 8, 8], dtype="float32"))  # 6 channels in 4 groups


def test_failed_build_falls_back_to_grid_sample(tmp_path, monkeypatch):
    """No compiler: load_warp_op reports why instead of raising, and the exporter keeps grid_sample."""
    from conr_engines.inference import ext

    _simulate_no_compiler(monkeypatch)
    op = ext.load_warp_op(tmp_path)
    assert not op.available and op.function is None and op.resize is None and op.fuse is None
    assert "no C++ compiler" in op.reason


def _simulate_no_compiler(monkeypatch) -> None:
    """What a machine without a C++ compiler looks like to conr_engines.inference.ext: $CXX names nothing installed and the
    build raises; a fresh build key, so the library this process may already have registered is not reused."""
    import paddle.utils.cpp_extension as cpp_extension

    from conr_engines.inference import ext

    def no_compiler(**kwargs):
        raise OSError("no C++ compiler")

    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(ext, "_build_key", lambda: "no-compiler-test")


def test_find_cxx_compiler_follows_cxx(monkeypatch):
    """The skip decision of conftest's `custom_ops`: None exactly where the named compiler is not installed."""
    import sys

    from conr_engines.inference.ext import find_cxx_compiler

    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert find_cxx_compiler() is None
    monkeypatch.setenv("CXX", f"{sys.executable} -O")  # any installed program, with flags, as $CXX may carry
    assert find_cxx_compiler() == sys.executable


@pytest.mark.slow  # predictor exports
def test_predictor_without_compiler_renders_with_grid_sample(monkeypatch, paddle_model, graph_cache, weights_label):
    """The documented fallback: where the operators cannot be built, PredictorRunner (custom_warp left on) exports
    with grid_sample, its warp label and meta.json say so, the reason is kept, and its frame is the eager model's.
    The session cache, not a private one: the simulated build has its own key (`_simulate_no_compiler`), so the
    session's built operators are not found, and the graph key holds the warp, so the fallback's graphs are the
    grid_sample ones test_predictor_with_and_without_custom_ops_agree compares (exported once, by whichever runs
    first: the same 128 px / 2 view graph, not a third official-size export into a private folder)."""
    from conr_engines.inference.ext import find_cxx_compiler
    from conr_engines.inference.predictor import PredictorRunner

    _simulate_no_compiler(monkeypatch)
    assert find_cxx_compiler() is None
    model = paddle_model  # the session's (nothing to build); the fallback does not depend on the weights
    runner = PredictorRunner(model, weights_label, size=128, views=2, batch=1, cache_dir=graph_cache)
    assert runner.warp_op is not None and not runner.warp_op.available
    assert "no C++ compiler" in runner.warp_op.reason
    assert runner.warp == runner.warp_kind == "grid_sample" and runner.meta["warp"] == "grid_sample"
    rs = np.random.RandomState(1)
    sheet = rs.rand(2, 4, 128, 128).astype(np.float32)
    xyz = rs.rand(1, 3, 128, 128).astype(np.float32)
    alpha = (rs.rand(1, 1, 128, 128) > 0.3).astype(np.float32)
    out = runner.render(runner.parse_sheet(sheet), xyz, alpha)
    with paddle.no_grad():
        eager = model.render(model.parse_sheet(paddle.to_tensor(sheet)), paddle.to_tensor(xyz),
                             paddle.to_tensor(alpha)).numpy()
    assert out.shape == (1, 4, 128, 128) and np.isfinite(out).all()
    assert np.abs(out - eager).max() <= PREDICTOR_RGBA_ATOL


@pytest.mark.slow  # predictor exports
def test_predictor_with_and_without_custom_ops_agree(custom_ops, graph_cache, paddle_model, weights_label):
    """The step graph exported with conr_warp/conr_resize and with grid_sample/matmul resizes, side by side (the
    session's seeded model and cache: the graphs test_predictor_parity.py renders and the grid_sample one the
    no-compiler fallback above uses, exported once)."""
    from conr_engines.inference.predictor import PredictorRunner

    model = paddle_model
    custom = PredictorRunner(model, weights_label, size=128, views=2, batch=1, cache_dir=graph_cache)
    plain = PredictorRunner(model, weights_label, size=128, views=2, batch=1, cache_dir=graph_cache, custom_warp=False)
    assert custom.warp.startswith("conr_warp-") and custom.meta["warp"] == custom.warp
    assert plain.warp == "grid_sample" and plain.folder != custom.folder
    rs = np.random.RandomState(0)
    sheet = rs.rand(2, 4, 128, 128).astype(np.float32)
    xyz = rs.rand(1, 3, 128, 128).astype(np.float32)
    alpha = (rs.rand(1, 1, 128, 128) > 0.3).astype(np.float32)
    a = custom.render(custom.parse_sheet(sheet), xyz, alpha)
    b = plain.render(plain.parse_sheet(sheet), xyz, alpha)
    assert np.abs(a - b).max() <= PREDICTOR_RGBA_ATOL


@pytest.mark.slow  # loads the library in a child process
def test_conr_warp_nan_flow_gives_nan_not_a_crash(custom_ops, graph_cache):
    """A NaN in the flow (NaN weights upstream) used to become a wild index in the kernel: exit 139. Run in a child
    process so a crash fails this test instead of killing the suite; NaN must come out where the flow is NaN (as
    grid_sample's arithmetic propagates it) and every other pixel must be the eager warp's. The child loads the
    session's build (`graph_cache/ops`) instead of compiling again."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import numpy as np, paddle
        from conr_engines.inference.ext import load_warp_op
        from conr_paddle.warp import warp
        op = load_warp_op({str(graph_cache)!r})
        assert op.available, op.reason
        rs = np.random.RandomState(0)
        x = rs.standard_normal((1, 3, 16, 16)).astype(np.float32)
        flow = (rs.standard_normal((1, 2, 16, 16)) * 3).astype(np.float32)
        flow[0, 0, 5, 7] = np.nan
        flow[0, 1, 9, 2] = np.nan
        flow[0, 0, 12, 12] = np.inf
        out = op.function(paddle.to_tensor(x), paddle.to_tensor(flow)).numpy()
        bad = np.zeros((16, 16), bool); bad[5, 7] = bad[9, 2] = True
        assert np.isnan(out[0][:, bad]).all(), "NaN flow must give NaN"
        good = ~bad
        ref = warp(paddle.to_tensor(x), paddle.to_tensor(np.nan_to_num(flow, nan=0.0))).numpy()
        assert np.isfinite(out[0][:, good]).all()
        assert np.abs(out[0][:, good] - ref[0][:, good]).max() < 1e-4
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, (proc.returncode, proc.stderr[-2000:])
