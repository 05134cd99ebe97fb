"""Writers of a port comparison: report.json (machines), report.md (people), report.png (the errors of every
layer output along the network) and a JUnit XML file (one test case per paired layer output, for CI systems).
The report folder is written atomically (`portcheck.files`)."""
from __future__ import annotations

import io
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from portcheck.files import write_atomic, write_folder_atomic
from portcheck.result import Comparison

__all__ = ["REPORT_FILES", "report_document", "render_markdown", "plot_png", "junit_xml", "write_report",
           "write_junit", "json_safe"]

REPORT_FILES = ("report.json", "report.md", "report.png")
FORMAT_VERSION = 1
WORST_ROWS = 15


def json_safe(obj):
    """NaN and infinities as strings (strict JSON readers reject the bare tokens); numpy scalars as Python's."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return json_safe(obj.item())
    return obj


def report_document(result: Comparison, context: dict) -> dict:
    """The report.json document: verdict, summary, settings, notes, what was compared (`context`), every row."""
    return {"format_version": FORMAT_VERSION, "tool": "portcheck", "passed": result.passed,
            "failure": result.failure_line(), "summary": result.summary(), "settings": result.settings,
            "notes": result.notes, "context": context, "layers": result.rows,
            "unpaired": {"torch": result.unpaired_torch, "paddle": result.unpaired_paddle},
            "unpaired_declared": result.unpaired_declared,
            "parameters": result.parameters,
            "parameters_unpaired": {"torch": result.parameters_unpaired_torch,
                                    "paddle": result.parameters_unpaired_paddle},
            "running_stats": result.running_stats, "gradients": result.gradients, "modules": result.modules,
            "timings": result.timings}


def _e(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return "0" if x == 0 else f"{x:.2e}"


def _row_cells(r: dict, truth: bool) -> list[str]:
    cells = [str(r.get("index", "")), f"`{r['torch']}`", f"`{r['paddle']}`", r.get("rule", ""),
             r.get("torch_type", ""), "x".join(map(str, r.get("shape", []))), _e(r.get("max_abs")), _e(r.get("scaled"))]
    if truth:
        ratio = r.get("ratio")
        cells += [_e(r.get("torch_fp32_vs_truth")), _e(r.get("paddle_fp32_vs_truth")),
                  "-" if ratio is None else f"{ratio:.2f}", _e(r.get("fp64_scaled"))]
    return cells + [r.get("error") or r["verdict"]]


def _table(rows: list[dict], truth: bool) -> list[str]:
    head = "| # | torch | Paddle | rule | type | shape | max abs | scaled |"
    sep = "|---:|---|---|---|---|---|---:|---:|"
    if truth:
        head += " torch fp32 to truth | Paddle fp32 to truth | ratio | fp64 scaled |"
        sep += "---:|---:|---:|---:|"
    lines = [head + " verdict |", sep + "---|"]
    return lines + ["| " + " | ".join(_row_cells(r, truth)) + " |" for r in rows]


def _summary_lines(doc: dict) -> list[str]:
    s, st = doc["summary"], doc["settings"]
    finding = "Finding (precision informative): " if doc["passed"] else ""
    lines = [f"- {finding}{doc['failure']}" if doc["failure"] else "- Every paired layer output structurally exact "
             "and as precise as torch; every parameter identical"]
    lines.append(f"- {s['layer_outputs']} layer outputs paired ({', '.join(f'{k} {v}' for k, v in s['pairs_by_rule'].items())}); "
                 f"unpaired calls: torch {s['unpaired_torch']}, Paddle {s['unpaired_paddle']}"
                 + (f"; declared unpaired: {s['unpaired_declared']}" if s["unpaired_declared"] else ""))
    lines.append(f"- Structure: {s['structure_failing']} failing; worst float64 scaled error "
                 f"{_e(s['worst_fp64_scaled'])} (bound {_e(st['structure_bound'])})")
    if st["truth"] == "fp64":
        lines.append(f"- Precision: {s['precision_failing']} failing; worst ratio of Paddle's float32 distance to the "
                     f"truth over torch's {_e(s['worst_ratio'])}, at the output {_e(s['final_ratio'])} (a layer fails "
                     f"above {st['ratio_limit']:g} x torch's + {_e(st['floor'])} scaled)")
    lines.append(f"- Parameters: {s['parameters']} tensors compared, {s['parameters_differing']} differing, "
                 f"{s['parameters_unpaired']} unpaired")
    lines += [f"- {n}" for n in doc["notes"]]
    lines.append(f"- Comparison time: {doc['timings']['total_s']:.1f} s")
    return lines


def gradient_lines(g: dict, truth: bool) -> list[str]:
    """The backward section: the loss, the verdicts, the failing or worst gradient rows."""
    from portcheck.backward import gradient_summary, kink_lines

    s = gradient_summary(g)
    lines = ["", "## Backward: gradients of every layer output, parameter and input", "", f"- {g['loss']}",
             f"- {s['layer_gradients']} layer-output, {s['parameter_gradients']} parameter and {s['input_gradients']} "
             f"input gradients; structure failing {s['structure_failing']}; worst float64 scaled error "
             f"{_e(s['worst_fp64_scaled'])}",
             f"- Precision verdict (once, over the parameters): median of Paddle's float32 gradient distance to the "
             f"truth over torch's {_e(s['median_parameter_ratio'])} (limit {s['median_ratio_limit']}; a single "
             f"gradient is one reduction whose float32 rounding scatters per row), worst {_e(s['worst_parameter_ratio'])}",
             f"- Rows above the per-row ratio limit (information, not a verdict): {len(s['rows_above_ratio_limit'])}"]
    lines += [f"- Kink: {line}" for line in kink_lines(g)]
    if s["first_diverging"]:
        f = s["first_diverging"]
        lines.append(f"- First diverging layer-output gradient in backward order: torch `{f['torch']}` / Paddle "
                     f"`{f['paddle']}`; suspects (consumers whose gradients agree): "
                     f"{', '.join(x['paddle'] for x in f['suspects']) or 'none'}")
    rows = g["layers"] + g["parameters"] + g["inputs"]
    worst = sorted(rows, key=lambda r: (r["verdict"] != "exact", r.get("fp64_scaled") or r.get("scaled") or 0.0),
                   reverse=True)[:WORST_ROWS]
    return lines + ["", f"### Worst {len(worst)} gradients", ""] + _table(worst, truth)


def render_markdown(doc: dict) -> str:
    truth = doc["settings"]["truth"] == "fp64"
    ctx = doc["context"]
    lines = [f"# Port comparison: {'PASS' if doc['passed'] else 'FAIL'}", ""]
    if ctx:
        lines += [", ".join(f"{k}: `{v}`" for k, v in ctx.items()), ""]
    lines += _summary_lines(doc) + ["", "![errors along the network](report.png)", ""]
    lines.append("Scaled error = max abs error / max |torch's output|. Structure: the float64 runs of both sides "
                 "agree (else a port bug). Precision: Paddle's float32 distance to the float64 truth against torch's "
                 "own (ratio). Verdicts: exact, less precise (structurally exact), structural.")
    lines.append("")
    rows = doc["layers"]
    worst = sorted(rows, key=lambda r: (r["verdict"] != "exact", r.get("fp64_scaled") or r.get("scaled") or 0.0),
                   reverse=True)[:WORST_ROWS]
    lines += [f"## Worst {len(worst)} layer outputs", ""] + _table(sorted(worst, key=lambda r: r["index"]), truth)
    if doc["running_stats"]:
        lines += ["", "## BatchNorm running statistics after the train-mode pass", ""]
        lines += _table(doc["running_stats"], truth)
        lines += [f"- `{r['torch']}`: {r['finding']}" + (" -- a framework convention, not a port bug (precision judged "
                  "against each framework's own float64 run)" if r.get("convention") else "")
                  for r in doc["running_stats"] if r.get("finding")]
    if doc.get("gradients"):
        lines += gradient_lines(doc["gradients"], truth)
    bad = [p for p in doc["parameters"] if not p["ok"]]
    if bad:
        lines += ["", "## Parameters that differ", "", "| torch | Paddle | shape | max abs |", "|---|---|---|---:|"]
        lines += [f"| `{p['torch']}` | `{p['paddle']}` | {'x'.join(map(str, p['shape']))} | "
                  f"{_e(p.get('max_abs', p.get('error')))} |" for p in bad]
    for side in ("torch", "paddle"):
        if doc["unpaired"][side]:
            lines += ["", f"## Unpaired {side} layer calls", ""] + [f"- `{k}`" for k in doc["unpaired"][side]]
    if doc["unpaired_declared"]:
        lines += ["", "## Declared unpaired layer calls (`unpaired_ok`)", ""]
        lines += [f"- {d['side']} `{d['call']}`: {d['reason']}" for d in doc["unpaired_declared"]]
    lines += ["", f"## Every layer output ({len(rows)}, torch execution order)", ""] + _table(rows, truth) + [""]
    return "\n".join(lines)


def plot_png(doc: dict) -> bytes:
    """The errors of every layer output in execution order, log scale, with the structure bound."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [r for r in doc["layers"] if "error" not in r]
    idx = [r["index"] for r in rows]
    fig, ax = plt.subplots(figsize=(12, 4.5), dpi=100)
    tiny = 1e-20  # exact zeros drawn at the bottom of the log axis
    series = [("fp64_scaled", "float64 Paddle vs torch (structure)", "tab:red"),
              ("torch_fp32_vs_truth", "torch fp32 to truth", "tab:blue"),
              ("paddle_fp32_vs_truth", "Paddle fp32 to truth", "tab:orange"),
              ("scaled", "fp32 Paddle vs torch", "tab:grey")]
    for key, label, color in series:
        pts = [(i, max(r[key], tiny)) for i, r in zip(idx, rows) if key in r]
        if pts:
            ax.scatter(*zip(*pts), s=8, label=label, color=color, alpha=0.7)
    ax.axhline(doc["settings"]["structure_bound"], color="tab:red", lw=0.8, ls="--", label="structure bound")
    ax.set_yscale("log")
    ax.set_xlabel("layer output (torch execution order)")
    ax.set_ylabel("scaled error")
    ax.set_title(f"Port comparison: {'PASS' if doc['passed'] else 'FAIL'}")
    ax.legend(fontsize=8, loc="upper left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# Gradient rows fail a JUnit case only when structural: their precision is judged once, as the median over the
# parameters (`portcheck.verdicts.GRADIENT_MEDIAN_RATIO_LIMIT`), and a measured kink (`portcheck.kinks`) is no fault.
GRADIENT_ROW_PASSING = ("exact", "less precise", "follows a kink", "unused by the loss")


def junit_xml(doc: dict) -> bytes:
    """One test case per paired layer output (failing: structural or less precise), one per gradient row (failing:
    structural), one per unpaired call and one for the parameters."""
    suite = ET.Element("testsuite", name="portcheck", time=f"{doc['timings']['total_s']:.3f}")
    cases = 0
    g = doc.get("gradients") or {}
    for cls, r in ([("portcheck.layers", r) for r in doc["layers"] + doc["running_stats"]]
                   + [("portcheck.gradients", r) for r in g.get("layers", []) + g.get("parameters", [])
                      + g.get("inputs", [])]):
        case = ET.SubElement(suite, "testcase", classname=cls, name=f"{r['torch']} -> {r['paddle']}")
        passing = ("exact", "framework convention") if cls == "portcheck.layers" else GRADIENT_ROW_PASSING
        if not (r["verdict"] in passing or r["verdict"].startswith("kink of")):
            msg = r.get("error") or r.get("finding") or f"{r['verdict']}: fp64 scaled {_e(r.get('fp64_scaled'))}, " \
                f"ratio {_e(r.get('ratio'))}, fp32 scaled {_e(r.get('scaled'))}"
            ET.SubElement(case, "failure", message=msg, type=r["verdict"])
        cases += 1
    for side in ("torch", "paddle"):
        for k in doc["unpaired"][side]:
            case = ET.SubElement(suite, "testcase", classname="portcheck.unpaired", name=f"{side} {k}")
            ET.SubElement(case, "failure", message=f"{side} call {k} has no counterpart", type="unpaired")
            cases += 1
    for d in doc["unpaired_declared"]:
        case = ET.SubElement(suite, "testcase", classname="portcheck.unpaired", name=f"{d['side']} {d['call']}")
        ET.SubElement(case, "skipped", message=d["reason"])
        cases += 1
    case = ET.SubElement(suite, "testcase", classname="portcheck.parameters", name="every parameter and buffer")
    s = doc["summary"]
    if s["parameters_differing"] or s["parameters_unpaired"]:
        ET.SubElement(case, "failure", type="parameters",
                      message=f"{s['parameters_differing']} differing, {s['parameters_unpaired']} unpaired")
    suite.set("tests", str(cases + 1))
    suite.set("failures", str(sum(1 for c in suite.iter("failure"))))
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True)


def write_report(out: str | Path, doc: dict) -> None:
    """report.json, report.md and report.png into folder `out`, atomically."""
    data = (json.dumps(json_safe(doc), indent=1, allow_nan=False) + "\n").encode()
    write_folder_atomic(out, {"report.json": data, "report.md": render_markdown(doc).encode(),
                              "report.png": plot_png(doc)})


def write_junit(path: str | Path, doc: dict) -> None:
    write_atomic(path, junit_xml(json_safe(doc)))
