"""portcheck.transfer: the generic torch -> Paddle weight move is complete, exact and strict.

Small hand-built pairs prove each rule (name, framework spelling, rename table, shape among the leftovers, Linear
transposed by layer type, num_batches_tracked dropped, buffer <-> parameter) and each refusal (ambiguous,
unmatched, shape, Linear on one side only, a rename entry that matches nothing), and that a refusal writes nothing.
Two zoo pairs prove it on real ports (vgg11_bn, 132 M parameters, is checked once in test_zoo.py's fixture).
"""
from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch

from parity_tests.zoo import ZOO_BY_NAME, build_pair, transfer_mismatches
from portcheck.transfer import TransferError, transfer_weights


def _torch_net(names=("conv", "bn", "fc"), square: int = 4):
    """Conv(3->2, 3x3), BatchNorm(2), Linear(square -> square): three layers, no forward needed."""
    conv, bn, fc = names
    torch.manual_seed(1)
    net = torch.nn.Module()
    net.add_module(conv, torch.nn.Conv2d(3, 2, 3, bias=False))  # BatchNorm follows; its bias alone has shape [2]
    net.add_module(bn, torch.nn.BatchNorm2d(2))
    net.add_module(fc, torch.nn.Linear(square, square))
    with torch.no_grad():  # non-default statistics, so a swapped mean/variance would show
        getattr(net, bn).running_mean.uniform_(-1, 1)
        getattr(net, bn).running_var.uniform_(0.5, 1.5)
    return net


def _paddle_net(names=("conv", "bn", "fc"), square: int = 4):
    conv, bn, fc = names
    net = paddle.nn.Layer()
    net.add_sublayer(conv, paddle.nn.Conv2D(3, 2, 3, bias_attr=False))
    net.add_sublayer(bn, paddle.nn.BatchNorm2D(2))
    net.add_sublayer(fc, paddle.nn.Linear(square, square))
    return net


def _assert_moved_exactly(torch_net, paddle_net, report) -> None:
    """Every torch tensor (but the dropped) arrived bit for bit, transposed where the report says so, and every
    Paddle tensor was written."""
    assert transfer_mismatches(torch_net, paddle_net, report) == []


def test_names_spellings_transpose_and_dropped_counter():
    torch_net, paddle_net = _torch_net(), _paddle_net()
    report = transfer_weights(torch_net, paddle_net)
    _assert_moved_exactly(torch_net, paddle_net, report)
    rules = {m.torch_name: (m.paddle_name, m.rule, m.transposed) for m in report.moves}
    assert rules["bn.running_mean"] == ("bn._mean", "spelling", False)
    assert rules["bn.running_var"] == ("bn._variance", "spelling", False)
    # a square Linear fits either way by shape: the transpose is decided by the layer types
    assert rules["fc.weight"] == ("fc.weight", "name", True)
    assert not np.array_equal(torch_net.fc.weight.detach().numpy(), torch_net.fc.weight.detach().numpy().T)
    assert rules["conv.weight"] == ("conv.weight", "name", False)
    assert report.dropped == ("bn.num_batches_tracked",)


def test_leftovers_with_unique_shapes_move_by_shape():
    torch_net, paddle_net = _torch_net(), _paddle_net(names=("stem", "norm", "head"))
    report = transfer_weights(torch_net, paddle_net)
    _assert_moved_exactly(torch_net, paddle_net, report)
    assert {m.rule for m in report.moves} == {"shape"}
    by_name = {m.torch_name: m.paddle_name for m in report.moves}
    assert by_name["bn.running_var"] == "norm._variance" and by_name["fc.weight"] == "head.weight"


def test_rename_table_moves_by_rename():
    torch_net, paddle_net = _torch_net(), _paddle_net(names=("stem", "norm", "head"))
    report = transfer_weights(torch_net, paddle_net, rename={"conv": "stem", "bn": "norm", "fc": "head"})
    _assert_moved_exactly(torch_net, paddle_net, report)
    assert {m.rule for m in report.moves} == {"rename", "spelling"}
    assert report.count("rename") == 5 and report.count("spelling") == 2


def _twin_convs(framework, names):
    """Two convolutions of one shape under the given names (nothing but their order tells them apart)."""
    if framework == "torch":
        net = torch.nn.Module()
        for name in names:
            net.add_module(name, torch.nn.Conv2d(2, 2, 1))
    else:
        net = paddle.nn.Layer()
        for name in names:
            net.add_sublayer(name, paddle.nn.Conv2D(2, 2, 1))
    return net


def test_two_leftovers_of_one_shape_are_refused_naming_both_and_nothing_is_written():
    torch_net, paddle_net = _twin_convs("torch", ("a", "b")), _twin_convs("paddle", ("x", "y"))
    before = {k: v.numpy().copy() for k, v in paddle_net.state_dict().items()}
    with pytest.raises(TransferError) as caught:
        transfer_weights(torch_net, paddle_net)
    message = str(caught.value)
    assert "ambiguous" in message and "\n" not in message
    for name in ("a.weight", "b.weight", "x.weight", "y.weight", "a.bias", "b.bias", "x.bias", "y.bias"):
        assert name in message, name
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in paddle_net.state_dict().items())
    # the rename table is the way out, and its pairs are the ones written
    report = transfer_weights(torch_net, paddle_net, rename={"a": "y", "b": "x"})
    _assert_moved_exactly(torch_net, paddle_net, report)
    assert {m.torch_name: m.paddle_name for m in report.moves}["a.weight"] == "y.weight"


def test_unmatched_tensors_are_refused_by_name():
    torch_net, paddle_net = _torch_net(), _paddle_net()
    torch_net.register_buffer("extra", torch.zeros(7))
    paddle_net.add_sublayer("more", paddle.nn.Linear(5, 3))
    with pytest.raises(TransferError) as caught:
        transfer_weights(torch_net, paddle_net)
    message = str(caught.value)
    assert "1 torch tensor(s) with no Paddle counterpart: extra" in message
    assert "2 Paddle tensor(s) with no torch counterpart: more.weight, more.bias" in message


def test_a_long_refusal_stays_one_readable_line_and_keeps_every_name():
    torch_net, paddle_net = _torch_net(), _paddle_net()
    for i in range(20):
        torch_net.register_buffer(f"extra{i}", torch.zeros(i + 10))
    with pytest.raises(TransferError) as caught:
        transfer_weights(torch_net, paddle_net)
    message = str(caught.value)
    assert "20 torch tensor(s) with no Paddle counterpart: extra0, " in message and "(+12 more)" in message
    assert "extra19" not in message and "\n" not in message
    assert sum(p.count("extra") for p in caught.value.problems) == 20


def test_buffer_on_one_side_parameter_on_the_other_moves_by_name():
    torch_net = torch.nn.Module()
    torch_net.register_buffer("scale", torch.arange(3, dtype=torch.float32))
    torch_net.shift = torch.nn.Parameter(torch.full((2,), 0.5))
    paddle_net = paddle.nn.Layer()
    paddle_net.scale = paddle_net.create_parameter([3])
    paddle_net.register_buffer("shift", paddle.zeros([2]), persistable=True)
    report = transfer_weights(torch_net, paddle_net)
    _assert_moved_exactly(torch_net, paddle_net, report)
    assert {m.rule for m in report.moves} == {"name"}


def test_shape_mismatch_linear_on_one_side_and_unused_rename_are_refused():
    torch_net, paddle_net = _torch_net(square=4), _paddle_net(square=4)
    paddle_net.add_sublayer("conv", paddle.nn.Conv2D(3, 2, 5, bias_attr=False))  # 5x5 where torch has 3x3
    with pytest.raises(TransferError, match=r"shape differs: torch conv.weight \[2, 3, 3, 3\] vs Paddle conv.weight"):
        transfer_weights(torch_net, paddle_net)
    torch_net, paddle_net = _torch_net(), _paddle_net()
    paddle_net.add_sublayer("fc", paddle.nn.Conv1D(4, 4, 1))  # not a Linear: its weight layout is not known
    with pytest.raises(TransferError, match="a Linear weight on one side only"):
        transfer_weights(torch_net, paddle_net)
    with pytest.raises(TransferError, match="rename table entry 'nothing' matches no torch tensor"):
        transfer_weights(_torch_net(), _paddle_net(), rename={"nothing": "conv"})


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_zoo_pairs_move_every_tensor_bit_for_bit(name):
    torch_net, paddle_net, report = build_pair(ZOO_BY_NAME[name], seed=0)
    _assert_moved_exactly(torch_net, paddle_net, report)
    assert report.count("shape") == 0  # names (and the BatchNorm spellings) suffice for these ports
    assert report.count("spelling") > 0 and sum(m.transposed for m in report.moves) == 1  # the classifier


def test_one_rename_rule_shared_with_the_engine_and_its_table_checked():
    """transfer applies the engine's rename rule (portcheck.pairing.apply_rename), not a copy that could drift, and
    checks the table the way the engine does: a non-string entry is a bad input naming the table, not a TypeError."""
    import portcheck.transfer as transfer
    from portcheck.errors import PortInputError
    from portcheck.pairing import apply_rename

    assert not hasattr(transfer, "_renamed") and transfer.apply_rename is apply_rename
    with pytest.raises(PortInputError, match="rename table: every entry must map"):
        transfer_weights(_torch_net(), _paddle_net(), rename={"fc": 3})
