"""Train-mode BatchNorm (`compare(..., train=True)`): the running statistics after the pass, compared like layer
outputs, and the two frameworks' momentum conventions spelled out.

torch updates `running = (1 - m_torch) * running + m_torch * batch` (default m_torch = 0.1); Paddle updates
`running = m_paddle * running + (1 - m_paddle) * batch` (default m_paddle = 0.9). The same update therefore needs
m_paddle = 1 - m_torch; any other pair is reported. torch's running variance uses the unbiased batch variance
(divided by n - 1, n values per channel). Where the float64 statistics differ, the row's `finding` names the known
framework difference that reproduces Paddle's value exactly (measured with Paddle 3.3: the biased variance, and the
momentum rounded to float32 inside the kernel). When that finding is only these framework conventions (and the
momenta describe the same update), the row is a named framework convention, not a port bug: its verdict is
"framework convention" (the report gives its line) and it does not fail the comparison; its precision is judged
against each framework's own float64 run (Paddle fp32 vs Paddle fp64 against torch fp32 vs torch fp64). A
momentum of the wrong convention, or a difference nothing explains, still fails.
"""
from __future__ import annotations

import numpy as np

from portcheck.metrics import ratio, scaled_error
from portcheck.verdicts import STRUCTURE_SCALED_FP64, judge_outputs, verdict_of, within_truth

__all__ = ["running_stat_rows", "batchnorm_notes", "same_update", "explain_running_stat", "CONVENTION"]

CONVENTION = "framework convention"

STATS = (("mean", "running_mean", "_mean"), ("variance", "running_var", "_variance"))
# Two momenta describe the same update when m_paddle = 1 - m_torch up to float rounding of the stored numbers.
MOMENTUM_ATOL = 1e-9


def same_update(torch_momentum: float | None, paddle_momentum: float) -> bool:
    """Whether torch's momentum and Paddle's give the same running-statistics update (None: torch's cumulative
    average, which Paddle has not)."""
    return torch_momentum is not None and abs(float(paddle_momentum) - (1.0 - float(torch_momentum))) <= MOMENTUM_ATOL


def batchnorm_notes(pairs: list[tuple]) -> list[str]:
    notes = ["train=True: BatchNorm layers use batch statistics and update their running statistics (on copies; "
             "the models passed in are unchanged). torch momentum m is Paddle momentum 1 - m: torch "
             "new = (1 - m) old + m batch, Paddle new = m old + (1 - m) batch"]
    for tn, pn, tbn, pbn in pairs:
        if not same_update(tbn.momentum, pbn._momentum):
            notes.append(f"BatchNorm momentum differs: torch `{tn}` momentum {tbn.momentum} vs Paddle `{pn}` "
                         f"momentum {pbn._momentum} (the same update needs Paddle = 1 - torch)")
    return notes


def _per_channel_count(t64, tn: str) -> int | None:
    """n, the values per channel the BatchNorm saw (its only call's output size / channels), or None."""
    if f"{tn}#1" in t64.keys or f"{tn}#0" not in t64.outputs:
        return None
    out = t64.outputs[f"{tn}#0"][0]
    return out.size // out.shape[1]


def explain_running_stat(stat: str, tn: str, pn: str, tbn, pbn, runs: dict) -> str | None:
    """When the float64 running statistic differs, which known framework difference reproduces Paddle's value
    exactly from torch's: its momentum rounded to float32 inside the kernel, the biased batch variance (divided by
    n, not n - 1), or both. The batch statistic is recovered from torch's update; None when nothing explains it."""
    t64, p64 = runs["torch64"], runs["paddle64"]
    n = _per_channel_count(t64, tn) if t64 is not None else None
    if n is None or n < 2 or tbn.momentum is None:
        return None
    m = float(tbn.momentum)
    old = (tbn.running_mean if stat == "mean" else tbn.running_var).detach().cpu().double().numpy()
    batch = (t64.stats[tn][stat] - (1.0 - m) * old) / m
    momenta = {"exact": float(pbn._momentum), "float32": float(np.float32(pbn._momentum))}
    variances = {"unbiased": batch, "biased": batch * (n - 1) / n} if stat == "variance" else {"unbiased": batch}
    for (mk, mp), (vk, b) in ((mm, vv) for mm in momenta.items() for vv in variances.items()):
        predicted = mp * old + (1.0 - mp) * b
        if (mk, vk) != ("exact", "unbiased") and scaled_error(predicted, p64.stats[pn][stat]) <= STRUCTURE_SCALED_FP64:
            causes = ([] if same_update(tbn.momentum, pbn._momentum) else
                      [f"Paddle's momentum {pbn._momentum:g} is not 1 - torch's {m:g} (the conventions are opposite)"])
            causes += ([f"Paddle's kernel rounds its momentum {pbn._momentum:g} to float32 (even in a float64 run)"]
                       if mk == "float32" else [])
            causes += ([f"Paddle updates the running variance with the biased batch variance (divided by n = {n}), "
                        "torch with the unbiased one (n - 1)"] if vk == "biased" else [])
            return "; ".join(causes)
    return None


def running_stat_rows(pairs: list[tuple], runs: dict) -> list[dict]:
    """Rows for the running mean and variance of every paired BatchNorm after the pass (both verdicts)."""
    rows = []
    t32, p32, t64, p64 = runs["torch32"], runs["paddle32"], runs["torch64"], runs["paddle64"]
    for tn, pn, tbn, pbn in pairs:
        if tn not in t32.stats or pn not in p32.stats:
            continue
        for stat, tname, pname in STATS:
            truth = (t64.stats[tn][stat], p64.stats[pn][stat]) if t64 is not None else (None, None)
            row = {"torch": f"{tn}.{tname}" if tn else tname, "paddle": f"{pn}.{pname}" if pn else pname,
                   **judge_outputs(t32.stats[tn][stat], p32.stats[pn][stat], *truth)}
            finding = explain_running_stat(stat, tn, pn, tbn, pbn, runs) if not row["structure"] else None
            if finding:
                row["finding"] = finding
            if finding and same_update(tbn.momentum, pbn._momentum):
                _as_convention(row, t32.stats[tn][stat], p32.stats[pn][stat], t64.stats[tn][stat],
                               p64.stats[pn][stat])
            rows.append(row)
    for row in rows:
        if row.get("convention"):
            row["verdict"] = CONVENTION if row["precision"] else "less precise"
        else:
            row["verdict"] = verdict_of(row)
    return rows


def _as_convention(row: dict, t32, p32, t64, p64) -> None:
    """A running statistic explained by framework conventions alone: each float32 run judged against its own
    framework's float64 run (the truth of that convention)."""
    own_t, own_p = scaled_error(t64, t32), scaled_error(p64, p32)
    row.update({"convention": row["finding"], "torch_fp32_vs_truth": own_t, "paddle_fp32_vs_truth": own_p,
                "ratio": ratio(own_p, own_t), "truth": "each framework's own float64 run",
                "precision": within_truth(own_p, own_t)})
