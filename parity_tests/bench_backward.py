"""Figures of CoNR's backward parity (README "Training parity"): portcheck's gradient comparison of the four
networks at 128 px, for a weight draw of `conr_common.verification.draws`, printed as one line per network.

    python -m parity_tests.bench_backward [--draw seeded] [--views 1] [--size 128]

Four forward+backward passes (torch and Paddle in float32, both in float64) of a fixed random projection of the
RGBA (`portcheck.backward`); per network: parameter gradients, how many fail the structure verdict, the median over
parameters of Paddle's float32 gradient distance to the float64 truth divided by torch's; then the input gradients
(sheet, xyz, alpha), the time of each pass and the peak RSS. Not a test: about 150 s and 10 GB on 2 cores.
"""
from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import time
from pathlib import Path


def build(draw_name: str):
    from conr_common.verification.draws import draw_named
    from conr_common.contract.manifest import torch_to_paddle
    from conr_paddle.model import load_networks, unloaded
    from conr_torch_ref.model import load_networks as load_torch
    from conr_torch_ref.model import unloaded as torch_unloaded
    from conr_torch_ref.seeded import seeded_state_dicts

    states = seeded_state_dicts(draw_named(draw_name))
    tm = load_torch(torch_unloaded(), states).eval()  # `unloaded`: declared, filled by the strict load
    pm = load_networks(unloaded(), {n: torch_to_paddle(n, {k: v.numpy() for k, v in s.items()})
                                      for n, s in states.items()})
    del states
    gc.collect()
    return tm, pm


def main(argv=None) -> int:
    from conr_common.platform.cpu import prepare_math_libraries

    prepare_math_libraries()  # eager Paddle as under the command line
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draw", default="seeded")
    p.add_argument("--views", type=int, default=1)
    p.add_argument("--size", type=int, default=128)
    args = p.parse_args(argv)
    from convert.backward import backward_lines, conr_backward
    from convert.verify import load_inputs

    tm, pm = build(args.draw)
    with tempfile.TemporaryDirectory() as work:
        sheet, xyz, alpha, _ = load_inputs(args.size, args.views, None, None, 0, Path(work))
    timings: dict = {}
    t0 = time.perf_counter()
    g = conr_backward(tm, pm, tuple(a.astype("float32") for a in (sheet, xyz, alpha)), timings=timings)
    print(f"draw {args.draw}, {args.size} px, {args.views} view(s): {time.perf_counter() - t0:.0f} s "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}), peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB")
    for net, f in g["networks"].items():
        print(f"  {net}: {f['parameters']} parameter gradients, structure failing {f['structure_failing']}, "
              f"worst fp64 scaled {f['worst_fp64_scaled']:.1e}, median ratio {f['median_parameter_ratio']:.3f}, "
              f"rows above the per-row ratio limit {f['rows_above_ratio_limit']}")
    for r in g["inputs"]:
        print(f"  {r['torch']}: fp64 scaled {r['fp64_scaled']:.1e}, ratio {r['ratio']:.3f}")
    for line in backward_lines(g):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
