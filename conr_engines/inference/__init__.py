"""Paddle Inference: graph export with its operators, compiled custom operators (csrc/), bf16 marks, the predictor."""
