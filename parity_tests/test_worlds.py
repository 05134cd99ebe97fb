"""Parity on more than one world (issue #11): several weight draws, view counts and pose sources, each judged
against a float64 truth (the torch reference run in float64 on the same inputs).

For every combination: the truth's RGBA has contrast (a flat render would make agreement meaningless), Paddle
eager fp32 and the fp32 predictor are no further from the truth than torch fp32 is (Paddle's excess-error ratio,
worst case and median over the combinations), the sheet features are compared too, the written uint8 frames
agree with the torch reference's, and the bf16 predictor holds its PSNR bar against the truth. At 256 px every
world's written frames are checked again, and the case the issue was filed on (256 px, 3 views, a 300x200 frame)
is judged against its own float64 truth, bf16 included.

Exported graphs: a predictor graph set is named by its weights, size and view count (and precision), and each one
costs seconds of tracing (its parameters, ~0.4 GB, are written once per weight set and shared by its graph sets:
`conr_engines.export.cache.cached_params`), so the worlds are chosen to need few of them. The two seeded worlds use 2
views, the view count the predictor tests render at 128 px (test_predictor_parity, test_custom_ops,
test_predictor): the seeded draw is exported under the session's weights label into the session cache
(`graph_cache`), so its 128 px fp32 and bf16 graphs are shared with those tests (whichever needs a set first exports
it, under the cache's lock: under xdist the other worker may be first; this module leaves them in the cache), and
both seeded worlds share one 256 px graph set. The blob world's
point is its pose, not its view count; 1 and 3 views stay covered by the narrow and wide draws, 3 seeded views by
the issue's case, and 4 views end to end by test_end_to_end (128 and 256 px). A graph set is created once and
renders every world that uses it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import statistics
from pathlib import Path

import numpy as np
import paddle
import pytest
import torch

from conr_common.verification.compare import diff, pixel_agreement
from conr_common.verification.draws import DRAWS, SEEDED, WeightDraw
from conr_common.data.pipeline import load_udp_pose, paste_back, to_uint8, udp_arrays
from conr_common.verification.compare import psnr_db
from conr_common.verification.tolerances import (BF16_MIN_PSNR_DB, MIN_RENDER_STD, PIXEL_MAX_LEVELS, PIXEL_MIN_IDENTICAL_WORLDS,
                                    WORLD_RATIO_MEDIAN, WORLD_RATIO_WORST)
from parity_tests.harness import paddle_like, release_models, sheet_input, torch_for_draw

pytestmark = pytest.mark.slow
SIZE = 128


@dataclasses.dataclass(frozen=True)
class World:
    draw: WeightDraw
    views: int
    pose: str  # "sample", "blob", "thin"
    frame_hw: tuple[int, int]

    @property
    def id(self) -> str:
        return f"{self.draw.name}-{self.views}views-{self.pose}-{self.frame_hw[0]}x{self.frame_hw[1]}"


WORLDS = [
    World(SEEDED, 2, "sample", (256, 256)),  # 2 views: the session's 128 px graphs (module docstring)
    World(DRAWS["narrow"], 1, "blob", (300, 200)),
    World(DRAWS["wide"], 3, "thin", (200, 300)),
    World(SEEDED, 2, "blob", (333, 211)),
]


# The case issue #11 was filed on: 256 px, 3 sheet views, a 300x200 UDP frame, He-normal weights (the seeded draw).
HARD_CASE = World(SEEDED, 3, "sample", (300, 200))
SIZE_LARGE = 256


def _udp_frame(kind: str, hw: tuple[int, int], samples) -> np.ndarray:
    """A UDP frame (H, W, 4): A-pose xyz in [0, 1] and visibility, generated here (no file from the samples
    except for "sample", which re-frames the first sample pose into an odd-sized canvas)."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w, 4), np.float32)
    if kind == "sample":
        src = np.load(sorted(Path(samples.poses).glob("*.npz"))[0])["i"]
        sh, sw = min(h, src.shape[0]), min(w, src.shape[1])
        out[:sh, :sw] = src[:sh, :sw]
        return out
    if kind == "blob":  # one large ellipse, smooth coordinates: badly conditioned norms (large flat areas)
        inside = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w / 2) / (0.38 * w)) ** 2 <= 1.0
    else:  # thin strokes: a cross and a diagonal, 3 px wide
        inside = (np.abs(yy - h / 2) < 1.5) | (np.abs(xx - w / 3) < 1.5) | (np.abs(yy - xx * h / w) < 1.5)
    out[..., 0] = xx / (w - 1)
    out[..., 1] = yy / (h - 1)
    out[..., 2] = 0.5 + 0.4 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
    out[..., 3] = 1.0
    out[~inside] = 0.0
    return out


@dataclasses.dataclass(frozen=True)
class Graphs:
    """Where a world's predictors find their graphs: the cache folder and the weights label of the cache key.
    session: the label is the session's weights (`weights_label`), whose 128 px / 2-view sets the predictor tests
    render too (module docstring)."""

    cache: Path
    label: str
    session: bool

    def kept(self, size: int, views: int) -> bool:
        """Whether a set this module exported stays in the cache: only the ones other tests render."""
        return self.session and (size, views) == (SIZE, 2)


@dataclasses.dataclass(frozen=True)
class Job:
    """One world at one size: torch fp32, Paddle eager and the fp32 predictor always; the float64 truth and the bf16
    predictor when asked."""

    world: World
    size: int
    truth: bool
    bf16: bool

    @property
    def graph_sets(self) -> list[tuple[int, int, str]]:
        """The predictor graph sets this job renders with: (size, views, precision)."""
        from conr_common.platform.cpu import bf16_support

        bf16 = self.bf16 and bf16_support()[0]
        return [(self.size, self.world.views, p) for p in ["fp32"] + (["bf16"] if bf16 else [])]


JOBS = [Job(w, SIZE, True, True) for w in WORLDS]
JOBS += [Job(w, SIZE_LARGE, w == HARD_CASE, w == HARD_CASE) for w in WORLDS + [HARD_CASE]]
PREDICTOR_KEYS = {"fp32": "pred", "bf16": "bf16"}


@dataclasses.dataclass(frozen=True)
class Inputs:
    """A job's inputs: the cropped pose (for the paste-back), the sheet, xyz and alpha (float32). sheet_key: (size,
    views), which names the sheet: jobs of one size and view count share it (`sheet_input`)."""

    pose: object
    sheet: np.ndarray
    sheet_key: tuple[int, int]
    xyz: np.ndarray
    alpha: np.ndarray


def _inputs(job: Job, samples, folder: Path) -> Inputs:
    np.savez(folder / "0.npz", i=_udp_frame(job.world.pose, job.world.frame_hw, samples))
    pose = load_udp_pose(folder / "0.npz", job.size)
    xyz, alpha = udp_arrays([pose])
    return Inputs(pose, sheet_input(samples, job.size, job.world.views), (job.size, job.world.views), xyz, alpha)


def _parsed(parse, x: Inputs, sheets: dict):
    """`parse(x.sheet)`, once per sheet: `sheets` ({sheet_key: parsed sheet}) belongs to one model and dtype. The
    two seeded 2-view worlds share their sheet at each size, so each engine parses it once there."""
    if x.sheet_key not in sheets:
        sheets[x.sheet_key] = parse(x.sheet)
    return sheets[x.sheet_key]


def _render(model, framework, x: Inputs, sheets: dict, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(RGBA, deepest sheet feature) of one eager model on `x` cast to `dtype` (torch or paddle as `framework`);
    `sheets`: the sheets this model parsed in `dtype` (`_parsed`)."""
    t = torch.from_numpy if framework is torch else paddle.to_tensor
    with torch.no_grad(), paddle.no_grad():
        sheet = _parsed(lambda rgba: model.parse_sheet(t(rgba.astype(dtype))), x, sheets)
        rgba = model.render(sheet, t(x.xyz.astype(dtype)), t(x.alpha.astype(dtype)))
        return rgba.numpy(), sheet.features[0].numpy()


@contextlib.contextmanager
def _float64_referee(tm):
    """`tm` itself as the float64 referee for the block: converted to float64 in place, no float64 copy beside it
    (a copy held the fp32 model and its float64 twin at once, 0.7 GB more at this module's peak, which in a full run
    is the suite's), and converted back to float32 at the end: exact, every value was a float32 before (the
    session's model is checked by its end-of-session fingerprint, dtype and values)."""
    tm.double().eval()
    try:
        yield tm
    finally:
        tm.float()


def _torch_runs(jobs: list[Job], inputs: dict, tm, out: dict) -> None:
    """Torch fp32 for every job, then the float64 truth of the jobs that ask for it, on `tm` itself converted to
    float64 for the whole draw (`_float64_referee`); `tm` is float32 again when this returns."""
    sheets32, sheets64 = {}, {}
    for job in jobs:
        r = out[job.size][job.world.id] = {"pose": inputs[job].pose}
        r["t32"], r["sheet_t"] = _render(tm, torch, inputs[job], sheets32)
    del sheets32
    truth_jobs = [job for job in jobs if job.truth]
    if truth_jobs:
        release_models()  # the fp32 runs' freed activations back to the OS before the float64 ones (the module's peak)
        with _float64_referee(tm) as tm64:
            for job in truth_jobs:
                r = out[job.size][job.world.id]
                r["t64"], r["sheet_truth"] = _render(tm64, torch, inputs[job], sheets64, np.float64)
            del sheets64  # float64 tensors of the model about to be float32 again


def _paddle_runs(jobs: list[Job], inputs: dict, pm, out: dict) -> None:
    """Paddle eager for every job."""
    sheets = {}
    for job in jobs:
        r = out[job.size][job.world.id]
        r["p32"], r["sheet_p"] = _render(pm, paddle, inputs[job], sheets)


def _predictors(jobs: list[Job], inputs: dict, pm, graphs: Graphs, out: dict) -> None:
    """Every predictor graph set the jobs need, one at a time: created once, rendering every job that uses it, then
    dropped; a set this module exported is removed at once unless later tests render it too (`Graphs.kept`), one it
    found is left. A sheet is parsed once for both precisions: the predictor parses it with the eager parser of `pm`
    in float64 whatever the graphs' precision (`PredictorRunner.parse_sheet`)."""
    from conr_engines.inference.predictor import PredictorRunner

    params, sheets = set(), {}
    for size, views, precision in dict.fromkeys(key for job in jobs for key in job.graph_sets):
        runner = PredictorRunner(pm, graphs.label, size=size, views=views, precision=precision,
                                 cache_dir=graphs.cache)
        for job in (j for j in jobs if (size, views, precision) in j.graph_sets):
            x = inputs[job]
            out[job.size][job.world.id][PREDICTOR_KEYS[precision]] = runner.render(
                _parsed(runner.parse_sheet, x, sheets), x.xyz, x.alpha)
        exported, folder = runner.exported, runner.folder
        params.add(runner.params_file.parent)
        del runner
        release_models()
        if exported and not graphs.kept(size, views):
            shutil.rmtree(folder)
    if not graphs.session:  # the draw's parameter folder (read by all its graph sets) is nobody else's
        for folder in params:
            shutil.rmtree(folder)


@pytest.fixture(scope="module")
def world_results(torch_model, paddle_model, weights_label, samples, graph_cache, tmp_path_factory):
    """{size: {world id: outputs}}. At 128 px every world: torch fp32, torch fp64 (truth), Paddle eager fp32, the
    fp32 and the bf16 predictor. At 256 px every world and the issue's case: torch fp32, Paddle eager and the fp32
    predictor; the issue's case also with the float64 truth and the bf16 predictor.

    One weight draw at a time, its models built once for both sizes (the seeded draw is the session's pair, built
    by nobody here) and released before the next: first the torch runs of the draw (fp32, then the float64 truth on
    the same model converted in place), then its Paddle model (another draw's is built from the torch model, which
    is then dropped) for the eager runs and the predictor graph sets, one at a time (`_predictors`). Graphs go to
    the session cache (its compiled operators), the seeded draw's under the session's weights label
    (`weights_label`: graphs other tests exported are reused), the other draws' under labels of their own."""
    out: dict[int, dict] = {SIZE: {}, SIZE_LARGE: {}}
    for draw in dict.fromkeys(job.world.draw for job in JOBS):
        jobs = [job for job in JOBS if job.world.draw == draw]
        inputs = {job: _inputs(job, samples, tmp_path_factory.mktemp(f"{job.world.id}-{job.size}")) for job in jobs}
        if draw == SEEDED:
            _torch_runs(jobs, inputs, torch_model, out)
            pm = paddle_model
        else:  # the draw's torch model alone, then its Paddle twin alone: never both with their activations
            tm = torch_for_draw(draw)
            _torch_runs(jobs, inputs, tm, out)
            pm = paddle_like(tm)
            del tm
            release_models()
        _paddle_runs(jobs, inputs, pm, out)
        graphs = Graphs(graph_cache, weights_label if draw == SEEDED else f"world-{draw!r}", draw == SEEDED)
        _predictors(jobs, inputs, pm, graphs, out)
        del pm
        release_models()
    return out


@pytest.fixture(scope="module")
def results(world_results):
    """Every world at 128 px (`world_results`)."""
    return world_results[SIZE]


@pytest.fixture(scope="module")
def results_256(world_results):
    """Every world and the issue's case at 256 px (`world_results`)."""
    return world_results[SIZE_LARGE]


def _ratio(r: dict, key: str) -> float:
    return diff(r["t64"], r[key]).max_abs / diff(r["t64"], r["t32"]).max_abs


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: w.id)
def test_world_has_contrast_and_paddle_is_no_further_from_the_truth(results, world):
    r = results[world.id]
    std = r["t64"][0].reshape(4, -1).std(axis=1)
    e_t, e_p, e_pred = (diff(r["t64"], r[k]).max_abs for k in ("t32", "p32", "pred"))
    print(f"\n{world.id}: RGBA std {np.round(std, 4)}; vs float64 truth: torch {e_t:.2e}, Paddle eager {e_p:.2e} "
          f"(ratio {e_p / e_t:.2f}), predictor {e_pred:.2e} (ratio {e_pred / e_t:.2f})")
    assert std.min() >= MIN_RENDER_STD, f"render nearly flat: std {std}"
    assert _ratio(r, "p32") <= WORLD_RATIO_WORST
    assert _ratio(r, "pred") <= WORLD_RATIO_WORST
    # the deepest sheet features, the largest float32 error of the step: Paddle parses them in float64
    st, sp = (diff(r["sheet_truth"], r[k]).scaled for k in ("sheet_t", "sheet_p"))
    print(f"sheet features vs truth: torch {st:.2e}, Paddle {sp:.2e} (scaled)")
    assert sp <= st


def _assert_frames_agree(r: dict, label: str) -> None:
    pose = r["pose"]
    ref = paste_back(to_uint8(r["t32"][0].transpose(1, 2, 0)), pose.crop, pose.frame_hw)
    for key in ("p32", "pred"):
        ours = paste_back(to_uint8(r[key][0].transpose(1, 2, 0)), pose.crop, pose.frame_hw)
        same, levels = pixel_agreement(ref, ours)
        print(f"{label} {key}: {same:.4%} identical, max {levels} level(s)")
        assert same >= PIXEL_MIN_IDENTICAL_WORLDS and levels <= PIXEL_MAX_LEVELS, (label, key, same, levels)


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: w.id)
def test_world_written_frames_agree_with_torch(results, world):
    _assert_frames_agree(results[world.id], world.id)


@pytest.mark.parametrize("world", WORLDS + [HARD_CASE], ids=lambda w: w.id)
def test_world_written_frames_agree_with_torch_at_256px(results_256, world):
    _assert_frames_agree(results_256[world.id], f"{world.id} @256")


def _assert_bf16_holds(r: dict, label: str) -> None:
    if "bf16" not in r:
        from conr_common.platform.cpu import bf16_support

        pytest.skip(f"no bf16 predictor: {bf16_support()[1]}")
    db = psnr_db(r["t64"], r["bf16"])
    print(f"{label}: bf16 predictor vs float64 truth {db:.1f} dB (fp32 predictor {psnr_db(r['t64'], r['pred']):.1f})")
    assert db >= BF16_MIN_PSNR_DB, (label, db)


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: w.id)
def test_world_bf16_holds_its_psnr_against_the_truth(results, world):
    _assert_bf16_holds(results[world.id], world.id)


def test_issue_case_at_256px_against_the_truth(results_256):
    """The case issue #11 was filed on: Paddle eager and the fp32 predictor no further from the float64 truth than
    torch fp32 (worst-case bound), and bf16 above its PSNR bar against the same truth."""
    r = results_256[HARD_CASE.id]
    std = r["t64"][0].reshape(4, -1).std(axis=1)
    assert std.min() >= MIN_RENDER_STD, f"render nearly flat: std {std}"
    for key in ("p32", "pred"):
        print(f"{HARD_CASE.id} @256 {key}: ratio {_ratio(r, key):.2f}")
        assert _ratio(r, key) <= WORLD_RATIO_WORST
    _assert_bf16_holds(r, f"{HARD_CASE.id} @256")


def test_median_ratio_over_worlds(results):
    for key in ("p32", "pred"):
        ratios = [_ratio(r, key) for r in results.values()]
        print(f"{key}: ratios {np.round(ratios, 2)}, median {statistics.median(ratios):.2f}")
        assert statistics.median(ratios) <= WORLD_RATIO_MEDIAN
