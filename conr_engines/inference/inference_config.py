"""The Paddle Inference configuration of one exported graph: oneDNN on CPU (bfloat16 kernels for "bf16"), GPU 0 with
TensorRT on a CUDA build (untested here: CPU-only machine). Measurements behind these choices: docs/predictor.md."""
from __future__ import annotations

import os
from pathlib import Path

import paddle

from conr_common.platform.quiet import output_to

__all__ = ["inference_config"]


def _tensorrt_available() -> bool:
    """Paddle was built against TensorRT (the compile-time version is (0, 0, 0) otherwise)."""
    from paddle import inference

    try:
        return tuple(inference.get_trt_compile_version()) > (0, 0, 0)
    except (AttributeError, RuntimeError):
        return False


def _gpu_config(cfg, precision: str, batch: int) -> None:
    """GPU 0, TensorRT on the supported subgraphs when Paddle has it; fp16 for a "bf16" request. Untested here
    (CPU-only machine), written to the documented Paddle Inference API."""
    from paddle import inference

    cfg.enable_use_gpu(512, 0)
    if _tensorrt_available():
        trt_precision = inference.PrecisionType.Half if precision == "bf16" else inference.PrecisionType.Float32
        cfg.enable_tensorrt_engine(
            workspace_size=1 << 30,
            max_batch_size=batch,
            min_subgraph_size=3,
            precision_mode=trt_precision,
            use_static=True,
            use_calib_mode=False,
        )


def inference_config(model_file: str, params_file: str, precision: str, threads: int, batch: int):
    """A `paddle.inference.Config` for the graph in `model_file` + `params_file`: IR optimisation on; on a CUDA build
    GPU 0 (`_gpu_config`), else `threads` CPU math threads and oneDNN, with bfloat16 kernels for precision "bf16".
    batch: the graph's fixed batch (TensorRT's max batch size)."""
    from paddle import inference

    cfg = inference.Config(model_file, params_file)
    cfg.disable_glog_info()
    cfg.switch_ir_optim(True)
    # no enable_memory_optim(): with PIR programs it fails at predictor creation (docs/predictor.md)
    if paddle.is_compiled_with_cuda():
        _gpu_config(cfg, precision, batch)
        return cfg
    cfg.set_cpu_math_library_num_threads(threads)
    (getattr(cfg, "enable_onednn", None) or cfg.enable_mkldnn)()
    if precision == "bf16":
        # no set_bfloat16_op(): PIR's placement pass ignores it (conr_engines.inference.bf16_marks). The call logs "Hardware
        # support for BFLOAT16 is enabled" through glog even after disable_glog_info() (analysis_config.cc): not
        # the user's to read (issue 23, finding 19)
        with output_to(Path(os.devnull)):
            (getattr(cfg, "enable_onednn_bfloat16", None) or cfg.enable_mkldnn_bfloat16)()
    return cfg
