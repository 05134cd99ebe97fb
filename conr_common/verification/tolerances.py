"""Every numeric tolerance of the parity tests and of `python -m convert verify`, written once, each with why.

Scaled error = max abs error / max |reference| of a tensor, so layers of any magnitude share one number."""

# Final RGBA in [0, 1], float32, Paddle vs torch: the acceptance bound. Measured 1.2e-7 at 128 px.
RGBA_ATOL_FP32 = 1e-4

# Written uint8 frames: the official truncation (floor of x*255) turns a 1e-7 difference into one level when a
# value sits on a level boundary, and the INTER_AREA paste-back can spread it to a few neighbours; at least 99.9%
# of values must agree, and never by more than one level (the bound).
PIXEL_MIN_IDENTICAL = 0.999
PIXEL_MAX_LEVELS = 1

# Intermediate tensors in float32, scaled, one bound per stage (issue #11: one number widened to the worst stage hid
# a Paddle kernel's loss). They apply to every output of a stage: its final outputs when each network is fed the
# reference's own inputs (parity_tests/test_networks.py) and each of its layer outputs in `convert verify`, where
# error carried in from upstream stages is included. Measured on the port with float64 norm statistics and a
# float64 sheet parse (Paddle's side is then closer to the truth than torch's, so these are mostly torch's own
# float32 rounding), worst over the He-normal draws seeded/narrow/wide (conr_common.verification.draws), 128 and 256 px,
# 1/3/4 views; each bound keeps about 5x over that worst and stays 20x under the smallest planted fault (one conv
# weight moved by 1e-2: 1.1e-2 scaled at that conv):
# - parser (udpparsernet: sheet features, pose-image UDP, and its layers): 1.03e-4 (UDP of a pose image, 256 px);
#   its deepest norm `backbone.7.2.bn3.norm` 8.4e-5 in verify at 256 px / 3 views.
PARSER_SCALED_FP32 = 5e-4
# - pose encoder (target_pose_encoder): 4.6e-6 (its features), 5.6e-6 (a layer in verify).
POSE_ENCODER_SCALED_FP32 = 3e-5
# - shader (flows, masks, warps, fused message at every level): 5.4e-5 (level-5 message, wide draw, 256 px /
#   1 view), 1.07e-4 (a warp output in verify, seeded draw, 256 px / 3 views).
SHADER_SCALED_FP32 = 5e-4
# - RGBA decoder (rgbadecodernet): 4.2e-6 fed the reference's message, 3.1e-5 in verify (error carried in).
DECODER_SCALED_FP32 = 2e-4
# Badly conditioned worlds exceed these through torch's own float32 error, not Paddle's: the "wide" draw at 256 px /
# 3 views gives 3.2e-4 at the shader's output and 1.4e-3 on the RGBA, while torch fp32 is itself 1.4e-3 away from
# its float64 run and Paddle 2.0e-4. Such cases are judged by the float64 referee (TRUTH_* below), which `convert
# verify --truth auto` calls in whenever these fixed bounds fail.
STAGE_SCALED_FP32 = {
    "udpparsernet": PARSER_SCALED_FP32,
    "target_pose_encoder": POSE_ENCODER_SCALED_FP32,
    "shader": SHADER_SCALED_FP32,
    "rgbadecodernet": DECODER_SCALED_FP32,
}


def stage_of(name: str) -> str:
    """The stage a tensor name belongs to: its first part ("shader.level3.flow" -> "shader",
    "udpparsernet.backbone.7.2.bn3.norm#0" and "udpparsernet#0[2]" -> "udpparsernet")."""
    return name.split(".", 1)[0].split("#", 1)[0].split("[", 1)[0]


def stage_tolerance(name: str) -> float:
    """The float32 scaled bound of the stage a tensor belongs to (`stage_of`)."""
    stage = stage_of(name)
    try:
        return STAGE_SCALED_FP32[stage]
    except KeyError:
        raise KeyError(f"{name!r} belongs to no known stage ({', '.join(STAGE_SCALED_FP32)})") from None

# Single ops in float32: one op of O(1) values rounds at a few float32 ulps (measured <= 1.2e-7 for grid_sample
# and interpolate; convolutions accumulate over up to 224*9 products).
OP_SCALED_FP32 = 1e-5

# Float64 on both sides: an exact port leaves only float64 rounding, measured at most 2.0e-10 (stage) and 4.6e-10
# (single layer, same parser block) scaled, and 1e-15 on the final RGBA. 1e-8 is 20x above that and 5 orders
# below float32 rounding, let alone a port error.
FEATURE_SCALED_FP64 = 1e-8
OP_SCALED_FP64 = 1e-12
# Final RGBA in float64: what float64 reaches depends on how much the network amplifies rounding. The flat
# default-init weights gave 1.1e-15; the He-normal seeded draw gives 4.3e-12 at 128 px / 2 views, and a harder
# draw at 256 px / 3 views 6.8e-11 (docs/facts.md, "Float32 accuracy"). 1e-9 is above all of them and still
# 3 orders below the smallest float32 rounding difference of the final RGBA (1e-6), let alone a port error.
RGBA_ATOL_FP64 = 1e-9

# Paddle Inference predictor (fp32) vs the eager Paddle model, final RGBA in [0, 1]: the bound. oneDNN
# convolutions sum in another order and the exported graph resizes with matmuls (conr_engines.inference.ops): measured
# 8.9e-8 on the RGBA; 1e-4 leaves room for other CPUs' kernels and still catches wrong wiring (1e-2 and up).
PREDICTOR_RGBA_ATOL = 1e-4

# bf16 predictor (oneDNN bfloat16) vs fp32, first rendered frame, PSNR with peak 1: issue #7's quality bar.
# Measured 67.6 dB at 256 px / 4 views with the seeded weights; a broken kernel gives NaN or < 20 dB.
BF16_MIN_PSNR_DB = 40.0

# The float64 referee (`convert verify --truth fp64`, the multi-world parity tests): a layer output (or the final
# RGBA) fails when Paddle's error against the float64 truth exceeds TRUTH_RATIO_LIMIT times torch fp32's own error
# plus TRUTH_FLOOR_SCALED (scaled). Written once, with the measurements behind them, in portcheck/verdicts.py (the
# engine that verifies any port uses the same referee).
from portcheck.verdicts import TRUTH_FLOOR_SCALED, TRUTH_RATIO_LIMIT  # noqa: E402

# Multi-world parity (parity_tests/test_worlds.py): the acceptance bounds on Paddle's excess error against
# the float64 truth (Paddle's max abs RGBA error / torch fp32's), worst case and median over the combinations.
WORLD_RATIO_WORST = 1.5
WORLD_RATIO_MEDIAN = 1.0
# Written frames of the worlds against the torch reference: the bound (99% identical, max 1 level). The
# sample-only bound above (99.9%) is tighter because the sample's renders have less contrast per level boundary.
PIXEL_MIN_IDENTICAL_WORLDS = 0.99
# A world's float64 RGBA must have at least this per-channel std: a flat render (PyTorch's default init gives about
# 1e-3) makes agreement meaningless. The He-normal draws measure 0.012 (conv_gain 0.9) to 0.2 (1.1) at 128 px.
MIN_RENDER_STD = 0.01

# ONNX graphs on onnxruntime (`python -m convert export-onnx`, `render --engine onnxruntime`), float32 all through
# (onnxruntime has no float64 InstanceNormalization, so even the sheet graph uses float32 norm statistics).
# Measured at 128 px / 2 views, seeded weights, built-in sample (parity_tests/test_onnx.py), Paddle's ONNX files:
# - sheet features, scaled, against torch fp32 and against eager Paddle (whose float64 parse is closer to the
#   truth): worst 9.3e-4 (feat0, the deepest; max abs 8.5e-3 of values up to 9.1); against the float64 truth 9.0e-4
#   (torch fp32 8.1e-5): onnxruntime's float32 convolutions on the deep, small maps, the same in torch's ONNX file.
#   About 5x over that; a conv weight moved by 1e-2 (1.1e-2 scaled at that conv) still exceeds it.
# - the pose graph (the same parser, UDP out), small CoNR (`tiny_conr`), sample pose image at 128 px, three draws
#   (seeds 5-7, UDP std 0.16-0.31): 3.2e-5 to 4.0e-5 scaled against eager Paddle; against the float64 truth
#   2.9e-5 to 3.8e-5 (torch fp32 4.7e-6 to 5.8e-6, eager Paddle 4.8e-6 to 6.2e-6). Held to the same bound.
ONNX_SHEET_SCALED_FP32 = 5e-3
# - the step graph fed identical sheet features: each level's fused message, scaled, worst 1.3e-5 (message5) and
#   the final RGBA max abs 5.0e-6 against eager Paddle, 4.8e-6 against torch. Held to the predictor's bounds.
ONNX_STEP_SCALED_FP32 = 1e-4
ONNX_RGBA_ATOL = 1e-4
