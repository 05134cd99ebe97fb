"""The Paddle Inference predictor against the eager Paddle model it is exported from, directly (no benchmark in the
loop): the same sheet and poses through `PredictorRunner` and `EagerRunner`, final RGBA compared element-wise.

128 px, 2 sheet views, 2 frames, the He-normal seeded weights; once with the custom operators (`conr_warp`,
`conr_resize`, `conr_fuse`; skipped with the reason where no C++ compiler exists, a failure when one exists and the
build fails: conftest's `custom_ops`), once with the fallback Paddle ops (grid_sample, matmul resizes).
"""
from __future__ import annotations

import numpy as np
import pytest

from conr_common.verification.tolerances import PREDICTOR_RGBA_ATOL
from parity_tests.harness import pose_input, sheet_input

pytestmark = pytest.mark.slow  # two official-size predictor exports (one with the compiled operators)
SIZE, VIEWS, FRAMES = 128, 2, 2


@pytest.mark.parametrize("custom_warp", [True, False], ids=["conr_warp", "grid_sample"])
def test_predictor_matches_eager_rgba(paddle_model, weights_label, samples, graph_cache, request, custom_warp):
    from conr_engines.inference.predictor import PredictorRunner
    from conr_engines.runner import EagerRunner

    if custom_warp:
        # conftest's rule: skip where no C++ compiler exists, fail when one exists and the build fails; the
        # predictor then finds the session's build in the session cache instead of compiling again
        request.getfixturevalue("custom_ops")
    sheet = sheet_input(samples, SIZE, VIEWS)
    xyz, alpha, _ = pose_input(samples, SIZE, FRAMES)
    eager = EagerRunner(paddle_model)
    want = eager.render(eager.parse_sheet(sheet), xyz, alpha)
    predictor = PredictorRunner(paddle_model, weights_label, size=SIZE, views=VIEWS, batch=1, cache_dir=graph_cache,
                                custom_warp=custom_warp)
    assert predictor.warp_kind == ("conr_warp" if custom_warp else "grid_sample"), getattr(predictor.warp_op,
                                                                                        "reason", None)
    got = predictor.render(predictor.parse_sheet(sheet), xyz, alpha)

    assert got.shape == want.shape == (FRAMES, 4, SIZE, SIZE)
    assert float(want[:, 3].std()) > 0.05, "eager render is flat: the comparison would not test anything"
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    assert diff <= PREDICTOR_RGBA_ATOL, f"predictor ({predictor.warp}) vs eager RGBA: max abs {diff:.3g}"
