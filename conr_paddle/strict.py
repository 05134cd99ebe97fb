"""A strict state-dict loader: Paddle's `set_state_dict` only warns on a mismatch; this raises, naming everything."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import paddle

from conr_common.weights.checkpoints import check_state_fits
from conr_common.data.checks import check_weight_values


def strict_load(layer: paddle.nn.Layer, state: Mapping[str, object], what: str = "state dict") -> None:
    """Load `state` (numpy arrays or paddle tensors, Paddle names) into `layer`; raise ConrInputError naming every
    missing key, unexpected key and shape or dtype mismatch before anything is assigned."""
    own = layer.state_dict()
    check_state_fits({k: tuple(v.shape) for k, v in own.items()}, state, what, type(layer).__name__)
    arrays = {k: (v.numpy() if isinstance(v, paddle.Tensor) else np.asarray(v)) for k, v in state.items()}
    check_weight_values(arrays, what)  # NaN/Inf or integer tensors: refused before anything is assigned
    for k, p in own.items():
        p.set_value(arrays[k].astype(_np_dtype(p), copy=False))  # a float16 file loads into a float32 model


def _np_dtype(p: paddle.Tensor) -> np.dtype:
    return np.dtype(str(p.dtype).replace("paddle.", ""))
