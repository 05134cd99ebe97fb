"""portcheck, the framework-neutral port verifier, on small handmade pairs (parity_tests/portcheck_pairs.py): the
pairing rules, per-call recording, unpaired layers, the first diverging layer, the two verdicts (including a layer
that is structurally exact but less precise), train-mode BatchNorm, the Dropout line, the parameter rows, the
verify-pair command line's exit codes and files, and assert_ports_match's message. Each compare() runs in well under
a second."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from parity_tests.portcheck_pairs import IN_SHAPE, TorchNet, make_input, make_pair
from portcheck import assert_ports_match, compare
from portcheck.pairing import apply_rename
from portcheck.verdicts import STRUCTURE_SCALED_FP64

X = make_input()


def _row(result, torch_key: str) -> dict:
    return next(r for r in result.rows if r["torch"] == torch_key)


def test_exact_port_passes_with_every_call_recorded_and_paired_by_name():
    result = compare(*make_pair(), X)
    assert result.passed, result.failure_line()
    keys = [r["torch"] for r in result.rows]
    # execution order, a leaf before its parents, the root's output last; the twice-called ReLU once per call
    assert keys == ["conv#0", "bn#0", "act#0", "drop#0", "fc#0", "act#1", "#0"]
    assert [r["paddle"] for r in result.rows] == keys
    assert {r["rule"] for r in result.rows} == {"name", "root"}
    assert all(r["verdict"] == "exact" and r["fp64_scaled"] <= STRUCTURE_SCALED_FP64 for r in result.rows)
    assert result.unpaired_torch == [] and result.unpaired_paddle == []
    assert result.first_diverging is None and result.failure_line() is None


def test_parameters_are_compared_tensor_by_tensor_with_both_names():
    t, p = make_pair()
    result = compare(t, p, X)
    rows = {r["torch"]: r for r in result.parameters}
    assert set(rows) == {"conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                         "fc.weight", "fc.bias"}
    assert rows["bn.running_var"]["paddle"] == "bn._variance" and rows["bn.running_var"]["rule"] == "framework rename"
    assert rows["fc.weight"]["transposed"] and not rows["conv.weight"]["transposed"]
    assert all(r["ok"] and r["max_abs"] == 0.0 for r in rows.values())
    # one weight moved by 1e-2 on the Paddle side: that tensor named, and the conv is where the outputs diverge
    w = p.conv.weight.numpy()
    w[0, 0, 1, 1] += 1e-2
    p.conv.weight.set_value(w)
    moved = compare(t, p, X)
    assert [(r["torch"], r["paddle"]) for r in moved.parameters_differing] == [("conv.weight", "conv.weight")]
    assert moved.first_diverging["torch"] == "conv#0" and moved.first_diverging["verdict"] == "structural"


def test_names_that_differ_pair_by_execution_order_and_the_rule_says_so():
    names = {"conv": "stem", "bn": "norm", "act": "relu", "drop": "dropout", "fc": "head"}
    result = compare(*make_pair(names=names), X)
    assert result.passed, result.failure_line()
    assert [(r["torch"], r["paddle"], r["rule"]) for r in result.rows[:3]] == [
        ("conv#0", "stem#0", "order"), ("bn#0", "norm#0", "order"), ("act#0", "relu#0", "order")]
    assert _row(result, "act#1")["paddle"] == "relu#1"
    assert {r["torch"]: r["paddle"] for r in result.parameters}["bn.running_mean"] == "norm._mean"


def test_a_rename_table_pairs_by_name_first():
    result = compare(*make_pair(names={"fc": "head"}), X, rename={"fc": "head"})
    assert result.passed, result.failure_line()
    assert _row(result, "fc#0")["paddle"] == "head#0" and _row(result, "fc#0")["rule"] == "rename"
    assert _row(result, "conv#0")["rule"] == "name"
    assert apply_rename("model.fc.weight", {"model": "", "model.fc": "head"}) == "head.weight"
    assert apply_rename("model.conv", {"model": ""}) == "conv"


def test_order_pairing_refuses_to_guess_when_counts_differ():
    """An extra Paddle layer: paired by name the rest still pairs and the extra call is listed; by order alone the
    root's children (5 against 6) are left unpaired rather than guessed."""
    by_name = compare(*make_pair(extra=True), X)
    assert by_name.unpaired_paddle == ["extra#0"] and by_name.unpaired_torch == []
    assert not by_name.passed and "unpaired" in by_name.failure_line()
    by_order = compare(*make_pair(extra=True), X, pairing="order")
    assert [r["torch"] for r in by_order.rows] == ["#0"]
    assert "conv#0" in by_order.unpaired_torch and "extra#0" in by_order.unpaired_paddle


def test_planted_structural_fault_is_found_at_its_layer():
    """A BatchNorm epsilon of 1e-3 instead of 1e-5: the float64 runs differ from bn#0 on."""
    result = compare(*make_pair(epsilon=1e-3), X)
    first = result.first_diverging
    assert (first["torch"], first["paddle"], first["verdict"]) == ("bn#0", "bn#0", "structural")
    assert _row(result, "conv#0")["verdict"] == "exact"
    assert first["fp64_scaled"] > 1e3 * STRUCTURE_SCALED_FP64
    assert result.failure_line().startswith("first diverging layer: torch `bn#0` / Paddle `bn#0`")


def test_a_different_network_names_its_first_differing_layer():
    result = compare(*make_pair(act="sigmoid"), X)
    assert not result.passed and result.first_diverging["torch"] == "act#0"
    assert all(r["ok"] for r in result.parameters)  # same weights, another function


def test_structurally_exact_but_less_precise():
    """The lossy ReLU ((x + 1e4) - 1e4) is exact in float64 but loses precision in float32: structure passes at
    that layer, precision fails, and the result says which."""
    result = compare(*make_pair(act="lossy"), X)
    row = _row(result, "act#0")
    assert row["structure"] and row["fp64_scaled"] <= STRUCTURE_SCALED_FP64
    assert row["precision"] is False and row["verdict"] == "less precise"
    assert row["paddle_fp32_vs_truth"] > 100 * max(row["torch_fp32_vs_truth"], 1e-6)
    assert result.first_diverging is None and result.first_less_precise["torch"] == "act#0"
    assert not result.passed and result.failure_line().startswith("structurally exact but less precise: torch `act#0`")


def test_without_truth_the_float32_verdict_is_stated():
    result = compare(*make_pair(), X, truth="none")
    assert result.passed and all("fp64_scaled" not in r and r["precision"] is None for r in result.rows)
    assert any("no float64 truth" in n for n in result.notes)
    assert not compare(*make_pair(epsilon=1e-1), X, truth="none").passed


def test_dropout_is_inactive_and_said_so():
    result = compare(*make_pair(), X)
    assert any(n.startswith("Dropout inactive on both sides") and "1 torch module(s), 1 Paddle layer(s)" in n
               for n in result.notes)
    assert _row(result, "drop#0")["verdict"] == "exact"  # a random mask would not match


def test_train_mode_batchnorm_outputs_match_and_running_statistics_are_reported():
    """Batch statistics: the outputs agree to float64 precision. The running statistics after the pass differ, and
    each row names the framework difference that reproduces Paddle's value (a finding, not hidden): Paddle's
    running variance uses the biased batch variance; its kernel rounds the momentum to float32."""
    t, p = make_pair()
    before = t.bn.running_var.clone()
    result = compare(t, p, X, train=True)
    assert all(r["structure"] for r in result.rows), result.first_diverging
    assert _row(result, "bn#0")["fp64_scaled"] <= STRUCTURE_SCALED_FP64
    stats = {r["torch"]: r for r in result.running_stats}
    assert set(stats) == {"bn.running_mean", "bn.running_var"}
    assert stats["bn.running_var"]["paddle"] == "bn._variance" and not stats["bn.running_var"]["structure"]
    assert "biased batch variance (divided by n = 72)" in stats["bn.running_var"]["finding"]
    assert "float32" in stats["bn.running_mean"]["finding"]
    assert any("torch momentum m is Paddle momentum 1 - m" in n for n in result.notes)
    assert bool((t.bn.running_var == before).all())  # the caller's model is unchanged


def test_train_mode_reports_a_momentum_convention_mismatch():
    result = compare(*make_pair(momentum=0.1), X, train=True)  # torch's number, Paddle's convention: wrong
    assert any("BatchNorm momentum differs: torch `bn` momentum 0.1 vs Paddle `bn` momentum 0.1" in n
               for n in result.notes)
    mean = {r["torch"]: r for r in result.running_stats}["bn.running_mean"]
    assert not mean["structure"] and mean["finding"].startswith("Paddle's momentum 0.1 is not 1 - torch's 0.1")


def test_assert_ports_match_names_the_first_diverging_layer():
    assert assert_ports_match(*make_pair(), X).passed
    with pytest.raises(AssertionError, match=r"ports differ: first diverging layer: torch `bn#0` / Paddle `bn#0` "
                                             r"\(float64 runs differ by .* scaled > 1.00e-08"):
        assert_ports_match(*make_pair(epsilon=1e-3), X)


# ------------------------------------------------------------------------------------------- the command line
def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from convert.cli import main

    rc = main(["verify-pair", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("argv, expect", [
    (["nocolon", "x:y", "--input-shape", "1,3,6,6"], "TORCH_SPEC 'nocolon': expected package.module:callable"),
    (["parity_tests.portcheck_pairs:TorchNet", "no_such_module_xyz:Net", "--input-shape", "1,3,6,6"],
     "PADDLE_SPEC no_such_module_xyz:Net: cannot import"),
    (["parity_tests.portcheck_pairs:TorchNet", "parity_tests.portcheck_pairs:PaddleNet(act=__import__('os'))",
      "--input-shape", "1,3,6,6"], "arguments must be Python literals"),
    (["parity_tests.portcheck_pairs:TorchNet", "parity_tests.portcheck_pairs:PaddleNet", "--input-shape", "1,x"],
     "--input-shape '1,x': expected comma-separated integers"),
    (["parity_tests.portcheck_pairs:TorchNet", "parity_tests.portcheck_pairs:PaddleNet", "--input-shape", "1,0,6,6"],
     "every dimension must be a positive integer"),
    (["parity_tests.portcheck_pairs:TorchNet", "parity_tests.portcheck_pairs:PaddleNet", "--input-shape", "2,3,6,6",
      "--rename", "RENAME"], "--rename"),
    (["parity_tests.portcheck_pairs:TorchNet", "parity_tests.portcheck_pairs:PaddleNet", "--input-shape", "2,3,6,6",
      "--torch-weights", "MISSING.pt"], "--torch-weights MISSING.pt: file not found"),
    (["parity_tests.portcheck_pairs:TorchNet", "parity_tests.portcheck_pairs:TorchNet", "--input-shape", "2,3,6,6"],
     "not a paddle.nn.Layer"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, expect, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "RENAME").write_text('["not", "an object"]')
    rc, out, err = _cli(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == [tmp_path / "RENAME"]


PAIRS = "parity_tests.portcheck_pairs"


def test_cli_pass_writes_report_and_junit(capsys, tmp_path):
    rc, out, err = _cli(capsys, f"{PAIRS}:TorchNet", f"{PAIRS}:PaddleNet", "--input-shape", "2,3,6,6",
                        "--report", str(tmp_path / "rep"), "--junit", str(tmp_path / "junit.xml"))
    assert rc == 0, out + err
    assert out.splitlines()[-2].startswith("PASS: 7 layer outputs paired") and "comparison time:" in out
    assert "BatchNorm statistics drawn by portcheck.exercise.exercise_norms" in out
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["passed"] and doc["summary"]["parameters"] == 8 and doc["context"]["input_shapes"] == [[2, 3, 6, 6]]
    assert "weights moved torch -> Paddle" in doc["context"]["weights"]
    assert (tmp_path / "rep" / "report.md").read_text().startswith("# Port comparison: PASS")
    assert (tmp_path / "rep" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    cases = suite.findall("testcase")
    assert suite.get("failures") == "0" and len(cases) == int(suite.get("tests")) == 7 + 1
    assert cases[0].get("name") == "conv#0 -> conv#0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junit.xml", "rep"]  # no temporaries left


def test_cli_fail_names_the_first_differing_layer_in_one_line(capsys, tmp_path):
    rc, out, err = _cli(capsys, f"{PAIRS}:TorchNet", f"{PAIRS}:PaddleNet(epsilon=0.001)", "--input-shape",
                        "2,3,6,6", "--junit", str(tmp_path / "junit.xml"))
    assert rc == 1 and err == ""
    lines = out.splitlines()
    assert lines[-2].startswith("first diverging layer: torch `bn#0` / Paddle `bn#0` (float64 runs differ by ")
    failures = ET.parse(tmp_path / "junit.xml").getroot().iter("failure")
    assert [f.get("type") for f in failures][:1] == ["structural"]


def test_cli_a_network_that_is_not_the_same(capsys, tmp_path):
    """Another activation: the weights still move, the report names the first differing layer, exit 1."""
    rc, out, err = _cli(capsys, f"{PAIRS}:TorchNet", f"{PAIRS}:PaddleNet(act='sigmoid')", "--input-shape", "2,3,6,6",
                        "--report", str(tmp_path / "rep"))
    assert rc == 1 and "Traceback" not in err
    assert "first diverging layer: torch `act#0` / Paddle `act#0`" in out
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["summary"]["first_diverging"] == {
        "torch": "act#0", "paddle": "act#0"}


def test_cli_weights_that_cannot_move_are_reported_and_compared(capsys, tmp_path):
    """A rename entry that matches no tensor: transfer_weights refuses; both sides keep their own weights, the
    comparison runs and fails at the first layer, exit 1, one line saying the weights were not moved. (It used
    TorchNet against LeNet on a 1-channel input, which TorchNet itself rejects: it passed on an internal error.)"""
    (tmp_path / "rename.json").write_text('{"no_such_layer": "other"}')
    rc, out, err = _cli(capsys, f"{PAIRS}:TorchNet", f"{PAIRS}:PaddleNet", "--input-shape", "2,3,6,6",
                        "--rename", str(tmp_path / "rename.json"))
    assert rc == 1 and err == "", err
    assert "weights NOT moved (cannot move the weights: rename table entry 'no_such_layer' matches no torch" in out
    assert "first diverging layer: torch `conv#0` / Paddle `conv#0`" in out


def test_cli_torch_weights_file_is_loaded_strictly(capsys, tmp_path):
    import torch

    t, _ = make_pair(seed=3)
    torch.save(t.state_dict(), tmp_path / "w.pt")
    rc, out, _ = _cli(capsys, f"{PAIRS}:TorchNet", f"{PAIRS}:PaddleNet", "--input-shape", "2,3,6,6",
                      "--torch-weights", str(tmp_path / "w.pt"), "--truth", "none")
    assert rc == 0 and "no float64 truth" in out
    torch.save({"conv.weight": t.conv.weight}, tmp_path / "part.pt")
    rc, _, err = _cli(capsys, f"{PAIRS}:TorchNet", f"{PAIRS}:PaddleNet", "--input-shape", "2,3,6,6",
                      "--torch-weights", str(tmp_path / "part.pt"))
    assert rc == 2 and err.startswith(f"error: --torch-weights {tmp_path / 'part.pt'}: does not fit the model")


def test_a_square_linear_weight_is_compared_transposed_by_layer_type():
    """A 4 x 4 Linear fits either layout: moved transposed by portcheck.transfer (the layer types say Linear), its
    parameter row must compare it transposed too and find it identical (vgg11_bn's 4096 x 4096 classifier.3)."""
    import paddle
    import torch

    from portcheck.transfer import transfer_weights

    torch.manual_seed(0)
    t = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    p = paddle.nn.Sequential(paddle.nn.Linear(4, 4), paddle.nn.ReLU())
    moves = {m.torch_name: m.transposed for m in transfer_weights(t, p).moves}
    result = compare(t, p, np.random.default_rng(0).standard_normal((2, 4)))
    rows = {r["torch"]: r for r in result.parameters}
    assert moves["0.weight"] and rows["0.weight"]["transposed"] and not rows["0.bias"]["transposed"]
    assert rows["0.weight"]["max_abs"] == 0.0 and result.parameters_differing == [] and result.passed


def test_a_declared_parameter_free_unpaired_layer_is_listed_as_declared_and_passes():
    """mobilenet_v2's case in small: Paddle calls a parameter-free layer (`extra`, an Identity) where torch calls
    nothing. Undeclared it fails; declared it is listed with the reason and the pair passes."""
    from portcheck.declared import DECLARED_REASON

    undeclared = compare(*make_pair(extra=True), X)
    assert not undeclared.passed and undeclared.unpaired_paddle == ["extra#0"]
    declared = compare(*make_pair(extra=True), X, unpaired_ok=("extra",))
    assert declared.passed, declared.failure_line()
    assert declared.unpaired_paddle == [] and declared.unpaired_torch == []
    assert declared.unpaired_declared == [{"side": "paddle", "call": "extra#0", "reason": DECLARED_REASON}]
    assert declared.summary()["unpaired_declared"] == 1 and declared.settings["unpaired_ok"] == ["extra"]


@pytest.mark.parametrize("names, expect", [
    (("fc",), "unpaired_ok 'fc': the torch layer holds parameters or buffers (weight, bias)"),
    (("bn",), "holds parameters or buffers"),
    (("no_such_layer",), "no layer of that name"),
    ("extra", "expected a list of layer names"),
])
def test_declaring_a_layer_with_parameters_or_no_layer_is_refused(names, expect):
    from portcheck.errors import PortInputError

    with pytest.raises(PortInputError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        compare(*make_pair(extra=True), X, unpaired_ok=names)


def test_cli_allow_unpaired(capsys, tmp_path):
    rc, out, err = _cli(capsys, f"{PAIRS}:TorchNet", f"{PAIRS}:PaddleNet(extra=True)", "--input-shape", "2,3,6,6",
                        "--allow-unpaired", "extra", "--report", str(tmp_path / "rep"))
    assert rc == 0 and "Paddle 0 (1 declared)" in out, out + err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Declared unpaired layer calls" in md and "- paddle `extra#0`: declared unpaired" in md
    rc, out, err = _cli(capsys, f"{PAIRS}:TorchNet", f"{PAIRS}:PaddleNet(extra=True)", "--input-shape", "2,3,6,6")
    assert rc == 1 and "unpaired layer calls: torch [], Paddle ['extra#0']" in out
    rc, out, err = _cli(capsys, f"{PAIRS}:TorchNet", f"{PAIRS}:PaddleNet(extra=True)", "--input-shape", "2,3,6,6",
                        "--allow-unpaired", "conv")
    assert rc == 2 and err.strip().splitlines() == [
        "error: --allow-unpaired 'conv': the torch layer holds parameters or buffers (weight, bias); only a "
        "parameter-free layer may be declared unpaired (pair it with a rename table instead)"]


def test_a_model_whose_own_forward_raises_is_named_with_its_side_and_pass(capsys, tmp_path):
    """googlenet's case in small: torch pools to 6 x 6 before its Linear, the Paddle port does not, so at 8 x 8 only
    the Paddle side raises (in a matmul): one line naming the Paddle float32 pass and the exception's first line,
    exit 1, nothing written. The plain torch model raises too: the input is wrong for the network itself, exit 2."""
    from portcheck.errors import ForwardError

    rc, out, err = _cli(capsys, f"{PAIRS}:TorchNet(pool=True)", f"{PAIRS}:PaddleNet", "--input-shape", "2,3,8,8",
                        "--report", str(tmp_path / "rep"))
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and "internal error" not in err and "Traceback" not in err, err
    assert lines[0].startswith("error: --input-shape 2,3,8,8: the Paddle model's own forward raised in its float32 "
                               "pass (ValueError: (InvalidArgument) In operator matmul")
    assert lines[0].endswith("torch ran on this input, so the pair is not the same network on it")
    rc, out, err = _cli(capsys, f"{PAIRS}:TorchNet", f"{PAIRS}:PaddleNet", "--input-shape", "2,3,8,8",
                        "--report", str(tmp_path / "rep"))
    assert rc == 2 and err.strip().splitlines() == [
        "error: --input-shape 2,3,8,8: the torch model's own forward raised in its float32 pass (RuntimeError: "
        "mat1 and mat2 shapes cannot be multiplied (2x512 and 288x10)); the torch model does not accept this input"]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ForwardError) as caught:
        compare(*make_pair(), np.zeros((2, 3, 8, 8)))
    assert (caught.value.side, caught.value.dtype) == ("torch", "float32")


def test_precision_gates_by_default_and_is_a_finding_when_informative(capsys):
    """The overall verdict: a less precise layer fails the pair unless precision="informative"
    (--precision-informative), where it is still reported; a structural fault fails either way."""
    informative = compare(*make_pair(act="lossy"), X, precision="informative")
    assert informative.passed and informative.settings["precision"] == "informative"
    assert informative.failure_line().startswith("structurally exact but less precise: torch `act#0`")
    assert not compare(*make_pair(epsilon=1e-3), X, precision="informative").passed
    argv = (f"{PAIRS}:TorchNet", f"{PAIRS}:PaddleNet(act='lossy')", "--input-shape", "2,3,6,6")
    rc, out, _ = _cli(capsys, *argv)
    assert rc == 1 and "\nstructurally exact but less precise: torch `act#0`" in out
    rc, out, _ = _cli(capsys, *argv, "--precision-informative")
    assert rc == 0 and out.splitlines()[-3].startswith("PASS: ")
    assert out.splitlines()[-2].startswith("finding (precision informative): structurally exact but less precise")
