"""Writers of the parity report (`python -m convert verify`): report.json for machines, report.md for people,
report.png (renders, amplified difference, per-layer error along the network). All written atomically."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from conr_common.platform.atomic import atomic_path, atomic_write_bytes
from portcheck.report import json_safe  # one NaN-safe JSON conversion for both reports

__all__ = ["REPORT_FILES", "write_report", "render_markdown", "plot_report", "json_safe"]

REPORT_FILES = ("report.json", "report.md", "report.png")  # what write_report puts in its folder

NETWORK_COLORS = {
    "udpparsernet": "tab:blue",
    "target_pose_encoder": "tab:green",
    "shader": "tab:orange",
    "rgbadecodernet": "tab:purple",
}
WORST_ROWS = 15




def write_report(out: Path, report: dict, ref_rgba: np.ndarray, paddle_rgba: np.ndarray) -> None:
    out = Path(out)
    atomic_write_bytes(out / "report.json", (json.dumps(json_safe(report), indent=1, allow_nan=False) + "\n").encode())
    atomic_write_bytes(out / "report.md", render_markdown(report).encode())
    plot_report(out / "report.png", report, ref_rgba, paddle_rgba)


# ----------------------------------------------------------------------------------------------------- markdown
def _e(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return "0" if x == 0 else f"{x:.2e}"


def _ratio(row: dict) -> float:
    """How far over (> 1) or under its tolerance a row is; errors (shape mismatch, unpaired) sort first."""
    if "error" in row:
        return math.inf
    value = row[row.get("metric", "scaled")]
    if not math.isfinite(value):
        return math.inf
    return value / row["tolerance"] if row["tolerance"] > 0 else (math.inf if value > 0 else 0.0)


def _layer_table(rows: list[dict], single_step: bool) -> list[str]:
    head = "| # | layer output | type | shape | max abs | max rel | mean abs | scaled | tolerance | ok |"
    sep = "|---:|---|---|---|---:|---:|---:|---:|---:|:---:|"
    if single_step:
        head += " local scaled | local ok |"
        sep += "---:|:---:|"
    lines = [head, sep]
    for r in rows:
        if "error" in r:
            cells = [str(r["index"]), f"`{r['key']}`", r["type"], "x".join(map(str, r.get("shape", []))),
                     r["error"], "", "", "", _e(r["tolerance"]), "**FAIL**"]
        else:
            cells = [str(r["index"]), f"`{r['key']}`", r["type"], "x".join(map(str, r["shape"])), _e(r["max_abs"]),
                     _e(r["max_rel"]), _e(r["mean_abs"]), _e(r["scaled"]), _e(r["tolerance"]),
                     "ok" if r["ok"] else "**FAIL**"]
        if single_step:
            loc = r.get("local")
            if loc is None:
                cells += ["", ""]
            elif "error" in loc:
                cells += [loc["error"], "**FAIL**"]
            else:
                cells += [_e(loc["scaled"]), "ok" if loc["ok"] else "**FAIL**"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _stage_bounds(bounds: dict[str, float]) -> str:
    """"udpparsernet 5.0e-04, target_pose_encoder 3.0e-05, ..." (a report's per-stage tolerances)."""
    return ", ".join(f"{stage} {_e(value)}" for stage, value in bounds.items())


def _first_failing_line(s: dict, by_key: dict, tol: dict) -> str:
    first = s["first_failing_layer"]
    if not first:
        return (f"- Every layer output within tolerance: {s['layers']} outputs, worst scaled error "
                f"{_e(s['worst_scaled'])} (tolerances per stage: {_stage_bounds(tol['layer'])})")
    r = by_key[first]
    if "truth" in r and "error" not in r["truth"] and "error" not in r:
        t = r["truth"]
        detail = (f"against the float64 truth Paddle {_e(t['paddle'])}, torch {_e(t['torch'])} scaled "
                  f"(ratio {t['ratio']:.2f})")
    else:
        detail = r.get("error") or f"scaled error {_e(r['scaled'])} > tolerance {_e(r['tolerance'])}"
    return f"- **First failing layer** (execution order): `{first}` ({r['type']}, {detail})"


def _local_line(s: dict, by_key: dict, tol: dict) -> str:
    fl = s["first_failing_local"]
    if fl:
        return (f"- **First leaf layer over tolerance when run alone**: `{fl}` "
                f"(local scaled error {_e(by_key[fl]['local'].get('scaled'))} > {_e(by_key[fl]['local']['tolerance'])})")
    return (f"- Every leaf layer run alone on the reference's input is within its stage's bound "
            f"({_stage_bounds(tol['local'])}, scaled); "
            f"worst local error {_e(s['worst_local_scaled'])}")


def _accuracy_lines(report: dict) -> list[str]:
    """The float64 referee's bullets (none without a referee)."""
    acc, st, tol, s = report.get("accuracy"), report["settings"], report["tolerances"], report["summary"]
    if not acc:
        return []
    lines = []
    if st.get("truth_escalated"):
        lines.append("- The fixed per-stage bounds failed, so the float64 referee was called in; the verdicts "
                     "below are its own.")
    lines.append(f"- **Against the float64 truth** (torch reference run in float64): final RGBA max abs error "
                 f"torch fp32 {_e(acc['torch_fp32_vs_fp64'])}, Paddle fp32 {_e(acc['paddle_fp32_vs_fp64'])}, "
                 f"ratio {acc['ratio']:.2f} (Paddle's excess error; a layer fails above "
                 f"{tol['truth_ratio']:g} x torch's error + {_e(tol['truth_floor'])} scaled)")
    for precision in ("fp32", "bf16"):
        if f"predictor_{precision}_vs_fp64" in acc:
            lines.append(f"- Predictor {precision} against the truth: max abs "
                         f"{_e(acc[f'predictor_{precision}_vs_fp64'])}, PSNR "
                         f"{acc[f'predictor_{precision}_psnr_db']:.1f} dB")
    if "predictor_bf16" in acc:
        lines.append(f"- Predictor bf16: {acc['predictor_bf16']}")
    if s.get("worst_truth_ratio") is not None:
        lines.append(f"- Worst per-layer ratio (Paddle's error / torch's, against the truth): "
                     f"{s['worst_truth_ratio']:.2f}")
    return lines


def _summary_lines(report: dict) -> list[str]:
    """The bullets under the title: first failing layer, local errors, parameters, final RGBA, referee."""
    s, st, tol = report["summary"], report["settings"], report["tolerances"]
    by_key = {r["key"]: r for r in report["layers"]}
    render = report["render"]
    lines = [_first_failing_line(s, by_key, tol)]
    if st["single_step"]:
        lines.append(_local_line(s, by_key, tol))
    n_bad = len(s["parameters_differing"])
    if n_bad:
        lines.append(f"- **Parameters differing after rename**: {n_bad} of {s['parameters']}: "
                     + ", ".join(f"`{k}`" for k in s["parameters_differing"][:10])
                     + (" ..." if n_bad > 10 else ""))
    else:
        lines.append(f"- Parameters: all {s['parameters']} tensors identical after rename (bit-exact)")
    lines.append(f"- Final RGBA: max abs {_e(render.get('max_abs'))}, tolerance {_e(render['tolerance'])} "
                 f"({'ok' if render['ok'] else '**FAIL**'})")
    if s["unpaired_paddle_keys"]:
        lines.append("- **Paddle layer calls without a torch counterpart**: "
                     + ", ".join(f"`{k}`" for k in s["unpaired_paddle_keys"][:10]))
    lines += _accuracy_lines(report)
    lines.append(f"- Runtime: {report['timings']['total_s']:.1f} s")
    return lines


def _parameter_section(report: dict) -> list[str]:
    bad_params = [p for p in report["parameters"] if not p["ok"]]
    if not bad_params:
        return []
    lines = ["## Parameters that differ", "", "| tensor (Paddle name) | torch name | shape | max abs | elements differing |",
             "|---|---|---|---:|---:|"]
    for p in bad_params:
        lines.append(f"| `{p['network']}.{p['paddle_key']}` | `{p['torch_key']}` | {'x'.join(map(str, p['shape']))} "
                     f"| {_e(p['max_abs'])} | {p['differing']} |")
    lines.append("")
    return lines


def _environment_section(env: dict) -> list[str]:
    lines = ["## Environment", "", "| item | value |", "|---|---|"]
    lines.append(f"| python | {env['python']} ({env['platform']}) |")
    for name, version in env["packages"].items():
        lines.append(f"| {name} | {version or '-'} |")
    lines.append(f"| CPU | {env['cpu']['model']} ({env['cpu']['logical_cpus']} logical, {' '.join(env['cpu']['simd'])}) |")
    gpu = env["gpu"]
    gpu_text = gpu.get("torch_device_name") or gpu.get("paddle_device_name") or "none"
    lines.append(f"| GPU | {gpu_text} (used: {gpu['used']}) |")
    for k, v in env["threads"].items():
        lines.append(f"| {k} | {v if v is not None else 'unset'} |")
    for k, v in env["onednn"].items():
        lines.append(f"| {k} | {v} |")
    for k, v in env["numerics_pinned"].items():
        lines.append(f"| {k} | {v if v is not None else 'unset'} |")
    lines.append("")
    return lines


def render_markdown(report: dict) -> str:
    """report.md: verdict, summary bullets, the worst layer outputs, the environment and every layer output."""
    st, tol = report["settings"], report["tolerances"]
    verdict = "PASS" if report["passed"] else "FAIL"
    rows = report["layers"]
    lines = [f"# CoNR parity report: {verdict}", ""]
    lines.append(
        f"PyTorch reference vs Paddle port, {st['dtype']}, {st['size']} px, {st['views']} sheet view(s), "
        f"device {st['device']}, seed {st['seed']}" + (", single-step" if st["single_step"] else "") + "."
    )
    lines.append("")
    lines += _summary_lines(report)
    lines += ["", "![renders, difference and per-layer error](report.png)", ""]
    lines.append("Scaled error = max abs error / max |reference| of that output. Tolerances (`convert.judge."
                 f"tolerances_for`, reasons in `conr_common/verification/tolerances.py`): layer outputs and leaf layers run alone, "
                 f"scaled, per stage: {_stage_bounds(tol['layer'])}; final RGBA {_e(tol['rgba'])} absolute "
                 "(RGBA_ATOL); weights bit-exact. With the float64 referee a layer passes when Paddle's error against "
                 "the truth is within the ratio stated above.")
    lines.append("")
    lines += _parameter_section(report)
    worst = sorted(rows, key=_ratio, reverse=True)[:WORST_ROWS]
    worst.sort(key=lambda r: r["index"])
    lines += [f"## Worst {len(worst)} layer outputs (relative to tolerance, in execution order)", ""]
    lines += _layer_table(worst, st["single_step"])
    lines.append("")
    if report.get("backward"):
        from portcheck.report import gradient_lines

        lines += gradient_lines(report["backward"], report["backward"]["losses"].keys() >= {"torch64"}) + [""]
    lines += _environment_section(report["environment"])
    lines += [f"## Every layer output ({len(rows)}, execution order: a container follows its children)", ""]
    lines += _layer_table(rows, st["single_step"])
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- figure
def _over_checkerboard(rgba: np.ndarray, cell: int = 8) -> np.ndarray:
    """Premultiplied (4, H, W) in [0, 1] -> (H, W, 3) composited over a grey checkerboard."""
    rgba = np.clip(np.asarray(rgba, dtype=np.float64), 0.0, 1.0)
    h, w = rgba.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // cell) + (xx // cell)) % 2 == 0, 0.85, 0.65)[..., None]
    return np.clip(rgba[:3].transpose(1, 2, 0) + (1.0 - rgba[3][..., None]) * board, 0.0, 1.0)


def amplification(max_abs: float) -> int:
    """Exponent e of the power of ten 10**e that brings the largest difference into [1, 10)."""
    if not (max_abs > 0 and math.isfinite(max_abs)):
        return 0
    return math.ceil(-math.log10(max_abs))


def _display_stretch(ref_rgba: np.ndarray, paddle_rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (low, high), shared by both renders, when every channel spans less than a fifth of [0, 1]
    (seeded random weights render an almost flat colour, which would show as a plain grey square); None to show
    the values as they are."""
    both = np.stack([np.asarray(ref_rgba, np.float64), np.asarray(paddle_rgba, np.float64)])  # (2, 4, H, W)
    if not np.isfinite(both).all():
        return None
    if np.any(both.max(axis=(0, 2, 3)) - both.min(axis=(0, 2, 3)) >= 0.2):
        return None
    # percentiles of the interior, not extremes: the image border alone spans most of a flat render's range
    m = max(1, both.shape[-1] // 32)
    inner = both[..., m:-m, m:-m]
    lo, hi = np.percentile(inner, 1.0, axis=(0, 2, 3)), np.percentile(inner, 99.0, axis=(0, 2, 3))
    return (lo, hi) if np.all(hi > lo) else None


def _stretched_rgb(rgba: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    x = (np.asarray(rgba[:3], np.float64) - lo[:3, None, None]) / (hi - lo)[:3, None, None]
    return np.clip(x, 0.0, 1.0).transpose(1, 2, 0)


def _draw_renders(fig, grid, report: dict, ref_rgba: np.ndarray, paddle_rgba: np.ndarray) -> None:
    """Top row: both renders and their amplified difference."""
    tol = report["tolerances"]
    d = np.abs(np.asarray(ref_rgba, np.float64) - np.asarray(paddle_rgba, np.float64)).max(axis=0)
    max_abs = float(d.max()) if d.size else 0.0
    exponent = amplification(max_abs)
    factor = 10.0 ** exponent
    stretch = _display_stretch(ref_rgba, paddle_rgba)
    if stretch is not None:
        lo, hi = stretch
        show = lambda x: _stretched_rgb(x, lo, hi)  # noqa: E731
        note = "\n(nearly flat: RGB contrast-stretched per channel)"
    else:
        show, note = _over_checkerboard, ""
    for column, (rgba, title) in enumerate(((ref_rgba, "PyTorch reference render"), (paddle_rgba, "Paddle render"))):
        ax = fig.add_subplot(grid[0, column])
        ax.imshow(show(rgba), interpolation="nearest")
        ax.set_title(title + note)
        ax.axis("off")
    ax = fig.add_subplot(grid[0, 2])
    im = ax.imshow(d * factor, cmap="inferno", vmin=0.0, vmax=max(max_abs * factor, 1e-30), interpolation="nearest")
    ax.set_title(f"|reference - Paddle| (max over RGBA), amplified x 1e{exponent}\n"
                 f"max abs {max_abs:.2e} (tolerance {tol['rgba']:.0e})")
    ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=f"difference x 1e{exponent}")


def _scatter_networks(ax, rows: list[dict], idx: np.ndarray, shown: np.ndarray) -> None:
    for net, color in NETWORK_COLORS.items():
        for leaf, marker, size in ((True, "o", 9), (False, "s", 14)):
            sel = np.array([r["network"] == net and r["leaf"] == leaf for r in rows], dtype=bool)
            if sel.any():
                ax.scatter(idx[sel], shown[sel], s=size, marker=marker, color=color, alpha=0.75 if leaf else 0.35,
                           linewidths=0, label=f"{net} ({'leaf' if leaf else 'container'})")


def _draw_local_and_bounds(ax, report: dict, idx: np.ndarray, row_tol: np.ndarray, floor: float) -> None:
    """The single-step errors, and either the referee's per-layer errors or the fixed per-stage tolerance."""
    rows, st, tol = report["layers"], report["settings"], report["tolerances"]
    if st["single_step"]:
        local = np.array([r["local"]["scaled"] if "local" in r and "error" not in r["local"] else np.nan
                          for r in rows], dtype=np.float64)
        ax.scatter(idx, np.maximum(local, floor), s=5, marker=".", color="0.3", label="leaf run alone (local)")
        if tol["local"] != tol["layer"]:
            local_tol = [r["local"]["tolerance"] if "local" in r else np.nan for r in rows]
            ax.step(idx, local_tol, where="mid", color="0.3", linestyle=":", linewidth=1.2,
                    label="local tolerance (per stage)")
    truth_rows = [r.get("truth") for r in rows]
    if any(t is not None and "error" not in t for t in truth_rows):
        # the referee: each framework's float32 error against the float64 truth, per layer output
        for who, color, label in (("torch", "black", "torch fp32 vs float64 truth"),
                                  ("paddle", "tab:orange", "Paddle fp32 vs float64 truth")):
            err = np.array([t[who] if t and "error" not in t else np.nan for t in truth_rows], dtype=np.float64)
            ax.plot(idx, np.maximum(err, floor), color=color, linewidth=0.9, alpha=0.85, label=label)
    else:
        ax.step(idx, row_tol, where="mid", color="tab:red", linestyle="--", linewidth=1.5,
                label="layer tolerance (per stage)")


def _draw_layer_errors(ax, report: dict) -> None:
    """Bottom row: every layer output's scaled error along the network, log scale."""
    rows, s = report["layers"], report["summary"]
    values = np.array([r["scaled"] if "error" not in r else np.nan for r in rows], dtype=np.float64)
    finite = values[np.isfinite(values) & (values > 0)]
    row_tol = np.array([r["tolerance"] for r in rows], dtype=np.float64)
    lowest = float(row_tol.min()) if row_tol.size else 1e-4
    floor = min(lowest * 1e-6, finite.min() / 3 if finite.size else lowest * 1e-6)
    shown = np.where(np.isfinite(values), np.maximum(values, floor), np.nan)
    idx = np.arange(len(rows))
    _scatter_networks(ax, rows, idx, shown)
    _draw_local_and_bounds(ax, report, idx, row_tol, floor)
    first = s["first_failing_layer"]
    if first:
        fi = next(r["index"] for r in rows if r["key"] == first)
        ax.axvline(fi, color="tab:red", linewidth=1.0, alpha=0.6)
        ax.annotate(f"first failing: {first}", xy=(fi, row_tol[fi]), xytext=(8, 12), textcoords="offset points",
                    color="tab:red", fontsize=11, fontweight="bold")
    ax.set_yscale("log")
    ax.set_xlim(-1, max(len(rows), 1))
    ax.set_xlabel("layer output, in execution order (network depth)")
    ax.set_ylabel("scaled error  (max abs / max |reference|)")
    ax.set_title(f"Per-layer error, {len(rows)} layer outputs; {s['layers_failing']} over tolerance"
                 + (f"  (exact zeros drawn at {floor:.0e})" if np.any(values == 0) else ""))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize=9, ncol=5, frameon=False)


def plot_report(path: Path, report: dict, ref_rgba: np.ndarray, paddle_rgba: np.ndarray) -> None:
    """report.png: both renders, their amplified difference, and the per-layer error along the network."""
    # no pyplot: no global figure state and no display needed; the Agg canvas draws the PNG
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    st = report["settings"]
    fig = Figure(figsize=(15, 10.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, height_ratios=[1.0, 0.9])
    verdict = "PASS" if report["passed"] else "FAIL"
    fig.suptitle(f"CoNR parity: {verdict}   ({st['dtype']}, {st['size']} px, {st['views']} views, "
                 f"device {st['device']})", fontsize=15, fontweight="bold",
                 color="tab:green" if report["passed"] else "tab:red")
    _draw_renders(fig, grid, report, ref_rgba, paddle_rgba)
    _draw_layer_errors(fig.add_subplot(grid[1, :]), report)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
