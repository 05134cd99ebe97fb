"""Op parity in exactly CoNR's configurations, float32 and float64, same numpy inputs on both sides."""
from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch

import conr_paddle.warp as pw
import conr_torch_ref.warp as tw
from conr_common.verification.compare import diff
from conr_common.verification.tolerances import OP_SCALED_FP32, OP_SCALED_FP64

DTYPES = {"float32": OP_SCALED_FP32, "float64": OP_SCALED_FP64}


def both(fn_t, fn_p, *arrays):
    out_t = fn_t(*[torch.from_numpy(a) for a in arrays])
    out_p = fn_p(*[paddle.to_tensor(a) for a in arrays])
    return out_t.detach().numpy(), out_p.numpy()


def check(ref, out, tol, what):
    d = diff(ref, out)
    assert d.scaled <= tol, f"{what}: {d}"
    return d


@pytest.mark.parametrize("dtype", DTYPES)
def test_warp_border_align_corners_true_with_far_flows(dtype, rng):
    x = rng.standard_normal((2, 5, 9, 12)).astype(dtype)
    # flows up to 4 image sizes: most samples land far outside the image and hit the border padding
    flow = (rng.standard_normal((2, 2, 9, 12)) * 40).astype(dtype)
    ref, out = both(tw.warp, pw.warp, x, flow)
    check(ref, out, DTYPES[dtype], "warp")
    # the border really was exercised, and the result equals clamped sampling
    assert np.abs(flow).max() > 24
    zero = np.zeros_like(flow)
    ident_t, ident_p = both(tw.warp, pw.warp, x, zero)
    # zero flow samples the pixel itself, up to the rounding of linspace and of the grid un-normalisation
    # ((g + 1) / 2 * (W - 1)): a few ulps of W, i.e. ~1e-6 in float32 for |x| ~ 3
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(ident_p, x, atol=tol)
    np.testing.assert_allclose(ident_t, x, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grouped_feature_warp(dtype, rng):
    x = rng.standard_normal((2, 64, 8, 8)).astype(dtype)
    flow = (rng.standard_normal((2, 32, 8, 8)) * 6).astype(dtype)  # 16 groups, as CoNR's message passing
    ref, out = both(tw.warp_grouped, pw.warp_grouped, x, flow)
    check(ref, out, DTYPES[dtype], "grouped warp")
    # group g is warped by flow channels (2g, 2g+1) only
    single_t, _ = both(tw.warp, pw.warp, x[:, 4:8], flow[:, 2:4])
    np.testing.assert_array_equal(ref[:, 4:8], single_t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "src,dst",
    [(128, 4), (256, 8), (8, 16), (64, 128), (64, 64)],  # sheet -> level 0 (1/32), masks/messages x2, same size
)
def test_bilinear_resize_by_size(dtype, src, dst, rng):
    x = rng.standard_normal((2, 3, src, src)).astype(dtype)
    ref, out = both(lambda a: tw.resize(a, (dst, dst)), lambda a: pw.resize(a, (dst, dst)), x)
    check(ref, out, DTYPES[dtype], f"resize {src} -> {dst}")


@pytest.mark.xfail(
    strict=False,
    raises=AssertionError,  # only the float64 check below is the known finding; pytest.fail (worse) still fails
    reason="Paddle 3.3 interpolate rounds its source coordinates at float32 precision even on float64 data for a "
    "non-integer ratio (measured scaled error 1.6e-6 on O(1) values, above OP_SCALED_FP64); CoNR resizes by powers "
    "of two only, where both frameworks are float64-exact. Passes (XPASS) the day Paddle computes it in float64.",
)
def test_bilinear_resize_non_integer_ratio_float64_exact(rng):
    """Outside CoNR's configurations: a float64 resize by a non-integer ratio (8x8 -> 13x7) should be as exact as
    the power-of-two cases. Measured finding (Paddle 3.3.1): it is only float32-exact, the expected failure above;
    the float32 bound is checked first with pytest.fail, which the marker (raises=AssertionError) does not
    excuse: a regression beyond float32 rounding fails the suite."""
    x = rng.standard_normal((2, 3, 8, 8))
    ref, out = both(lambda a: tw.resize(a, (13, 7)), lambda a: pw.resize(a, (13, 7)), x)
    d = diff(ref, out)
    if d.scaled > OP_SCALED_FP32:  # beyond even float32 rounding: a real regression, not the known finding
        pytest.fail(f"resize 8x8 -> 13x7 (float64): {d} is beyond the float32 bound {OP_SCALED_FP32}")
    check(ref, out, OP_SCALED_FP64, "resize 8x8 -> 13x7 (float64)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_flow_rescale_by_scale_factor(dtype, rng):
    flow = rng.standard_normal((3, 2, 8, 8)).astype(dtype)
    ref, out = both(lambda a: tw.rescale_flow(a, 16), lambda a: pw.rescale_flow(a, 16), flow)
    assert ref.shape == (3, 2, 16, 16)
    check(ref, out, DTYPES[dtype], "flow rescale x2")
    same_t, same_p = both(lambda a: tw.rescale_flow(a, 8), lambda a: pw.rescale_flow(a, 8), flow)
    np.testing.assert_array_equal(same_t, flow)
    np.testing.assert_array_equal(same_p, flow)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_instance_norm(dtype, rng):
    from conr_paddle.layers import InstanceNorm as PNorm
    from conr_torch_ref.layers import InstanceNorm as TNorm

    c = 6
    x = (rng.standard_normal((2, c, 5, 5)) * 3 + 1).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    tn, pn = TNorm(c).to(getattr(torch, dtype)).eval(), PNorm(c)
    pn.to(dtype=dtype)
    tn.norm.weight.data = torch.from_numpy(w)
    tn.norm.bias.data = torch.from_numpy(b)
    pn.norm.scale.set_value(w)
    pn.norm.bias.set_value(b)
    ref, out = both(tn, pn, x)
    check(ref, out, DTYPES[dtype], "instance norm")


def _copy_params(tlayer, player, rng, dtype, renames=None):
    renames = renames or {}
    tstate = tlayer.state_dict()
    new = {}
    for k, v in tstate.items():
        arr = rng.standard_normal(tuple(v.shape)).astype(dtype) * 0.2
        tstate[k] = torch.from_numpy(arr)
        new[renames.get(k, k)] = arr
    tlayer.load_state_dict(tstate)
    for k, p in player.state_dict().items():
        p.set_value(new[k])


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose_4_2_1(dtype, rng):
    from conr_paddle.layers import deconv as pdeconv
    from conr_torch_ref.layers import deconv as tdeconv

    tl, pl = tdeconv(12, 7, 4, 2, 1).to(getattr(torch, dtype)), pdeconv(12, 7, 4, 2, 1)
    pl.to(dtype=dtype)
    _copy_params(tl, pl, rng, dtype)
    x = rng.standard_normal((2, 12, 6, 6)).astype(dtype)
    ref, out = both(tl, pl, x)
    assert ref.shape == (2, 7, 12, 12)
    check(ref, out, DTYPES[dtype], "ConvTranspose2d(4, 2, 1)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_prelu_per_channel(dtype, rng):
    tl, pl = torch.nn.PReLU(5).to(getattr(torch, dtype)), paddle.nn.PReLU(5)
    pl.to(dtype=dtype)
    _copy_params(tl, pl, rng, dtype, renames={"weight": "_weight"})
    x = rng.standard_normal((2, 5, 4, 4)).astype(dtype)
    ref, out = both(tl, pl, x)
    check(ref, out, DTYPES[dtype], "PReLU(c)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_over_view_axis(dtype, rng):
    x = rng.standard_normal((2, 4, 3, 5, 5)).astype(dtype)  # (B, M views, K, h, w)
    ref, out = both(lambda a: torch.softmax(a, dim=1), lambda a: paddle.nn.functional.softmax(a, axis=1), x)
    check(ref, out, DTYPES[dtype], "softmax over views")
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
