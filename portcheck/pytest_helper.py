"""`assert_ports_match(torch_module, paddle_layer, inputs, **kw)`: a one-line assertion for users' own test suites.
It runs `portcheck.compare` and fails with the first diverging layer's names and figures (or what else failed)."""
from __future__ import annotations

__all__ = ["assert_ports_match"]


def assert_ports_match(torch_module, paddle_layer, inputs, **kw):
    """Compare (keywords as `portcheck.compare`) and raise AssertionError naming what fails; return the
    Comparison when the port matches."""
    from portcheck.engine import compare

    result = compare(torch_module, paddle_layer, inputs, **kw)
    if not result.passed:
        s = result.summary()
        raise AssertionError(f"ports differ: {result.failure_line()} [{s['structure_failing']} structural, "
                             f"{s['precision_failing']} less precise of {s['layer_outputs']} layer outputs]")
    return result
