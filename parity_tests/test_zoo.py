"""The model zoo as proof of portcheck (issue 21): torchvision.models against paddle.vision.models, two ports of
resnet18, mobilenet_v2 and vgg11_bn written by different teams.

Main pass, 224 px, batch 1: weights moved from a seeded torchvision model (norms exercised), every layer output
paired, every weight moved and equal, structure PASS, precision figures printed. Two weight/input draws where a
draw is cheap (resnet18, mobilenet_v2; the second at 112 px); one for vgg11_bn (45 s, 132 M parameters).
Planted faults, 64 px (the same code paths at a sixteenth of the cost): on each pair a BatchNorm epsilon changed, a
ReLU swapped for ReLU6 (ReLU6 for ReLU on mobilenet_v2, which uses ReLU6 throughout), a 3x3 convolution's padding
moved to one side (same output shape, shifted content: TensorFlow "SAME" padding, a classic port bug) and one weight
moved by 1e-2: each must be the first diverging layer compare reports, and judged structural.

Each pair is built once (module fixture); pytest runs one pair's tests together, so one pair is alive at a time.
"""
from __future__ import annotations

import gc
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import paddle
import pytest

from parity_tests.zoo import ZOO, ZOO_BY_NAME, build_pair, image_batch, transfer_mismatches
from parity_tests.zoo_table import COLUMNS, README, readme_columns, readme_rows, table_row
from portcheck import compare

pytestmark = pytest.mark.slow  # 245 s with one thread on the shared 2-core machine (printed at the end of the module)

MAIN_SIZE, FAULT_SIZE = 224, 64
# The second draw's input: a quarter of the pixels (the same layers and code paths; its point is another world of
# weights and inputs, and the README's figures come from the first draw at MAIN_SIZE).
SECOND_DRAW_SIZE = 112
MAIN_SEEDS = {"resnet18": (0, 1), "mobilenet_v2": (0, 1), "vgg11_bn": (0,)}
# The fault input is scaled so the chosen activation sees values above 6 (where ReLU and ReLU6 part); asserted.
FAULT_INPUT_SCALE = 4.0
# A port that took TensorFlow's / Keras's BatchNorm default (1e-3) instead of torch's 1e-5.
PLANTED_EPSILON = 1e-3
WEIGHT_NUDGE = 1e-2


@dataclass(frozen=True)
class FaultSites:
    """Where each fault is planted (Paddle layer paths; the torch paths are the same in these ports)."""

    batchnorm: str
    activation: str
    conv: str  # a 3x3 stride-1 convolution, so one-sided padding [0, 2, 0, 2] keeps its output shape
    weight: str  # a convolution weight: its first element is nudged


SITES = {
    "resnet18": FaultSites("layer2.0.bn1", "layer4.1.relu", "layer3.1.conv1", "layer1.0.conv1.weight"),
    "mobilenet_v2": FaultSites("features.4.conv.1.1", "features.0.2", "features.5.conv.1.0",
                               "features.2.conv.0.0.weight"),
    "vgg11_bn": FaultSites("features.5", "features.2", "features.8", "features.11.weight"),
}
# Measured on the 2-core AMD EPYC (AVX-512), two draws: Paddle's float32 Linear 25088 -> 4096 at batch 1 lands 3.0x
# and 3.5x torch's distance from the float64 truth (limit 2x + 1e-6). Where a CPU does better, no failure at all.
DOCUMENTED_LESS_PRECISE = {"vgg11_bn": "classifier.0"}


@dataclass
class Built:
    name: str
    torch: object
    paddle: object
    transfer: object
    main: dict = field(default_factory=dict)  # seed -> Comparison (seed 0 at MAIN_SIZE, others SECOND_DRAW_SIZE)


@pytest.fixture(scope="module", autouse=True)
def module_clock(request):
    started = time.perf_counter()
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"test_zoo: {time.perf_counter() - started:.1f} s for the module")


@pytest.fixture(scope="module", params=[pair.name for pair in ZOO])
def zoo(request):
    torch_model, paddle_model, transfer = build_pair(ZOO_BY_NAME[request.param], seed=0)
    built = Built(request.param, torch_model, paddle_model, transfer)
    yield built
    built.main.clear()
    del built, torch_model, paddle_model
    gc.collect()  # vgg11_bn: 132 M parameters, freed before the next pair is built


def _main_comparison(zoo: Built, seed: int):
    if seed not in zoo.main:
        if seed == 0:
            models = (zoo.torch, zoo.paddle)
        else:
            torch_model, paddle_model, _ = build_pair(ZOO_BY_NAME[zoo.name], seed)
            models = (torch_model, paddle_model)
        size = MAIN_SIZE if seed == 0 else SECOND_DRAW_SIZE
        zoo.main[seed] = compare(*models, image_batch(size, 1, seed),
                                 unpaired_ok=ZOO_BY_NAME[zoo.name].unpaired_ok)
    return zoo.main[seed]


def test_weights_move_completely_and_bit_for_bit(zoo):
    assert transfer_mismatches(zoo.torch, zoo.paddle, zoo.transfer) == []
    assert zoo.transfer.count("shape") == 0  # names and the BatchNorm spellings suffice: nothing left to shapes


@pytest.mark.parametrize("seed", [0, 1])
def test_every_layer_paired_and_structure_passes(zoo, seed, capsys):
    if seed not in MAIN_SEEDS[zoo.name]:
        pytest.skip(f"{zoo.name}: one draw only (its float64 passes take most of a minute)")
    result = _main_comparison(zoo, seed)
    s = result.summary()
    with capsys.disabled():
        print(f"\n{zoo.name} seed {seed}: {s['layer_outputs']} outputs, worst fp64 {s['worst_fp64_scaled']:.1e}, "
              f"fp32 ratio final {s['final_ratio']:.2f} worst {s['worst_ratio']:.2f}, "
              f"{result.timings['total_s']:.1f} s; {result.failure_line() or 'PASS'}")
    # no undeclared unpaired call; the declared ones (mobilenet_v2's pool2d_avg) listed as such, once per call
    assert (result.unpaired_torch, result.unpaired_paddle) == ([], [])
    declared = ZOO_BY_NAME[zoo.name].unpaired_ok
    assert [d["call"] for d in result.unpaired_declared] == [f"{n}#0" for n in declared]
    assert not result.parameters_unpaired_torch and not result.parameters_unpaired_paddle
    assert s["layer_outputs"] > 0 and s["structure_failing"] == 0, result.failure_line()
    less = result.first_less_precise
    assert less is None or less["torch"].rpartition("#")[0] == DOCUMENTED_LESS_PRECISE.get(zoo.name), \
        result.failure_line()


def test_every_weight_compares_equal(zoo):
    """vgg11_bn's square 4096 x 4096 classifier.3 included: transposed by layer type, as it was moved."""
    result = _main_comparison(zoo, 0)
    assert len(result.parameters) == len(zoo.transfer.moves)
    assert result.parameters_differing == [], [p["torch"] for p in result.parameters_differing]


# A rounding figure inside a table cell ("1.7e-12", "3.53x"): what the math library's code path and reduction order
# move (the worst float64 error 1.7e-12 -> 1.8e-12 and vgg11_bn's classifier.0 ratio 3.53 -> 3.30 when MKL took its
# AVX2 path instead of its SSE one on the same AMD CPU).
_ROUNDING_FIGURE = re.compile(r"\d+\.\d+(e[-+]\d+)?")


def _verdicts(cell: str) -> str:
    """A table cell with its rounding figures replaced by "#": its verdict (PASS/FAIL, the layer named) is kept."""
    return _ROUNDING_FIGURE.sub("#", cell)


def test_readme_zoo_table_is_what_the_engine_reports(zoo):
    """Every column but the fp32 ratio and the seconds, recomputed from this module's own comparison (seed 0,
    224 px). The fp32 ratio is a float32 rounding figure: it moved from 2.90 to 2.65 for mobilenet_v2 between two runs
    with 2 threads on the same CPU (reduction order), so the table states it as measured and the test checks the
    columns that a port bug would change; in the structure and precision columns, the verdicts and the layers they
    name (`_verdicts`), not the rounding figures beside them."""
    text = README.read_text()
    assert readme_columns(text) == COLUMNS
    row = table_row(zoo.name, _main_comparison(zoo, 0), zoo.transfer)
    ratio = COLUMNS.index(next(c for c in COLUMNS if c.startswith("fp32 ratio")))
    keep = [i for i in range(len(COLUMNS) - 1) if i != ratio]
    readme = readme_rows(text).get(zoo.name, ())
    assert [_verdicts(readme[i]) for i in keep] == [_verdicts(row[i]) for i in keep], \
        "run `python -m parity_tests.zoo_table`"


# ------------------------------------------------------------------------------------------------ planted faults
def _sublayer(model, path: str):
    return dict(model.named_sublayers(include_self=True))[path]


@contextmanager
def _swapped(model, path: str, make):
    """The Paddle layer at `path` replaced by `make(old)` for the duration; the original put back after."""
    parent_path, _, child = path.rpartition(".")
    parent, old = _sublayer(model, parent_path), _sublayer(model, path)
    parent.add_sublayer(child, make(old))
    try:
        yield
    finally:
        parent.add_sublayer(child, old)


def _epsilon_changed(bn):
    new = paddle.nn.BatchNorm2D(bn.weight.shape[0], epsilon=PLANTED_EPSILON)
    new.set_state_dict(bn.state_dict())
    new.eval()
    return new


def _activation_swapped(act):
    return paddle.nn.ReLU() if isinstance(act, paddle.nn.ReLU6) else paddle.nn.ReLU6()


def _padding_one_sided(conv):
    out_channels, in_per_group, kh, kw = conv.weight.shape
    assert (kh, kw) == (3, 3) and list(conv._stride) == [1, 1], "the site must keep its shape with [0, 2, 0, 2]"
    new = paddle.nn.Conv2D(in_per_group * conv._groups, out_channels, 3, stride=1, padding=[0, 2, 0, 2],
                           dilation=conv._dilation, groups=conv._groups,
                           bias_attr=None if conv.bias is not None else False)
    new.set_state_dict(conv.state_dict())
    return new


@contextmanager
def _nudged(model, name: str):
    tensor = model.state_dict()[name]
    original = tensor.numpy().copy()
    nudged = original.copy()
    nudged.flat[0] += WEIGHT_NUDGE
    tensor.set_value(nudged)
    try:
        yield
    finally:
        tensor.set_value(original)


def _activation_input_max(zoo: Built, x: np.ndarray) -> float:
    """The largest value the torch twin of the activation site receives on `x` (all its calls)."""
    import torch

    seen = []
    module = dict(zoo.torch.named_modules())[SITES[zoo.name].activation]
    # a pre-hook: torchvision's activations work in place, so after the call the input is already clipped
    handle = module.register_forward_pre_hook(lambda m, inputs: seen.append(float(inputs[0].max())))
    try:
        with torch.no_grad():
            zoo.torch(torch.from_numpy(x))
    finally:
        handle.remove()
    return max(seen)


@pytest.mark.parametrize("fault", ["epsilon", "activation", "padding", "weight"])
def test_planted_fault_is_found_at_its_layer_and_structural(zoo, fault):
    sites = SITES[zoo.name]
    x = image_batch(FAULT_SIZE, 1, seed=0, scale=FAULT_INPUT_SCALE)
    if fault == "activation":
        assert _activation_input_max(zoo, x) > 6.0, "ReLU and ReLU6 agree below 6: the fault would be invisible"
    site, planting = {
        "epsilon": (sites.batchnorm, lambda: _swapped(zoo.paddle, sites.batchnorm, _epsilon_changed)),
        "activation": (sites.activation, lambda: _swapped(zoo.paddle, sites.activation, _activation_swapped)),
        "padding": (sites.conv, lambda: _swapped(zoo.paddle, sites.conv, _padding_one_sided)),
        "weight": (sites.weight.rpartition(".")[0], lambda: _nudged(zoo.paddle, sites.weight)),
    }[fault]
    with planting():
        result = compare(zoo.torch, zoo.paddle, x, unpaired_ok=ZOO_BY_NAME[zoo.name].unpaired_ok)
    first = result.first_diverging
    assert first is not None, f"{zoo.name}: {fault} fault not found"
    assert first["paddle"].rpartition("#")[0] == site and first["torch"].rpartition("#")[0] == site, \
        result.failure_line()
    assert first["structure"] is False and first["fp64_scaled"] > result.settings["structure_bound"]
    assert not result.passed
    if fault == "weight":
        assert [p["paddle"] for p in result.parameters_differing] == [sites.weight]
