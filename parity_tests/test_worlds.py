"""Parity on more than one world (issue #11): several weight draws, view counts and pose sources, each judged
against a float64 truth (the torch reference run in float64 on the same inputs).

For every combination: the truth's RGBA has contrast (a flat render would make agreement meaningless), Paddle
eager fp32 and the fp32 predictor are no further from the truth than torch fp32 is (Paddle's excess-error ratio,
worst case and median over the combinations), the sheet features are compared too, the written uint8 frames
agree with the torch reference's, and the bf16 predictor holds its PSNR bar against the truth. At 256 px every
world's written frames are checked again, and the case the issue was filed on (256 px, 3 views, a 300x200 frame)
is judged against its own float64 truth, bf16 included.

Exported graphs: a predictor graph set is named by its weights, size and view count (and precision), so the worlds
are chosen to need few of them: the two seeded worlds both use 4 views (the blob world's point is its pose, not its
view count; 1 and 3 views stay covered by the narrow and wide draws, and 3 seeded views by the issue's case), and the
seeded draw is exported under the session's weights label into the session cache (`graph_cache`), where any graph
another test already exported is found instead of exported again.
"""
from __future__ import annotations

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
from parity_tests.harness import models_for_draw, release_models, sheet_input

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
    World(SEEDED, 4, "sample", (256, 256)),
    World(DRAWS["narrow"], 1, "blob", (300, 200)),
    World(DRAWS["wide"], 3, "thin", (200, 300)),
    World(SEEDED, 4, "blob", (333, 211)),  # 4 views: the sample world's graphs (module docstring)
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
    """Where a world's predictors find their graphs: the cache folder and the weights label of the cache key."""

    cache: Path
    label: str


def _run_world(world: World, size: int, models: tuple, samples, folder: Path, graphs: Graphs, *,
               truth: bool, bf16: bool) -> tuple[dict, set[Path]]:
    """One world at one size on `models` (its draw's torch reference and Paddle port): torch fp32, Paddle eager fp32,
    the fp32 predictor; the float64 truth (torch in float64) and the bf16 predictor (on a CPU with bfloat16) when
    asked. Returns the outputs and the graph folders the predictors exported (not those found in the cache)."""
    from conr_torch_ref.model import float64_copy

    from conr_common.platform.cpu import bf16_support
    from conr_engines.inference.predictor import PredictorRunner

    np.savez(folder / "0.npz", i=_udp_frame(world.pose, world.frame_hw, samples))
    pose = load_udp_pose(folder / "0.npz", size)
    sheet = sheet_input(samples, size, world.views)
    xyz, alpha = udp_arrays([pose])
    tm, pm = models
    T, P = torch.from_numpy, paddle.to_tensor
    out: dict = {"pose": pose}
    with torch.no_grad(), paddle.no_grad():
        t_sheet = tm.parse_sheet(T(sheet))
        out["t32"] = tm.render(t_sheet, T(xyz), T(alpha)).numpy()
        out["sheet_t"] = t_sheet.features[0].numpy()
        if truth:
            tm64 = float64_copy(tm)
            s64 = tm64.parse_sheet(T(sheet.astype(np.float64)))
            out["t64"] = tm64.render(s64, T(xyz.astype(np.float64)), T(alpha.astype(np.float64))).numpy()
            out["sheet_truth"] = s64.features[0].numpy()
            del tm64, s64
        p_sheet = pm.parse_sheet(P(sheet))
        out["p32"] = pm.render(p_sheet, P(xyz), P(alpha)).numpy()
        out["sheet_p"] = p_sheet.features[0].numpy()
    precisions = ["fp32"] + (["bf16"] if bf16 and bf16_support()[0] else [])
    folders = set()
    for precision in precisions:
        runner = PredictorRunner(pm, graphs.label, size=size, views=world.views, precision=precision,
                                 cache_dir=graphs.cache)
        out["pred" if precision == "fp32" else "bf16"] = runner.render(runner.parse_sheet(sheet), xyz, alpha)
        if runner.exported:
            folders.add(runner.folder)
        del runner
    return out, folders


@pytest.fixture(scope="module")
def world_results(official_states, torch_model, paddle_model, weights_label, samples, graph_cache, tmp_path_factory):
    """{size: {world id: outputs}}. At 128 px every world: torch fp32, torch fp64 (truth), Paddle eager fp32, the
    fp32 and the bf16 predictor. At 256 px every world and the issue's case: torch fp32, Paddle eager and the fp32
    predictor; the issue's case also with the float64 truth and the bf16 predictor.

    One weight draw at a time: its models are built once for both sizes (the seeded draw is the session's pair,
    built by nobody here) and released before the next. Its graphs go to the session cache (its compiled operators),
    the seeded draw's under the session's weights label (`weights_label`: graphs other tests exported are reused),
    the other draws' under labels of their own; the graph sets this module exported are removed once their draw is
    done (no later test uses them), those it found are left for the tests that exported them."""
    jobs = [(w, SIZE, True, True) for w in WORLDS]
    jobs += [(w, SIZE_LARGE, w == HARD_CASE, w == HARD_CASE) for w in WORLDS + [HARD_CASE]]
    out: dict[int, dict] = {SIZE: {}, SIZE_LARGE: {}}
    for draw in dict.fromkeys(w.draw for w, _, _, _ in jobs):
        models = models_for_draw(draw, official_states, seeded_models=(torch_model, paddle_model))
        graphs = Graphs(graph_cache, weights_label if draw == SEEDED else f"world-{draw!r}")
        folders: set[Path] = set()
        for world, size, truth, bf16 in (job for job in jobs if job[0].draw == draw):
            folder = tmp_path_factory.mktemp(f"{world.id}-{size}")
            out[size][world.id], used = _run_world(world, size, models, samples, folder, graphs, truth=truth,
                                                   bf16=bf16)
            folders |= used
        del models
        release_models()
        for folder in folders:
            shutil.rmtree(folder)
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
