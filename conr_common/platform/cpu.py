"""What this machine's CPU is and can do: its model and flags read from /proc/cpuinfo (Linux; elsewhere the answers
are empty), the cores this process may use, whether Paddle can run bfloat16 on it, and the environment Paddle's CPU
math libraries should start with on it (`prepare_math_libraries`)."""
from __future__ import annotations

import os
import platform

__all__ = ["cpu_model", "cpu_vendor", "cpu_flags", "simd_flags", "usable_cores", "bf16_support",
           "math_library_environment", "prepare_math_libraries", "SIMD_FLAGS", "BF16_FLAGS"]

# The SIMD features that decide which kernels both frameworks pick (AVX2/AVX-512/AMX/bf16).
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
# Either one gives oneDNN bfloat16 kernels.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_value(key: str) -> str | None:
    """The value of the first `key : value` line of /proc/cpuinfo (key compared case-insensitively), or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name, else what `platform` knows."""
    return _cpuinfo_value("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_vendor() -> str:
    """The CPU's vendor id ("GenuineIntel", "AuthenticAMD", ...), "" where /proc/cpuinfo is not readable."""
    return _cpuinfo_value("vendor_id") or ""


def cpu_flags() -> frozenset[str]:
    """Every feature flag of the first CPU (empty where /proc/cpuinfo is not readable)."""
    return frozenset((_cpuinfo_value("flags") or "").split())


def simd_flags() -> list[str]:
    """The SIMD_FLAGS this CPU has, in SIMD_FLAGS order."""
    flags = cpu_flags()
    return [f for f in SIMD_FLAGS if f in flags]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's count; the machine's count where the
    affinity cannot be read."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def bf16_support() -> tuple[bool, str]:
    """(supported, reason): oneDNN bfloat16 needs AVX512-BF16 or AMX-BF16 on CPU. Asks Paddle (imported here, the
    only framework this answer is about) first, then this CPU's flags."""
    import paddle

    if paddle.is_compiled_with_cuda():
        return True, "CUDA build: bf16 requests run as TensorRT fp16"
    if paddle.core.supports_bfloat16():
        return True, "CPU supports bfloat16"
    if cpu_flags() & set(BF16_FLAGS):
        return True, "CPU has avx512_bf16/amx_bf16"
    return False, "CPU lacks AVX512-BF16 and AMX (paddle.core.supports_bfloat16() is False)"


def math_library_environment(threads: int | None = None) -> dict[str, str]:
    """The environment Paddle's CPU math libraries should start with, for eager Paddle to use this machine.

    - OMP_NUM_THREADS: `threads`, else the usable cores. `import paddle` sets it to 1 when it is unset
      (paddle/base/__init__.py), and eager Paddle's convolutions then run on one thread.
    - MKL_DEBUG_CPU_TYPE=5 on AMD CPUs with AVX2: the MKL in Paddle's CPU wheel (MKL-ML 2019.0 Update 5, which
      eager Paddle's convolutions call through im2col + sgemm) runs its SSE code path on every CPU that is not
      Intel's; 5 selects its AVX2 path, which Zen CPUs run. MKL 2020.1 and later ignore the variable (and choose well
      on their own); on Intel CPUs it is never set, since it would hold them below AVX-512.
    Measured on a 2-core AMD EPYC (AVX-512): one 3x3 convolution of 256 channels at 64x64, batch 2, 254 -> 114 ms;
    the eager render of the official model at 256 px with 3 views, 17.3 -> 8.4 s. The thread count leaves Paddle's
    results bit-identical; MKL's AVX2 path rounds differently from its SSE path (RGBA within 7e-7), which is the
    difference between an AMD and an Intel machine anyway."""
    env = {"OMP_NUM_THREADS": str(threads or usable_cores())}
    if cpu_vendor() == "AuthenticAMD" and "avx2" in cpu_flags():
        env["MKL_DEBUG_CPU_TYPE"] = "5"
    return env


def prepare_math_libraries(threads: int | None = None) -> dict[str, str]:
    """Set `math_library_environment` in this process's environment where the user has not set those variables
    (theirs win). Must run before paddle is imported: OMP_NUM_THREADS is read then. Returns what is in effect."""
    return {name: os.environ.setdefault(name, value) for name, value in math_library_environment(threads).items()}
