"""Bad model inputs get a clear one-line message before any compute (both frameworks share the checks)."""
from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch

from conr_common.platform.errors import ConrInputError


def _frameworks(torch_model, paddle_model):
    return [(torch_model, torch.from_numpy), (paddle_model, paddle.to_tensor)]


@pytest.mark.parametrize("side", [0, 1])
@pytest.mark.parametrize(
    "sheet,needle",
    [
        (np.zeros((2, 4, 100, 100), np.float32), "multiple of 128"),
        (np.zeros((2, 4, 192, 192), np.float32), "multiple of 128"),
        (np.zeros((0, 4, 128, 128), np.float32), "zero views"),
        (np.zeros((2, 3, 128, 128), np.float32), "expected (4, S, S)"),
        (np.zeros((1, 4, 128, 256), np.float32), "square"),
    ],
)
def test_bad_sheet(torch_model, paddle_model, side, sheet, needle):
    model, T = _frameworks(torch_model, paddle_model)[side]
    with pytest.raises(ConrInputError, match=None) as err:
        model.parse_sheet(T(sheet))
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("side", [0, 1])
def test_mismatched_view_sizes(torch_model, paddle_model, side):
    model, T = _frameworks(torch_model, paddle_model)[side]
    views = [T(np.zeros((4, 128, 128), np.float32)), T(np.zeros((4, 256, 256), np.float32))]
    with pytest.raises(ConrInputError) as err:
        model.parse_sheet(views)
    assert "view 1" in str(err.value) and "differs" in str(err.value)


@pytest.mark.parametrize("side", [0, 1])
def test_pose_size_must_match_sheet(torch_model, paddle_model, side, monkeypatch):
    model, T = _frameworks(torch_model, paddle_model)[side]
    from types import SimpleNamespace

    sheet = SimpleNamespace(reference=T(np.zeros((1, 4, 128, 128), np.float32)), features=[])
    # compute must not start: the encoder is replaced by a tripwire
    monkeypatch.setattr(model, "encode_target", lambda *a: pytest.fail("computed before checking"))
    with pytest.raises(ConrInputError) as err:
        model.render(sheet, T(np.zeros((1, 3, 256, 256), np.float32)), T(np.zeros((1, 1, 256, 256), np.float32)))
    assert "target pose xyz" in str(err.value)
