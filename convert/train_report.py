"""Writers of the training-parity report (`python -m convert train-parity`): report.json, report.md and report.png
(the four loss curves, and each float32 curve's drift from the float64 runs), written as one folder atomically."""
from __future__ import annotations

import io
import json
from pathlib import Path

from portcheck.files import write_folder_atomic

from convert.report import json_safe

__all__ = ["write_train_report", "train_markdown", "train_png"]


def _e(x) -> str:
    return "-" if x is None else ("0" if x == 0 else f"{x:.3e}")


def _parting(c: dict) -> str:
    if c["fp64_first_parting"] is None:
        return f"within {c['structure_bound']:g} x max loss at every step"
    if c["self_first_parting"] is None and c["sensitivity_max_abs"] is None:
        return f"part at step {c['fp64_first_parting']} (no sensitivity leg)"
    return (f"part at step {c['fp64_first_parting']}; torch's fp64 run from perturbed weights parts from torch's at "
            f"step {c['self_first_parting']}, {_e(c['sensitivity_max_abs'])} at most: the parting is "
            f"{'within' if c['parting_within_sensitivity'] else 'NOT within'} the run's own sensitivity")


def train_markdown(r: dict) -> str:
    c, st = r["curves"], r["settings"]
    lines = [f"# Training parity: {'PASS' if r['passed'] else 'FAIL'}", "",
             f"- {st['steps']} {st['optimizer']['kind']} steps at {st['size']} px, {st['views']} view(s); trained: "
             f"{', '.join(st['trained'])}; frozen: {', '.join(st['frozen'])}",
             f"- Loss: {st['loss']}; target: {r['inputs']['target']}",
             f"- Weights: {r['weights']}",
             f"- Rule: {c['rule']}",
             f"- **Paddle fp32 vs torch fp32** (max over steps, abs): {_e(c['torch32_vs_paddle32'])}, bound "
             f"{_e(c['precision_bound'])} (torch's fp32 drift from its fp64 run {_e(c['torch32_vs_torch64'])} + "
             f"floor): {'PASS' if c['precision'] else 'FAIL'}; Paddle's own fp32 drift {_e(c['paddle32_vs_paddle64'])}"
             f" (ratio to torch's {c['drift_ratio']:.2f}, information)",
             f"- **fp64 curves** Paddle vs torch: {_e(c['fp64_max_abs'])} abs, {_e(c['fp64_scaled'])} scaled; "
             + _parting(c) + f": {'PASS' if c['structure'] else 'FAIL'}",
             f"- Cross: Paddle fp32 vs torch fp64 {_e(c['paddle32_vs_torch64'])}, torch fp32 vs Paddle fp64 "
             f"{_e(c['torch32_vs_paddle64'])}, torch fp32 vs Paddle fp32 {_e(c['torch32_vs_paddle32'])}",
             f"- Seconds per leg: " + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in r["timings"].items() if k != "total_s")
             + f"; total {r['timings']['total_s']:.1f}; peak RSS {max(r['peak_rss_gb'].values()):.2f} GB",
             f"- CPU: {r['environment']['cpu']['model']}", "",
             "## Optimizer mapping", "", "| setting | torch | Paddle |", "|---|---|---|"]
    lines += [f"| {m['setting']} | {m['torch']} | {m['paddle']} |" for m in r["optimizer_mapping"]]
    lines += ["", "## Parameter updates after the last step (sampled elements, scaled error)", "",
              "| network | elements | max update | Paddle64 vs torch64 | torch32 vs torch64 | Paddle32 vs Paddle64 |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {u['network']} | {u['elements']} | {_e(u['update_max_abs'])} | {_e(u['paddle64_vs_torch64'])} | "
              f"{_e(u['torch32_vs_torch64'])} | {_e(u['paddle32_vs_paddle64'])} |" for u in r["updates"]]
    lo = r["losses"]
    keys = [k for k in ("torch32", "torch64", "paddle32", "paddle64", "torch64_perturbed") if k in lo]
    lines += ["", "## Loss before each step", "", "| step | " + " | ".join(keys) + " |",
              "|---:|" + "---:|" * len(keys)]
    lines += [f"| {i} | " + " | ".join(f"{lo[k][i]:.12f}" for k in keys) + " |" for i in range(len(lo["torch64"]))]
    return "\n".join(lines) + "\n"


def train_png(r: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    lo = {k: np.asarray(v, dtype=np.float64) for k, v in r["losses"].items()}
    steps = np.arange(len(lo["torch64"]))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, style in (("torch32", "-"), ("torch64", "--"), ("paddle32", "-"), ("paddle64", ":"),
                       ("torch64_perturbed", "-.")):
        if key in lo:
            a.plot(steps, lo[key], style, label=key)
    a.set(xlabel="step", ylabel="L1 loss (RGBA)", title="loss curves")
    a.legend()
    floor = 1e-18  # a drift of exactly 0 on a log axis
    for (x, y), label in (((("torch32", "torch64")), "torch fp32 - torch fp64"),
                          ((("paddle32", "paddle64")), "Paddle fp32 - Paddle fp64"),
                          ((("paddle32", "torch64")), "Paddle fp32 - torch fp64"),
                          ((("paddle64", "torch64")), "Paddle fp64 - torch fp64"),
                          ((("torch64_perturbed", "torch64")), "torch fp64 perturbed - torch fp64"),
                          ((("paddle32", "torch32")), "Paddle fp32 - torch fp32")):
        if x not in lo:
            continue
        b.semilogy(steps, np.maximum(np.abs(lo[x] - lo[y]), floor), label=label)
    b.axhline(r["curves"]["precision_bound"], color="k", lw=0.8, ls="--", label="bound for |Paddle fp32 - torch fp32|")
    b.set(xlabel="step", ylabel="|loss difference|", title="float32 drift against float64")
    b.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def write_train_report(out: str | Path, report: dict) -> None:
    """report.json, report.md and report.png into folder `out`, atomically (portcheck.files)."""
    data = (json.dumps(json_safe(report), indent=1, allow_nan=False) + "\n").encode()
    write_folder_atomic(out, {"report.json": data, "report.md": train_markdown(report).encode(),
                              "report.png": train_png(report)})
