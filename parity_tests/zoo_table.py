"""The README's zoo table: each pair of parity_tests/zoo.py compared by portcheck at 224 px, batch 1, seed 0.

    python -m parity_tests.zoo_table   # measure the three pairs (about 2 minutes on 2 cores) and rewrite the table

One pair is alive at a time (vgg11_bn is 132 M parameters, 4.5 GB resident during its float64 passes). The
"seconds" column is `compare`'s own wall time (its four passes and the pairing; building the models is not in it).
test_zoo.py checks every other column against the comparisons it runs itself, so the table cannot drift from what
the engine reports; the seconds are not re-timed.
"""
from __future__ import annotations

import argparse
import gc
from pathlib import Path

from parity_tests.zoo import ZOO, ZOO_BY_NAME, build_pair, image_batch

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"
SIZE, BATCH, SEED = 224, 1, 0
COLUMNS = ("pair (torchvision / paddle.vision)", "layer outputs paired", "unpaired calls (torch / Paddle)",
           "weights moved / differing", "structure (worst fp64 scaled)", "fp32 ratio: final (worst)", "precision",
           "first divergence", "seconds")


def _path(key: str) -> str:
    return key.rpartition("#")[0] or "(root)"


def table_row(name: str, comparison, transfer) -> tuple[str, ...]:
    """One row of the table from a comparison and the TransferReport of the weights it ran on."""
    s = comparison.summary()
    unpaired = f"{len(comparison.unpaired_torch)} / {len(comparison.unpaired_paddle)}"
    names = [f"`{_path(k)}`" for k in comparison.unpaired_torch + comparison.unpaired_paddle]
    names += [f"declared: {d['side']} `{_path(d['call'])}`, no parameters" for d in comparison.unpaired_declared]
    first, less = comparison.first_diverging, comparison.first_less_precise
    pair = ZOO_BY_NAME[name]
    return (
        f"{name} (`{pair.torch_callable.partition(':')[2]}` / `{pair.paddle_spec.partition(':')[2]}`)",
        str(s["layer_outputs"]),
        unpaired + (f" ({', '.join(names)})" if names else ""),
        f"{len(transfer.moves)} / {s['parameters_differing'] + s['parameters_unpaired']}",
        f"{'PASS' if s['structure_failing'] == 0 else 'FAIL'} ({s['worst_fp64_scaled']:.1e})",
        f"{s['final_ratio']:.2f} ({s['worst_ratio']:.2f})",
        "PASS" if less is None else (f"finding about the pair: Paddle's fp32 `{_path(less['torch'])}` is "
                                     f"{less['ratio']:.2f}x torch's distance from the truth (limit 2x)"),
        "none" if first is None else f"`{_path(first['torch'])}` / `{_path(first['paddle'])}`",
        f"{comparison.timings['total_s']:.1f}",
    )


def render(rows: list[tuple[str, ...]], cpu: str) -> str:
    lines = [f"Measured by `python -m parity_tests.zoo_table` ({SIZE} px, batch {BATCH}, seed {SEED}) on {cpu}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def readme_rows(text: str) -> dict[str, tuple[str, ...]]:
    """The table's rows in the README, keyed by pair name (empty when the markers are missing)."""
    if START not in text or END not in text:
        return {}
    body = text.split(START, 1)[1].split(END, 1)[0]
    rows = [tuple(c.strip() for c in line.strip().strip("|").split(" | ")) for line in body.splitlines()
            if line.startswith("| ") and not line.startswith("| pair ")]
    return {row[0].split(" ", 1)[0]: row for row in rows}


def readme_columns(text: str) -> tuple[str, ...]:
    body = text.split(START, 1)[1].split(END, 1)[0] if START in text else ""
    header = next((line for line in body.splitlines() if line.startswith("| pair ")), "")
    return tuple(c.strip() for c in header.strip().strip("|").split(" | ")) if header else ()


def measure(name: str) -> tuple[str, ...]:
    from portcheck import compare

    torch_model, paddle_model, transfer = build_pair(ZOO_BY_NAME[name], SEED)
    comparison = compare(torch_model, paddle_model, image_batch(SIZE, BATCH, SEED),
                         unpaired_ok=ZOO_BY_NAME[name].unpaired_ok)
    return table_row(name, comparison, transfer)


def cpu_name() -> str:
    from conr_common.platform.cpu import cpu_model, simd_flags, usable_cores

    import torch

    flags = simd_flags()
    avx512 = " with AVX-512" if "avx512f" in flags else ""
    return f"a {usable_cores()}-core {cpu_model()}{avx512}, {torch.get_num_threads()} thread(s) per framework"


def main(argv: list[str] | None = None) -> int:
    from conr_common.platform.cpu import prepare_math_libraries

    prepare_math_libraries()  # as in the suite (conftest), which checks this table
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    rows = []
    for pair in ZOO:
        rows.append(measure(pair.name))
        print(" | ".join(rows[-1]), flush=True)
        gc.collect()  # the previous pair's models go before the next is built
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{README}: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    from conr_common.platform.atomic import atomic_write_bytes

    table = render(rows, cpu_name())
    atomic_write_bytes(README, (head + START + "\n" + table + "\n" + END + rest.split(END, 1)[1]).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
