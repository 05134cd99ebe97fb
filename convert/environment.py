"""What can change float32 results between two machines, for the parity report (`python -m convert verify`):
package versions, CPU and its SIMD features, GPU, threads, oneDNN flags; and TF32 pinned off on both sides.
"""
from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator

import numpy as np

from conr_common.platform.cpu import cpu_model, simd_flags
from conr_common.platform.versions import dist_version

__all__ = ["environment", "numerics_pinned"]

# `import paddle` sets OMP_NUM_THREADS=1 when it is unset (paddle/base/__init__.py), which makes eager Paddle run on
# one thread: keep what the user's environment said, read when this module is imported (the CLI imports it while it
# builds its parser: before paddle, and before `prepare_math_libraries` fills in the usable cores where the user set
# nothing), and report both.
_OMP_BEFORE_PADDLE = (os.environ.get("OMP_NUM_THREADS") if "paddle" not in sys.modules else "unknown (paddle imported first)")


def _paddle_flag(paddle, name: str):
    try:
        return paddle.get_flags([name])[name]
    except Exception:  # a flag that this build does not register (CUDA-only flags on a CPU wheel)
        return None


def _paddle_tf32_off(paddle, stack: contextlib.ExitStack) -> dict:
    """Paddle's cuBLAS/cuDNN TF32 switches off until `stack` closes (CUDA builds only; a CPU wheel has none)."""
    if not paddle.device.is_compiled_with_cuda():
        return {}
    from paddle.base import core

    saved = (core.get_cublas_switch(), core.get_cudnn_switch())
    core.set_cublas_switch(False)  # phi::SetAllowTF32Cublas
    core.set_cudnn_switch(False)  # phi::SetAllowTF32Cudnn
    stack.callback(core.set_cudnn_switch, saved[1])
    stack.callback(core.set_cublas_switch, saved[0])
    return {"paddle.cublas_tf32": bool(core.get_cublas_switch()), "paddle.cudnn_tf32": bool(core.get_cudnn_switch())}


@contextlib.contextmanager
def numerics_pinned(torch, paddle) -> Iterator[dict]:
    """TF32 off on both sides for the duration of a report (it only exists on CUDA: Ampere and later would otherwise
    round float32 matmuls and convolutions to a 10-bit mantissa), through each framework's own setters, and the
    caller's settings restored afterwards; yields what is in force. torch: float32 matmul precision "highest" (which
    also turns `torch.backends.cuda.matmul.allow_tf32` off) and `torch.backends.cudnn.flags(allow_tf32=False)`."""
    cudnn = torch.backends.cudnn
    with contextlib.ExitStack() as stack:
        stack.callback(torch.set_float32_matmul_precision, torch.get_float32_matmul_precision())
        torch.set_float32_matmul_precision("highest")
        stack.enter_context(cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                                        deterministic=cudnn.deterministic, allow_tf32=False))
        pinned = {
            "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "torch.backends.cudnn.allow_tf32": cudnn.allow_tf32,
            "torch.float32_matmul_precision": torch.get_float32_matmul_precision(),
            **_paddle_tf32_off(paddle, stack),
            # NVIDIA_TF32_OVERRIDE=0 also forces it off inside cuBLAS/cuDNN, but only if set before CUDA starts
            "NVIDIA_TF32_OVERRIDE": os.environ.get("NVIDIA_TF32_OVERRIDE"),
        }
        yield pinned


def environment(torch, paddle, device: str) -> dict:
    """Everything that can change float32 results between two machines."""
    from paddle.base import core

    gpu: dict = {"used": device == "gpu", "torch_cuda_available": bool(torch.cuda.is_available()),
                 "paddle_compiled_with_cuda": bool(paddle.device.is_compiled_with_cuda())}
    if torch.cuda.is_available():
        gpu["torch_device_name"] = torch.cuda.get_device_name(0)
        gpu["torch_cuda_version"] = torch.version.cuda
        gpu["torch_cudnn_version"] = torch.backends.cudnn.version()
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        gpu["paddle_device_name"] = paddle.device.cuda.get_device_name(0)
        gpu["paddle_cuda_version"] = paddle.version.cuda()
        gpu["paddle_cudnn_version"] = paddle.version.cudnn()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {
            "torch": torch.__version__,
            "paddlepaddle": paddle.__version__,
            "numpy": np.__version__,
            "opencv-python-headless": dist_version("opencv-python-headless") or dist_version("opencv-python"),
            "conr-paddle": dist_version("conr-paddle"),
        },
        "cpu": {"model": cpu_model(), "logical_cpus": os.cpu_count(), "simd": simd_flags()},
        "gpu": gpu,
        "threads": {
            "torch.get_num_threads": torch.get_num_threads(),
            "torch.get_num_interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS (user environment)": _OMP_BEFORE_PADDLE,
            "OMP_NUM_THREADS (after import paddle)": os.environ.get("OMP_NUM_THREADS"),
            "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
            # MKL's code path on AMD CPUs (conr_common.platform.cpu.math_library_environment)
            "MKL_DEBUG_CPU_TYPE": os.environ.get("MKL_DEBUG_CPU_TYPE"),
        },
        "onednn": {
            "torch.backends.mkldnn.is_available": bool(torch.backends.mkldnn.is_available()),
            "torch.backends.mkldnn.enabled": bool(torch.backends.mkldnn.enabled),
            "paddle.is_compiled_with_onednn": bool(core.is_compiled_with_onednn()),
            # eager (dygraph) Paddle runs oneDNN kernels only when this flag is on
            "paddle FLAGS_use_onednn": _paddle_flag(paddle, "FLAGS_use_onednn"),
            "paddle FLAGS_use_mkldnn": _paddle_flag(paddle, "FLAGS_use_mkldnn"),
        },
    }
