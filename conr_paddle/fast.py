"""Fast inference: the CoNR step exported as static graphs and run by Paddle Inference (oneDNN on CPU).

`PredictorRunner` offers the three methods of `conr_paddle.runner.EagerRunner` (numpy in, numpy out) and is
built from a loaded eager `CoNR`. Two graphs are exported with `paddle.jit.to_static` + `paddle.jit.save` at
fixed shapes and cached on disk; the sheet is parsed by the eager parser in float64 (`CoNR.parse_sheet`'s default
precision: once per sequence, and the float32 parse carried the largest error of the render). A float64 parser
graph computed wrong features in Paddle 3.3.1's predictor (off by 100% from ResNet layer1 on, with or without
its IR passes), so the runner keeps the eager float32 parser (a quarter of the model) for that:

- `step`: xyz (B, 3, S, S), alpha (B, 1, S, S), the five sheet features (M, C, h, w) and the reference
  (M, 4, S, S) -> premultiplied RGBA (B, 4, S, S): target pose encoder + shader + RGBA decoder, the sheet inputs
  broadcast to the B frames inside the graph exactly as `CoNR.shade` does;
- `pose`: pose image (B, 3, S, S) -> UDP (B, 4, S, S), the parser path.

Custom operators (`conr_paddle.ext`, C++ in `csrc/conr_warp.cc`, compiled on first use): while tracing, the
shader's warps become `conr_warp` (Paddle's CPU grid_sample was a third of the 256 px step), its bilinear
resizes `conr_resize` and the weighted sums of its cross-view fusion `conr_fuse` (`_export_ops`); each is
tested against the eager op it replaces. Without a compiler the graphs keep grid_sample, matmul resizes (below)
and the eager fusion; `self.warp` and meta.json say which.

Export format (measured with paddlepaddle 3.3.1 on CPU): the default PIR format (`.json` + `.pdiparams`); without
the custom operators every bilinear `interpolate` is traced as two matmuls with constant interpolation matrices
(`_interpolate_for_export`, max abs 2e-7 from bilinear_interp); the eager model itself is untouched. Reasons:
- PIR `bilinear_interp` under oneDNN fails at run time (`ConvertPirAttribute2RuntimeAttribute not support
  [pir::ArrayAttribute<pir::DoubleAttribute>]`, raised by the `onednn_placement_pass` placement).
- `config.delete_pass("onednn_placement_pass")` avoids that error, but then only the bias convs that the fuse
  passes rewrite run on oneDNN: conv2d_transpose and bias-free conv2d fall back to the plain CPU kernels (the
  transposed convs alone took 30% of the step); with the matmul resize the placement pass stays on.
- The legacy program format (`FLAGS_enable_pir_api=0` in the environment of export and run) cannot hold CoNR in
  3.3.1: `F.grid_sample` calls the PIR-only `_C_ops.grid_sample` and fails to trace into a legacy program
  ("argument (position 1) must be Value, but got Variable"). `paddle.set_flags({'FLAGS_enable_pir_api': False})`
  at run time does not switch the export format either (still `.json`).
So export runs in-process (no child process) in the default PIR mode; `jit.save` runs under
`paddle.pir_utils.IrGuard` (a no-op there; a process started with `FLAGS_enable_pir_api=0` is untested).
Before the custom warp, a gather-based warp (take_along_axis) traced fine but gave wrong values in the predictor
(max abs ~0.9) and was slower than grid_sample; it was dropped.

Precision: "fp32", or "bf16" = `enable_onednn_bfloat16()`. Measured with 3.3.1 (PIR): the bf16 placement pass
ignores `set_bfloat16_op` and runs every oneDNN op that has a bf16 kernel in bf16 (convs, concat, add, multiply,
slice, softmax, sigmoid, matmul, prelu, ...); instance norm and the custom ops stay float32 behind dequantize
ops. oneDNN's bf16 PReLU kernel returns garbage (~3e38, then NaN: the whole RGBA was NaN), so bf16 graphs are
exported with PReLU written as relu(x) * (1 - w) + x * w (`_export_ops`; fp32 graphs keep the PReLU op, which
is bit-exact there). Against the float64 truth, all-bf16 lost most on the last (full-size) shader levels, so
their decoder blocks stay float32 inside the bf16 step graph (`_bf16_fp32_regions`, `bf16_marks`: ops tagged while
tracing get use_quantizer=true, which the placement pass skips; docs/bf16_bisect.md). bf16 needs a CPU with AVX512-BF16 or AMX (`paddle.core.supports_bfloat16()`); elsewhere
the constructor refuses it.
On a CUDA build the predictor runs on GPU 0, through TensorRT (fp16 for a "bf16" request) when Paddle was built
with it; that path is written to the documented Paddle Inference API but untested here (no GPU).

Cache: `$CONR_PADDLE_CACHE` or `~/.cache/conr_paddle`, one folder per sha256 of (weights hash, size, views,
batch, precision, warp kind with the operator library's build key, Paddle version, export format version); a
folder is complete when its `meta.json` exists (written last, after an atomic rename of the whole folder). meta.json
records the sha256 of every graph file; they are checked before each load, and a folder that fails (a damaged or
replaced file, a corrupt meta.json) is exported again, saying so in one line. A complete cache that cannot be
written is used as it is. Processes sharing the cache (the ranks of `conr_paddle.distributed`) export under a file
lock `<folder>.lock`: one exports, the others wait and load.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from conr_common.errors import ConrInputError
from conr_common.filelock import exclusive_lock
from conr_common.integrity import artifact_hashes, artifact_problem
from conr_common.options import PRECISIONS
from conr_common.quiet import output_to

from . import bf16_marks
from . import shader as shader_module
from . import warp as warp_module
from .ext import WarpOp, load_warp_op
from .layers import norm_statistics
from .model import CoNR, Sheet, encode_sheet, sheet_parser

logger = logging.getLogger("conr_paddle")

__all__ = ["PredictorRunner", "PredictorSheet", "bf16_support", "cache_root", "export_key", "return_freed_memory",
           "EXPORT_FORMAT"]

# Bump when the exported graphs change (wrapper code, input names, passes that shape the saved program).
EXPORT_FORMAT = 8
# bf16 exports keep the decoder blocks of the last shader levels in float32 (`_bf16_fp32_regions`)
BF16_FP32_LEVELS = 3
FEATURE_COUNT = 5


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("CONR_PADDLE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "conr_paddle"


def export_identity(weights_hash: str, size: int, views: int, batch: int, precision: str, warp: str,
                    norm: str = "float64") -> dict:
    """Everything an exported graph depends on: a change in any of these rebuilds it. norm: how the model's
    instance norms compute float32 statistics (`conr_paddle.layers.NORM_STATISTICS`; "float64" unless changed
    with `set_norm_statistics`, as the benchmark does to measure the accurate norm's cost)."""
    return {
        "warp": warp,
        "norm": norm,
        "weights": weights_hash,
        "size": size,
        "views": views,
        "batch": batch,
        "precision": precision,
        "paddle": paddle.__version__,
        "format": EXPORT_FORMAT,
    }


def export_key(weights_hash: str, size: int, views: int, batch: int, precision: str, warp: str,
               norm: str = "float64") -> str:
    blob = json.dumps(export_identity(weights_hash, size, views, batch, precision, warp, norm), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def bf16_support() -> tuple[bool, str]:
    """(supported, reason): oneDNN bfloat16 needs AVX512-BF16 or AMX-BF16 on CPU."""
    if paddle.is_compiled_with_cuda():
        return True, "CUDA build: bf16 requests run as TensorRT fp16"
    if paddle.core.supports_bfloat16():
        return True, "CPU supports bfloat16"
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        pass
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True, "CPU has avx512_bf16/amx_bf16"
    return False, "CPU lacks AVX512-BF16 and AMX (paddle.core.supports_bfloat16() is False)"


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------------------------
# The exported graphs: thin layers over the eager model's own sub-networks and methods, so the static graph is
# the eager code traced, not a re-implementation.


class _PoseGraph(nn.Layer):
    def __init__(self, model: CoNR) -> None:
        super().__init__()
        self.udpparsernet = model.udpparsernet

    def forward(self, rgb):
        return CoNR.parse_pose(self, rgb)


class _StepGraph(nn.Layer):
    def __init__(self, model: CoNR) -> None:
        super().__init__()
        self.target_pose_encoder = model.target_pose_encoder
        self.shader = model.shader
        self.rgbadecodernet = model.rgbadecodernet

    def forward(self, xyz, alpha, feat0, feat1, feat2, feat3, feat4, reference):
        target = CoNR.encode_target(self, xyz, alpha)
        return CoNR.shade(self, Sheet(features=[feat0, feat1, feat2, feat3, feat4], reference=reference), target)


def _bilinear_matrix(n_in: int, n_out: int, ratio: float) -> np.ndarray:
    """(n_in, n_out) weights of 1-D bilinear resampling, half-pixel centres (align_corners=False, align_mode=0),
    the index arithmetic of Paddle's bilinear_interp CPU kernel (source clamped at 0, neighbour at n_in - 1)."""
    m = np.zeros((n_in, n_out), dtype=np.float64)
    for i in range(n_out):
        src = max(ratio * (i + 0.5) - 0.5, 0.0)
        i0 = int(src)
        i1 = min(i0 + 1, n_in - 1)
        lam = np.float32(src - i0)
        m[i0, i] += 1.0 - lam
        m[i1, i] += lam
    return m.astype(np.float32)


def _interpolate_for_export(original, resize_op=None):
    """Bilinear resize for export only: the `conr_resize` operator when it was built, else two matmuls with
    constant interpolation matrices.

    Paddle 3.3.1 cannot run PIR `bilinear_interp` under oneDNN placement (module docstring); a separable
    bilinear resize is exactly x @ Wx then Wy @ x, the same weights up to float rounding (~1e-7). The matmuls
    multiply by mostly-zero matrices (7% of the 256 px step); `conr_resize` reads each input pixel once.
    Anything but NCHW bilinear with align_corners=False / align_mode=0 goes to the original function."""

    def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=False, align_mode=0,
                    data_format="NCHW", **kwargs):
        if mode != "bilinear" or align_corners or align_mode != 0 or data_format != "NCHW" or kwargs:
            return original(x, size=size, scale_factor=scale_factor, mode=mode, align_corners=align_corners,
                            align_mode=align_mode, data_format=data_format, **kwargs)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if size is not None:
            oh, ow = int(size[0]), int(size[1])
            rh, rw = h / oh, w / ow
        else:
            sh, sw = (scale_factor, scale_factor) if np.isscalar(scale_factor) else scale_factor
            oh, ow = int(h * sh), int(w * sw)
            rh, rw = 1.0 / sh, 1.0 / sw
        if (oh, ow) == (h, w):
            return x
        if resize_op is not None:
            return resize_op(x, oh, ow)
        wx = paddle.to_tensor(_bilinear_matrix(w, ow, rw))  # (W, W')
        wy = paddle.to_tensor(_bilinear_matrix(h, oh, rh).T.copy())  # (H', H)
        return paddle.matmul(wy, paddle.matmul(x, wx))  # (N, C, H', W')

    return interpolate


def _prelu_without_prelu_op(self, x):
    """PReLU as relu(x) * (1 - w) + x * w: the same function with no oneDNN prelu op (broken in bf16)."""
    w = self._weight
    w = w.reshape([1, -1, 1, 1]) if w.shape[0] > 1 else w
    return F.relu(x) * (1.0 - w) + x * w


def _repeat_views_one_frame(original):
    """(1, ...) -> (M, ...) as one broadcast: a batch-1 graph needs no unsqueeze/reshape around the expand
    (reshapes of oneDNN's blocked layouts are copies). Other batches go to the original."""

    def repeat(x, m):
        return x.expand([m] + list(x.shape[1:])) if x.shape[0] == 1 else original(x, m)

    return repeat


def _flat_fusion_weights(mask, m):
    """fusion_weights(mask, m) as (B*M, K, h, w); for one frame (B*M == M) the softmax runs over axis 0 directly,
    the same numbers without the reshapes to (B, M, ...) and back."""
    if mask.shape[0] == m:
        return F.softmax(mask, axis=0) * mask
    return shader_module.fusion_weights(mask, m).reshape(mask.shape)


@contextlib.contextmanager
def _export_ops(warp_op: WarpOp | None, precision: str = "fp32") -> Iterator[None]:
    """Swap in the export-only ops while tracing: `conr_warp`, `conr_resize` and `conr_fuse` when they were
    built (else `grid_sample`, matmul resizes and the eager fusion); for bf16, PReLU without the prelu op.

    The shader's Warp/GroupedWarp layers look `warp`/`warp_grouped` up in `conr_paddle.warp` at call time, so
    replacing the module attributes reroutes them; everything is restored on exit (the eager model is untouched)."""
    functional = paddle.nn.functional
    saved = (functional.interpolate, warp_module.warp, warp_module.warp_grouped, shader_module.fuse_views,
             nn.PReLU.forward, shader_module._repeat_views)
    shader_module._repeat_views = _repeat_views_one_frame(saved[5])
    if precision == "bf16":
        nn.PReLU.forward = _prelu_without_prelu_op
    custom = warp_op is not None and warp_op.available
    functional.interpolate = _interpolate_for_export(saved[0], warp_op.resize if custom else None)
    if custom:
        warp_module.warp = warp_module.warp_grouped = warp_op.function  # one op covers both: groups = flow C / 2
        shader_module.fuse_views = lambda mask, flow, wref, message, m: tuple(
            warp_op.fuse(_flat_fusion_weights(mask, m), flow, wref, message, m)
        )
    try:
        yield
    finally:
        (functional.interpolate, warp_module.warp, warp_module.warp_grouped, shader_module.fuse_views,
         nn.PReLU.forward, shader_module._repeat_views) = saved


def _feature_shapes(model: CoNR, views: int, size: int) -> list[list[int]]:
    """Shapes of the parser encoder features for `views` sheet images of `size` (from the architecture config)."""
    cfg = model.udpparsernet.cfg
    channels = list(reversed(cfg.skip_channels))  # deepest first, as ResEncUnet.encode returns them
    strides = [32, 16, 8, 4, 2]
    if len(channels) != FEATURE_COUNT:
        raise ValueError(f"expected {FEATURE_COUNT} parser feature levels, config has {cfg.skip_channels}")
    return [[views, c, size // s, size // s] for c, s in zip(channels, strides)]


def _specs(model: CoNR, size: int, views: int, batch: int) -> dict[str, list]:
    spec = paddle.static.InputSpec
    feats = [spec(shape, "float32", f"feat{i}") for i, shape in enumerate(_feature_shapes(model, views, size))]
    return {
        "pose": [spec([batch, 3, size, size], "float32", "rgb")],
        "step": [spec([batch, 3, size, size], "float32", "xyz"), spec([batch, 1, size, size], "float32", "alpha")]
        + feats
        + [spec([views, 4, size, size], "float32", "reference")],
    }


def _bf16_fp32_regions(model: CoNR) -> list[nn.Layer]:
    """Sub-networks a bf16 export keeps in float32 (`bf16_marks.fp32_regions`).

    The decoder blocks of the last BF16_FP32_LEVELS shader levels. Measured at 128 px / 3 views against the float64
    torch truth (docs/bf16_bisect.md): all-bf16 gives 57.4 dB (He-normal) and 42.3 dB (narrow, conv_gain 1.1); these
    three levels in fp32 give 61.5 / 49.9 dB; the pose encoder, the RGBA decoder or the shader's flow/mask path
    each add under 2 dB. The pose graph contains none of these layers and stays fully bf16."""
    blocks = list(model.shader.decoder_blocks)
    return blocks[len(blocks) - BF16_FP32_LEVELS:]


def _export(model: CoNR, folder: Path, size: int, views: int, batch: int, meta: dict,
            warp_op: WarpOp | None, precision: str) -> None:
    """Write the three graphs into `folder` (created atomically: a temporary sibling renamed at the end)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        layers = {"pose": _PoseGraph(model), "step": _StepGraph(model)}
        specs = _specs(model, size, views, batch)
        guard = getattr(paddle.pir_utils, "IrGuard", None)
        started = time.perf_counter()
        # tracing chatter (glog lines from the custom ops' static-graph API, PIR UserWarnings) goes to a log kept
        # in the export folder, not to the user's terminal; errors still raise
        keep = _bf16_fp32_regions(model) if precision == "bf16" else []
        with output_to(tmp / "export.log"), _export_ops(warp_op, precision), bf16_marks.fp32_regions(keep):
            for name, layer in layers.items():
                layer.eval()
                static = paddle.jit.to_static(layer, input_spec=specs[name], full_graph=True)
                if guard is not None:
                    with guard():
                        paddle.jit.save(static, str(tmp / name))
                else:
                    paddle.jit.save(static, str(tmp / name))
                if keep and (tmp / (name + ".json")).is_file():
                    bf16_marks.apply_marks(tmp / (name + ".json"))  # the tags -> use_quantizer (stays fp32)
        graph_files = sorted(p.name for p in tmp.iterdir() if p.suffix in (".json", ".pdiparams", ".pdmodel"))
        meta = dict(meta, export_seconds=round(time.perf_counter() - started, 2),
                    artifacts=artifact_hashes(tmp, graph_files))  # checked before every load
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "meta.json").is_file():  # a concurrent export won only if it completed
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _verified_meta(folder: Path) -> dict | None:
    """The meta.json of a complete export whose graph files match their recorded sha256; None when there is no
    export. A folder that fails the check (a damaged or replaced graph, a corrupt meta.json) is moved out of the way
    and removed, saying so in one line, so that the caller exports anew; in a cache it cannot change, that is an
    error naming the folder."""
    meta_file = folder / "meta.json"
    if not folder.exists() and not meta_file.is_file():
        return None
    if not meta_file.is_file():
        problem = "meta.json is missing"
    else:
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError) as e:
            meta, problem = None, f"meta.json unreadable ({type(e).__name__})"
        else:
            problem = artifact_problem(folder, meta.get("artifacts") if isinstance(meta, dict) else None)
        if problem is None:
            return meta
    if not os.access(folder.parent, os.W_OK | os.X_OK):
        raise ConrInputError(f"{folder}: exported graphs not usable ({problem}) and the cache is read-only; "
                             "pass --cache-dir to a writable folder")
    logger.warning("conr_paddle: exported graphs in %s not trusted (%s); exporting again", folder, problem)
    aside = folder.with_name(f"{folder.name}.stale-{os.getpid()}-{time.time_ns()}")
    try:
        os.replace(folder, aside)
    except OSError:
        pass  # another process moved it first
    shutil.rmtree(aside, ignore_errors=True)
    return None


def return_freed_memory() -> None:
    """Hand the heap that tracing and saving freed back to the OS (glibc keeps it otherwise): measured at 256 px /
    4 views, a process that exported and then rendered peaked at 4.09 GB against 3.24 GB with a cached export."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _model_files(folder: Path, name: str) -> tuple[str, str]:
    for ext in (".json", ".pdmodel"):
        if (folder / (name + ext)).is_file():
            return str(folder / (name + ext)), str(folder / (name + ".pdiparams"))
    raise FileNotFoundError(f"{folder}: no exported graph '{name}' (.json or .pdmodel)")


def _tensorrt_available() -> bool:
    """Paddle was built against TensorRT (the compile-time version is (0, 0, 0) otherwise)."""
    from paddle import inference

    try:
        return tuple(inference.get_trt_compile_version()) > (0, 0, 0)
    except (AttributeError, RuntimeError):
        return False


def _config(model_file: str, params_file: str, precision: str, threads: int, batch: int):
    from paddle import inference

    cfg = inference.Config(model_file, params_file)
    cfg.disable_glog_info()
    cfg.switch_ir_optim(True)
    # no enable_memory_optim(): with PIR programs it fails at predictor creation (3.3.1: 'Not find predictor_id 0
    # and pass_name memory_optimize_pass').
    if paddle.is_compiled_with_cuda():
        # Untested here (CPU-only machine). TensorRT takes the supported subgraphs; fp16 for a "bf16" request.
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
        return cfg
    cfg.set_cpu_math_library_num_threads(threads)
    (getattr(cfg, "enable_onednn", None) or cfg.enable_mkldnn)()
    if precision == "bf16":
        # no set_bfloat16_op(): PIR's placement pass ignores it (module docstring)
        (getattr(cfg, "enable_onednn_bfloat16", None) or cfg.enable_mkldnn_bfloat16)()
    return cfg


class _Graph:
    """One predictor with its input names in export order."""

    def __init__(self, folder: Path, name: str, precision: str, threads: int, batch: int) -> None:
        from paddle import inference

        self.predictor = inference.create_predictor(_config(*_model_files(folder, name), precision, threads, batch))
        self.inputs = [self.predictor.get_input_handle(n) for n in self.predictor.get_input_names()]
        self.input_names = list(self.predictor.get_input_names())
        self.outputs = [self.predictor.get_output_handle(n) for n in self.predictor.get_output_names()]

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        if len(arrays) != len(self.inputs):
            raise ValueError(f"graph takes {self.input_names}, got {len(arrays)} arrays")
        for handle, array in zip(self.inputs, arrays):
            handle.reshape(list(array.shape))
            handle.copy_from_cpu(np.ascontiguousarray(array, dtype=np.float32))
        self.predictor.run()
        return [h.copy_to_cpu() for h in self.outputs]


@dataclass(frozen=True, eq=False)
class PredictorSheet:
    """Sheet features as the step graph takes them: five (M, C, h, w) arrays and the reference (M, 4, S, S)."""

    features: list
    reference: np.ndarray


class PredictorRunner:
    """The `Runner` interface backed by Paddle Inference predictors of the exported graphs.

    model: a loaded eager `CoNR` (used to export; only its parser is kept, for the sheet). weights_hash: any string identifying the
    weights (e.g. a sha256 of the checkpoint files), part of the cache key. size, views: S and M of every call.
    batch: frames per predictor call; shorter calls are padded by repeating their last frame and the padding is
    dropped from the output. precision: "fp32" or "bf16". custom_warp: export the shader's warps as the
    `conr_warp` operator (`conr_paddle.ext`; compiled on first use) instead of `grid_sample`; where it cannot be
    built, `grid_sample` is used and `warp_op.reason` says why. `self.warp` names the warp the graphs use.
    """

    def __init__(
        self,
        model: CoNR,
        weights_hash: str,
        *,
        size: int = 256,
        views: int = 4,
        batch: int = 1,
        precision: str = "fp32",
        cache_dir: str | os.PathLike | None = None,
        threads: int | None = None,
        custom_warp: bool = True,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if size % 128 or size <= 0:
            raise ValueError(f"size must be a positive multiple of 128, got {size}")
        if views < 1 or batch < 1:
            raise ValueError(f"views and batch must be >= 1, got views={views} batch={batch}")
        if precision == "bf16":
            ok, why = bf16_support()
            if not ok:
                raise RuntimeError(f"precision 'bf16' unavailable: {why}")
        self.size, self.views, self.batch, self.precision = size, views, batch, precision
        self.threads = threads or _threads()
        # The custom warp op must be registered in this process before a predictor loads a graph that uses it.
        self.warp_op = load_warp_op(cache_root(cache_dir)) if custom_warp else None
        self._parser = model.udpparsernet  # sheet features in float64, eager (module docstring)
        # "conr_warp-<library build key>": a change to the operators' source re-exports the graphs
        self.warp = (
            f"conr_warp-{self.warp_op.build_dir.name}"
            if self.warp_op is not None and self.warp_op.available
            else "grid_sample"
        )
        self.norm = norm_statistics(model)
        key = export_key(weights_hash, size, views, batch, precision, self.warp, self.norm)
        self.folder = cache_root(cache_dir) / key[:24]
        self.exported = False  # True when this construction wrote the graphs (False: reused from the cache)
        self.meta = _verified_meta(self.folder)  # a complete, verified export needs no write (read-only caches)
        if self.meta is None:
            # Ranks of a distributed render (and any other processes) share the cache: the first one in exports
            # under the lock, the others wait for it and then find a verified export and load the same graphs.
            with exclusive_lock(self.folder.parent / f"{self.folder.name}.lock"):
                # exports only run under this lock: a temporary export folder seen here was left by a killed one
                for stale in self.folder.parent.glob(f"{self.folder.name}.tmp-*"):
                    shutil.rmtree(stale, ignore_errors=True)
                self.meta = _verified_meta(self.folder)
                if self.meta is None:
                    meta = dict(export_identity(weights_hash, size, views, batch, precision, self.warp, self.norm),
                                key=key)
                    _export(model, self.folder, size, views, batch, meta, self.warp_op, precision)
                    self.exported = True
                    return_freed_memory()
                    self.meta = json.loads((self.folder / "meta.json").read_text())
        self._graphs: dict[str, _Graph] = {}

    @property
    def warp_kind(self) -> str:
        """"conr_warp" or "grid_sample": `warp` without the library build key."""
        return self.warp.split("-")[0]

    def _graph(self, name: str) -> _Graph:
        # Created on first use: a render-only session never pays for the pose parser predictor.
        if name not in self._graphs:
            self._graphs[name] = _Graph(self.folder, name, self.precision, self.threads, self.batch)
        return self._graphs[name]

    def _check(self, array: np.ndarray, channels: int, what: str, count: int | None = None) -> None:
        want = (count if count is not None else array.shape[0], channels, self.size, self.size)
        if array.ndim != 4 or tuple(array.shape) != want:
            raise ValueError(f"{what}: expected shape {want}, got {tuple(array.shape)}")

    def parse_sheet(self, sheet: np.ndarray) -> PredictorSheet:
        """sheet: (M, 4, S, S) premultiplied RGB + alpha in [0, 1], M == views."""
        self._check(sheet, 4, "sheet", self.views)
        sheet = np.ascontiguousarray(sheet, dtype=np.float32)
        rgb, alpha = sheet[:, :3], sheet[:, 3:4]
        with paddle.no_grad():
            parser = sheet_parser(self._parser, "float64", paddle.float32)
            features = [f.numpy() for f in encode_sheet(parser, paddle.to_tensor(rgb))]
        return PredictorSheet(features=features, reference=np.concatenate([alpha * rgb, alpha], axis=1))

    def _batched(self, name: str, fixed: tuple, *per_frame: np.ndarray) -> np.ndarray:
        n = per_frame[0].shape[0]
        graph = self._graph(name)
        out = []
        for start in range(0, n, self.batch):
            chunk = [np.ascontiguousarray(a[start:start + self.batch], dtype=np.float32) for a in per_frame]
            real = chunk[0].shape[0]
            if real < self.batch:  # pad with copies of the last frame; dropped below
                chunk = [np.concatenate([c, np.repeat(c[-1:], self.batch - real, axis=0)]) for c in chunk]
            out.append(graph(*chunk, *fixed)[0][:real])
        return np.concatenate(out, axis=0)

    def parse_pose(self, rgb: np.ndarray) -> np.ndarray:
        """Pose images (B, 3, S, S) -> UDP (B, 4, S, S) in [0, 1]."""
        self._check(rgb, 3, "pose images")
        return self._batched("pose", (), rgb)

    def render(self, sheet: PredictorSheet, xyz: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """xyz (B, 3, S, S), alpha (B, 1, S, S) -> premultiplied RGBA (B, 4, S, S)."""
        self._check(xyz, 3, "xyz")
        self._check(alpha, 1, "alpha", xyz.shape[0])
        return self._batched("step", (*sheet.features, sheet.reference), xyz, alpha)
