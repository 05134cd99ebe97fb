"""The result of `portcheck.compare`: rows per paired layer output (torch execution order), what was left
unpaired, every parameter, the running statistics (train mode), notes, settings and timings; the verdicts derived
from them (`passed`, `first_diverging`, `failure_line`) and the summary a report shows."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from portcheck.backward import gradient_failure_line, gradient_summary

__all__ = ["Comparison"]


def _e(x) -> str:
    return "-" if x is None else f"{x:.2e}"


@dataclass(frozen=True)
class Comparison:
    rows: list[dict]
    unpaired_torch: list[str]
    unpaired_paddle: list[str]
    parameters: list[dict]
    parameters_unpaired_torch: list[str]
    parameters_unpaired_paddle: list[str]
    running_stats: list[dict] = field(default_factory=list)
    modules: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    gradients: dict = field(default_factory=dict)  # `portcheck.backward.compare_backward`'s rows (backward=True)
    unpaired_declared: list[dict] = field(default_factory=list)  # calls excused by `unpaired_ok`, with the reason

    @property
    def first_diverging(self) -> dict | None:
        """The first row, in torch execution order, whose structure verdict fails (a leaf before its parents)."""
        return next((r for r in self.rows if not r["structure"]), None)

    @property
    def first_less_precise(self) -> dict | None:
        """The first structurally exact row whose precision verdict fails."""
        return next((r for r in self.rows if r["structure"] and r["precision"] is False), None)

    @property
    def parameters_differing(self) -> list[dict]:
        return [p for p in self.parameters if not p["ok"]]

    @property
    def gradients_passed(self) -> bool:
        return not self.gradients or gradient_summary(self.gradients)["passed"]

    @property
    def passed(self) -> bool:
        """Structure passes for every paired output and running statistic (a running statistic may differ by a named
        framework convention), no undeclared unpaired call, every weight paired and identical, the gradients pass
        (backward=True); and, unless settings["precision"] is "informative", no less precise output."""
        gate = self.settings.get("precision", "gate") == "gate"
        rows_ok = all(r["structure"] and (r["precision"] is not False or not gate) for r in self.rows)
        stats_ok = all((r["structure"] or r.get("convention")) and (r["precision"] is not False or not gate)
                       for r in self.running_stats)
        return (rows_ok and stats_ok and self.gradients_passed and not self.unpaired_torch and not self.unpaired_paddle
                and not self.parameters_differing
                and not self.parameters_unpaired_torch and not self.parameters_unpaired_paddle)

    def summary(self) -> dict:
        first, less = self.first_diverging, self.first_less_precise
        ratios = [r["ratio"] for r in self.rows if "ratio" in r]
        fp64 = [r["fp64_scaled"] for r in self.rows if "fp64_scaled" in r]
        rules = {}
        for r in self.rows:
            rules[r["rule"]] = rules.get(r["rule"], 0) + 1
        return {
            "passed": self.passed,
            "layer_outputs": len(self.rows),
            "pairs_by_rule": rules,
            "structure_failing": sum(not r["structure"] for r in self.rows),
            "precision_failing": sum(r["precision"] is False for r in self.rows),
            "first_diverging": {"torch": first["torch"], "paddle": first["paddle"]} if first else None,
            "first_less_precise": {"torch": less["torch"], "paddle": less["paddle"]} if less else None,
            "worst_fp64_scaled": max(fp64, default=None),
            "worst_ratio": max(ratios, default=None),
            "final_ratio": self.rows[-1].get("ratio") if self.rows else None,
            "unpaired_torch": len(self.unpaired_torch),
            "unpaired_paddle": len(self.unpaired_paddle),
            "unpaired_declared": len(self.unpaired_declared),
            "parameters": len(self.parameters),
            "parameters_differing": len(self.parameters_differing),
            "parameters_unpaired": len(self.parameters_unpaired_torch) + len(self.parameters_unpaired_paddle),
            "running_stats_failing": sum((not r["structure"] and not r.get("convention")) or r["precision"] is False
                                         for r in self.running_stats),
            "running_stats_conventions": sum(bool(r.get("convention")) for r in self.running_stats),
            "gradients": gradient_summary(self.gradients) if self.gradients else None,
        }

    def failure_line(self) -> str | None:
        """One line naming what fails first: a structural layer, an unpaired call or tensor, a less precise layer."""
        first = self.first_diverging or next((r for r in self.running_stats
                                              if not r["structure"] and not r.get("convention")), None)
        if first is not None:
            if "error" in first:
                figures = first["error"]
            elif "fp64_scaled" in first:
                figures = (f"float64 runs differ by {_e(first['fp64_scaled'])} scaled > "
                           f"{_e(self.settings['structure_bound'])}; float32 max abs {_e(first['max_abs'])}")
            else:
                figures = f"float32 scaled error {_e(first['scaled'])} > {_e(self.settings['structure_bound'])}"
            finding = f"; finding: {first['finding']}" if first.get("finding") else ""
            return f"first diverging layer: torch `{first['torch']}` / Paddle `{first['paddle']}` ({figures}{finding})"
        if self.unpaired_torch or self.unpaired_paddle:
            return (f"unpaired layer calls: torch {self.unpaired_torch[:5]}, Paddle {self.unpaired_paddle[:5]} "
                    f"(a rename table or --pairing order may pair them)")
        bad = self.parameters_differing
        if bad or self.parameters_unpaired_torch or self.parameters_unpaired_paddle:
            names = [f"{p['torch']} / {p['paddle']}" for p in bad[:5]]
            return (f"parameters differ: {names}; unpaired torch {self.parameters_unpaired_torch[:5]}, "
                    f"Paddle {self.parameters_unpaired_paddle[:5]}")
        if self.gradients and not self.gradients_passed:
            return gradient_failure_line(self.gradients, self.gradients["structure_bound"])
        less = self.first_less_precise or next((r for r in self.running_stats if r["precision"] is False), None)
        if less is not None:
            return (f"structurally exact but less precise: torch `{less['torch']}` / Paddle `{less['paddle']}` "
                    f"(Paddle fp32 {_e(less['paddle_fp32_vs_truth'])} vs torch fp32 "
                    f"{_e(less['torch_fp32_vs_truth'])} from the float64 truth, ratio {less['ratio']:.2f} > "
                    f"{self.settings['ratio_limit']:g} + floor {_e(self.settings['floor'])})")
        return None

    def as_dict(self) -> dict:
        return {"passed": self.passed, "summary": self.summary(), "failure": self.failure_line(), **asdict(self)}
