"""The sheet inputs of the exported step graphs, computed by the eager Paddle parser: shared by the Paddle Inference
predictor (`conr_engines.inference.predictor`) and the onnxruntime engine (`conr_engines.onnx.runner`)."""
from __future__ import annotations

import numpy as np
import paddle

from conr_paddle.backbone import ResEncUnet
from conr_paddle.model import encode_sheet, sheet_parser

__all__ = ["sheet_graph_inputs"]


def sheet_graph_inputs(parser: ResEncUnet, sheet: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """A float32 sheet (M, 4, S, S) as the exported step graphs take it: the encoder features of the eager parser
    run in float64 and rounded to float32 once (`CoNR.parse_sheet`'s default, deepest first) and the premultiplied
    reference (M, 4, S, S)."""
    sheet = np.ascontiguousarray(sheet, dtype=np.float32)
    rgb, alpha = sheet[:, :3], sheet[:, 3:4]
    with paddle.no_grad():
        features = [f.numpy() for f in encode_sheet(sheet_parser(parser, "float64", paddle.float32),
                                                    paddle.to_tensor(rgb))]
    return features, np.concatenate([alpha * rgb, alpha], axis=1)
