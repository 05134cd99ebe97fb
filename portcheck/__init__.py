"""portcheck: verify any PyTorch -> PaddlePaddle port layer by layer against a float64 truth.

`compare(torch_module, paddle_layer, inputs)` runs both sides in float32 and in float64, records every named
layer call on each side, pairs them (by name after a rename table, by execution order where names differ) and
judges each pair twice: structure (the float64 runs agree) and precision (Paddle's float32 distance to the truth
against torch's own). `assert_ports_match(...)` is the pytest helper; `python -m convert verify-pair` the command.

Framework-neutral: numpy at import time, torch and paddle only inside the functions that need them; imports no
other package of this project (CoNR's `convert verify` is a client of it, not the other way round).
"""
from __future__ import annotations

from portcheck.engine import Comparison, compare
from portcheck.errors import PortInputError
from portcheck.pytest_helper import assert_ports_match

__all__ = ["compare", "Comparison", "assert_ports_match", "PortInputError"]
