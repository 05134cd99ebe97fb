"""The web app (package conr_app.web, started by `python -m conr_app serve`, issue 16): its render function end to end, bad uploads, one job at a
time, cancel, the parity tab, the server on a free local port, and a real browser (Debian's headless chromium
through Selenium) uploading the sample and playing the rendered video.

Small on purpose: 128 px, eager Paddle, one or two frames per render. The session's seeded weights are converted
once for this module; in-process renders reuse the session's Paddle model instead of re-reading 720 MB.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from conr_app.cli import main as cli_main
from conr_app.web.context import AppContext
from conr_app.web.jobs import POSE_SOURCES, SHEET_SOURCES, Job, JobEvent, RenderRequest, RenderResult
from conr_app.web.uploads import Upload, check_sheet_view, stage_uploads

pytestmark = pytest.mark.slow  # the web app: renders, a server process and a browser

REPO = Path(__file__).resolve().parent.parent
SIZE = 128
BACKGROUND = "#3A6EA5"


# --------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture()
def ctx(pdparams_dir, weights_dir, tmp_path, paddle_model, monkeypatch):
    """An AppContext in a fresh work folder; the Renderer gets the session model (same tensors as the files)."""
    from conr_app.rendering.render import Renderer

    monkeypatch.setattr(Renderer, "_load_model", lambda self: paddle_model)
    (tmp_path / "uploads").mkdir()
    return AppContext(pdparams_dir, tmp_path / "work", tmp_path / "uploads", torch_dir=weights_dir)


def _upload(ctx: AppContext, src: Path, name: str | None = None) -> Upload:
    """What the web framework does with a browser upload: the file under its upload folder, its name kept."""
    folder = ctx.upload_root / f"u{len(list(ctx.upload_root.iterdir()))}"
    folder.mkdir()
    dest = folder / (name or src.name)
    shutil.copyfile(src, dest)
    return Upload.from_server_path(dest)


def _run(job: Job, timeout: float = 300) -> list[JobEvent]:
    events = []
    deadline = time.monotonic() + timeout
    for event in job.events():
        events.append(event)
        assert time.monotonic() < deadline, "job took too long"
    return events


def _jobs_left(ctx: AppContext) -> list[Path]:
    return list((ctx.work_root / "jobs").iterdir())


def _opaque_png(path: Path) -> Path:
    image = np.full((64, 64, 4), 255, np.uint8)
    image[:, :, 0] = 40
    cv2.imwrite(str(path), image)
    return path


# --------------------------------------------------------------------------------------------------- render


def test_render_function_end_to_end(ctx):
    """The sample character and two sample poses at 128 px: a frame event per frame, then MP4 over the background,
    WebM with alpha and a zip of the frames; the job folder is removed once the results are released."""
    request = RenderRequest(SHEET_SOURCES[0], (), POSE_SOURCES[0], (), sample_frames=2, size=SIZE, engine="eager",
                            fps=12.0, background=BACKGROUND)
    job = Job(request, ctx).start()
    events = _run(job)
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done", events[-1].message
    frames = [e for e in events if e.kind == "frame"]
    assert [(e.done, e.total) for e in frames] == [(1, 2), (2, 2)]
    result: RenderResult = events[-1].result
    assert len(result.frames) == 2 and all(p.is_file() for p in result.frames)
    assert result.engine == "eager" and result.seconds_per_frame > 0
    print(f"\nweb render: {result.seconds_per_frame:.2f} s per frame at {SIZE} px, 4 views, eager "
          f"({result.wall_seconds:.1f} s for the job)")

    rgba = [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA) for p in result.frames]
    assert all(f.shape == (256, 256, 4) for f in rgba)  # pasted back into the sample's 256 px pose frames
    assert all(f[:, :, 3].max() > 0 and f[:, :, 3].min() == 0 for f in rgba)  # a figure on transparency

    # MP4: two frames; a fully transparent pixel shows the background (H.264 yuv420p: a few levels off)
    cap = cv2.VideoCapture(str(result.mp4))
    decoded = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(decoded) == 2
    ys, xs = np.nonzero(rgba[0][:, :, 3] == 0)
    y, x = ys[0], xs[0]
    assert np.abs(decoded[0][y, x].astype(int) - [0x3A, 0x6E, 0xA5]).max() <= 6

    # WebM: VP9 with an alpha plane (ffmpeg reports the stream's alpha_mode)
    from conr_app.rendering.video import ffmpeg_exe

    probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(result.webm)], capture_output=True, text=True)
    assert "vp9" in probe.stderr and "alpha_mode" in probe.stderr, probe.stderr

    # zip: the frames exactly as written
    with zipfile.ZipFile(result.zip) as z:
        assert sorted(z.namelist()) == ["frames/0.png", "frames/1.png"]
        assert z.read("frames/0.png") == result.frames[0].read_bytes()

    folder = job.folder
    assert folder is not None and folder.is_dir()  # kept until the page has taken the results
    job.release()
    assert not folder.exists() and _jobs_left(ctx) == []


def test_uploaded_sheet_and_pose_image_path(ctx, samples):
    """Uploaded views (named so that natural order matters) and one uploaded RGBA pose image (parser path)."""
    sheet = [_upload(ctx, samples.character_sheet / "0_front.png", "view10.png"),
             _upload(ctx, samples.character_sheet / "1_back.png", "view2.png")]
    pose = _upload(ctx, samples.pose_images / "0.png", "walk.png")
    request = RenderRequest(SHEET_SOURCES[1], tuple(sheet), POSE_SOURCES[2], (pose,), pose_images=True, size=SIZE,
                            engine="eager", background="#ffffff")
    job = Job(request, ctx).start()
    events = _run(job)
    assert events[-1].kind == "done", events[-1].message
    result = events[-1].result
    assert [p.name for p in result.frames] == ["00000.png"]  # server-chosen names, not the browser's
    staged = sorted(p.name for p in (job.folder / "sheet").iterdir())
    assert staged == ["00000.png", "00001.png"]
    # view2 sorts before view10: the staged 00000.png is the back view
    assert (job.folder / "sheet" / "00000.png").read_bytes() == (samples.character_sheet / "1_back.png").read_bytes()
    job.release()
    assert _jobs_left(ctx) == []


# --------------------------------------------------------------------------------------------------- bad input


def _cli_error(args: list[str], capsys) -> str:
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err[len("error: "):]


def test_bad_sheet_upload_gives_the_cli_line(ctx, pdparams_dir, samples, tmp_path, capsys):
    """A fully opaque sheet view: the page's message is the CLI's line with the user's file name, and nothing is
    left behind."""
    sheet_dir = tmp_path / "cli_sheet"
    sheet_dir.mkdir()
    _opaque_png(sheet_dir / "opaque.png")
    cli = _cli_error(["render", "--weights", str(pdparams_dir), "--character-sheet", str(sheet_dir), "--poses",
                      str(samples.poses), "--out", str(tmp_path / "cli_out"), "--size", str(SIZE), "--quiet"], capsys)
    assert not (tmp_path / "cli_out").exists()

    up = _upload(ctx, sheet_dir / "opaque.png")
    request = RenderRequest(SHEET_SOURCES[1], (up,), POSE_SOURCES[0], (), sample_frames=1, size=SIZE, engine="eager")
    events = _run(Job(request, ctx).start())
    assert events[-1].kind == "error"
    assert events[-1].message == cli.replace(str(sheet_dir / "opaque.png"), "opaque.png")
    assert events[-1].message.startswith("opaque.png is 95% or more opaque")
    assert str(ctx.work_root) not in events[-1].message and "\n" not in events[-1].message
    assert _jobs_left(ctx) == []

    # the upload check (thumbnail) says the same, and a good view passes with its thumbnail
    image, caption = check_sheet_view(up, ctx)
    assert image is None and caption == events[-1].message
    image, caption = check_sheet_view(_upload(ctx, samples.character_sheet / "2_left.png"), ctx)
    assert image is not None and image.ndim == 3 and image.shape[2] == 3
    assert caption.startswith("2_left.png: ok")


@pytest.mark.parametrize("case", ["corrupt_npz", "wrong_type", "outside_uploads", "too_big", "too_many"])
def test_bad_pose_uploads(ctx, samples, tmp_path, case):
    """One line naming the user's file for each kind of bad pose upload; nothing written outside the job folder
    (the job folder itself removed)."""
    if case == "corrupt_npz":
        bad = tmp_path / "bad.npz"
        bad.write_bytes(b"PK\x03\x04 truncated")
        uploads, expected = (_upload(ctx, bad, "3.npz"),), "3.npz: corrupt or unreadable .npz"
    elif case == "wrong_type":
        uploads, expected = (_upload(ctx, samples.poses / "0.npz", "pose.txt"),), "pose.txt: UDP poses must be one of"
    elif case == "outside_uploads":
        uploads, expected = (Upload(samples.poses / "0.npz", "0.npz"),), "0.npz: not a file uploaded to this server"
    elif case == "too_big":
        ctx.limits = type(ctx.limits)(max_file_bytes=1000)
        uploads, expected = (_upload(ctx, samples.poses / "0.npz"),), "0.npz: "
        assert (samples.poses / "0.npz").stat().st_size > 1000
    else:
        ctx.limits = type(ctx.limits)(max_poses=2)
        uploads = tuple(_upload(ctx, samples.poses / f"{i}.npz") for i in range(3))
        expected = "3 UDP poses uploaded; at most 2 per job"
    outside_samples = lambda: {p for p in ctx.work_root.rglob("*") if "samples" not in p.parts}  # noqa: E731
    before = outside_samples()
    request = RenderRequest(SHEET_SOURCES[0], (), POSE_SOURCES[2], uploads, size=SIZE, engine="eager")
    events = _run(Job(request, ctx).start())
    assert events[-1].kind == "error"
    message = events[-1].message
    assert message.startswith(expected), message
    if case == "too_big":
        assert message.endswith("kB, over the 1.0 kB limit"), message
    assert "\n" not in message and str(ctx.work_root) not in message and str(ctx.upload_root) not in message
    assert _jobs_left(ctx) == []
    assert outside_samples() == before


def test_stage_uploads_never_uses_the_browser_name_as_a_path(ctx, samples, tmp_path):
    up = _upload(ctx, samples.poses / "0.npz")
    sneaky = Upload(up.path, "../../escape.npz")
    names = stage_uploads([sneaky], tmp_path / "staged", what="UDP poses", extensions=frozenset({".npz"}),
                          max_count=5, ctx=ctx)
    assert [p.name for p in (tmp_path / "staged").iterdir()] == ["00000.npz"]
    assert list(names.values()) == ["../../escape.npz"] and not (tmp_path.parent / "escape.npz").exists()


# --------------------------------------------------------------------------------------------------- queue


def test_one_job_at_a_time_and_cancel_while_waiting(ctx):
    """A second job waits for the first (the process-wide lock) and can be cancelled while it waits."""
    release = threading.Event()
    first_running = threading.Event()
    started: list[str] = []

    def slow(request, ctx_, folder, report, stop):
        started.append(request)
        first_running.set()
        assert folder.is_dir()
        release.wait(30)
        return "ok"

    first = Job("first", ctx, work=slow).start()
    assert first_running.wait(30), "the first job never started"  # its thread runs on its own schedule
    second = Job("second", ctx, work=slow).start()
    events = second.events(poll=0.05)
    assert next(events).message == "waiting for the render in progress to finish"
    assert started == ["first"]
    second.cancel()
    assert next(events).kind == "cancelled"
    release.set()
    assert [e.kind for e in _run(first)][-1] == "done"
    first.release()
    assert started == ["first"] and _jobs_left(ctx) == []


def test_cancel_stops_after_the_frame_in_flight(ctx):
    """Cancel pressed while the first of three frames renders: that frame finishes, no other starts."""
    request = RenderRequest(SHEET_SOURCES[0], (), POSE_SOURCES[0], (), sample_frames=3, size=SIZE, engine="eager")
    job = Job(request, ctx).start()
    events = []
    for event in job.events():
        events.append(event)
        if event.kind == "status" and event.message.startswith("rendering"):
            job.cancel()
    assert [e.kind for e in events].count("frame") == 1
    assert events[-1].kind == "cancelled" and events[-1].message == "cancelled after 1 of 3 frames"
    assert job.wait(30) and _jobs_left(ctx) == []  # a cancelled job removes its own folder


# --------------------------------------------------------------------------------------------------- parity


# The parity tab's function run in a child process on the same folders (printing what it returns as JSON): its
# verify run builds a float32 and a float64 model pair (~4.5 GB) that would otherwise sit on top of the session's
# models in the pytest process.
_PARITY_CHILD = """
import json, sys
from pathlib import Path
from conr_app.web.context import AppContext
from conr_app.web.parity import run_parity
weights, work, uploads, torch_dir, folder = map(Path, sys.argv[1:])
report, picture, verdict = run_parity(AppContext(weights, work, uploads, torch_dir=torch_dir), folder, views=1)
print(json.dumps({"passed": report["passed"], "picture": str(picture), "verdict": verdict}))
"""


def _run_parity_in_child(ctx: AppContext, folder: Path) -> tuple[dict, Path, str]:
    """`run_parity(ctx, folder, views=1)` in a child Python: (the report's `passed` field, picture, verdict)."""
    from parity_tests.harness import ROOT, child_env

    args = [str(p) for p in (ctx.weights_dir, ctx.work_root, ctx.upload_root, ctx.torch_dir, folder)]
    proc = subprocess.run([sys.executable, "-c", _PARITY_CHILD, *args], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"passed": out["passed"]}, Path(out["picture"]), out["verdict"]


def test_parity_tab_function(ctx):
    """`convert verify` on the loaded weights at 128 px (one view here to keep the suite short): PASS, a picture."""
    folder = ctx.new_job_folder()
    report, picture, verdict = _run_parity_in_child(ctx, folder)
    assert report["passed"] and verdict.startswith("PASS: ")
    assert "against the float64 truth" in verdict
    image = cv2.imread(str(picture))
    assert image is not None and image.shape[0] > 200
    shutil.rmtree(folder)


def test_page_says_when_weights_are_seeded(ctx, monkeypatch):
    # as the server does: Gradio (read at its import) keeps its files in the app's own folder, and sends nothing
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(ctx.upload_root))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from conr_app.web.app import build_app

    ctx.seeded = True
    text = str(build_app(ctx).config)
    assert "seeded random weights" in text and "sheet-files" in text and "parity-button" in text


# --------------------------------------------------------------------------------------------------- server


def test_the_serve_command_takes_its_flags():
    """`python -m conr_app serve` (= `conr-paddle serve`, `make serve`) is the web app's one front door (issue 24
    removed `python -m conr_web`, whose front door imported the command line drawn above it): its help lists every
    flag, and the web package has no second entry point."""
    proc = subprocess.run([sys.executable, "-m", "conr_app", "serve", "--help"], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--weights", "--torch-weights", "--host", "--port", "--cache-dir"):
        assert flag in proc.stdout, flag
    assert not (Path(__file__).resolve().parent.parent / "conr_app" / "web" / "__main__.py").exists()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(pdparams_dir, weights_dir, tmp_path_factory):
    """`python -m conr_app serve` in a subprocess on a free port of 127.0.0.1; stopped with SIGTERM."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve_log") / "serve.log"
    env = dict(os.environ, OMP_NUM_THREADS="2", CONR_PADDLE_CACHE=str(tmp_path_factory.mktemp("serve_cache")))
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "conr_app", "serve", "--weights", str(pdparams_dir),
                                 "--torch-weights", str(weights_dir), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}/"
    page = None
    while time.perf_counter() - t0 < 180 and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                page = (response.status, response.read().decode("utf-8", "replace"))
                break
        except OSError:
            time.sleep(0.5)
    startup = time.perf_counter() - t0
    try:
        assert page is not None, f"server did not answer: {log.read_text()[-3000:]}"
        yield {"url": url, "page": page, "startup_s": startup, "log": log, "proc": proc}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_server_serves_the_page_on_loopback(server):
    status, html = server["page"]
    assert status == 200 and "CoNR in PaddlePaddle" in html
    # the page can answer a moment before the server prints its ready line (it prints after launch() returns)
    deadline = time.perf_counter() + 30
    while "ready in" not in server["log"].read_text() and time.perf_counter() < deadline:
        time.sleep(0.2)
    log = server["log"].read_text()
    assert "ready in" in log and server["url"].rstrip("/") in log
    print(f"\nserver: page answered {server['startup_s']:.1f} s after the process started")
    # bound to 127.0.0.1 only: another local address of this machine is refused
    port = int(server["url"].rsplit(":", 1)[1].strip("/"))
    others = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
    for address in sorted(others)[:1]:
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((address, port)) != 0, f"server reachable on {address}"


def _browser_or_skip():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no headless browser: Debian's chromium and chromium-driver are not installed "
                    "(.ci/run installs them with apt-get where it can)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1400"):
        options.add_argument(arg)
    try:
        return webdriver.Chrome(service=Service(driver), options=options)
    except Exception as e:  # noqa: BLE001 - a browser that cannot start is a reason to skip, said in one line
        pytest.skip(f"headless chromium did not start: {' '.join(str(e).split())[:200]}")


def test_browser_uploads_the_sample_and_plays_the_video(server, samples, tmp_path):
    """Headless chromium: a bad view shows one error line; the four sample views and one sample pose uploaded,
    eager at 128 px, one frame rendered; the MP4 plays in the page and the WebM and zip are offered."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    if server["proc"].poll() is not None:
        pytest.fail("server stopped before the browser test")
    driver = _browser_or_skip()
    try:
        wait = WebDriverWait(driver, 60, poll_frequency=0.25)
        driver.get(server["url"])
        sheet_input = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#sheet-files input[type=file]"))

        # a bad upload: one line on the page
        sheet_input.send_keys(str(_opaque_png(tmp_path / "opaque.png")))
        wait.until(lambda d: "opaque" in d.find_element(By.ID, "sheet-check").text)
        text = driver.find_element(By.ID, "sheet-check").text.strip()
        assert text.startswith("error: opaque.png is 95% or more opaque") and "\n" not in text, text
        driver.find_element(By.CSS_SELECTOR, "#sheet-files button[aria-label='Clear']").click()

        views = sorted(samples.character_sheet.glob("*.png"))
        sheet_input = driver.find_element(By.CSS_SELECTOR, "#sheet-files input[type=file]")
        sheet_input.send_keys("\n".join(str(p) for p in views))
        wait.until(lambda d: d.find_element(By.ID, "sheet-check").text.count(": ok") == len(views))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#sheet-thumbs img")) == len(views)
        driver.find_element(By.CSS_SELECTOR, "#pose-files input[type=file]").send_keys(str(samples.poses / "0.npz"))
        wait.until(lambda d: "1 UDP poses: ok" in d.find_element(By.ID, "pose-check").text)

        driver.find_element(By.CSS_SELECTOR, "#engine input[value='eager']").click()
        size = driver.find_element(By.CSS_SELECTOR, "#size input")
        size.click()
        size.send_keys(Keys.CONTROL, "a")
        size.send_keys(str(SIZE), Keys.ENTER)
        assert size.get_attribute("value") == str(SIZE)

        t0 = time.perf_counter()
        driver.find_element(By.ID, "render-button").click()
        long_wait = WebDriverWait(driver, 300, poll_frequency=0.25)
        video = long_wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#result-mp4 video"))
        long_wait.until(lambda d: d.execute_script("return arguments[0].readyState", video) >= 1)
        seconds = time.perf_counter() - t0
        duration = driver.execute_script("return arguments[0].duration", video)
        assert duration and duration > 0
        assert driver.find_elements(By.CSS_SELECTOR, "#result-webm video")
        assert driver.find_elements(By.CSS_SELECTOR, "#frames img")
        links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#frames-zip a")]
        zips = [href for href in links if href and href.endswith("frames.zip")]
        assert zips, links
        with urllib.request.urlopen(zips[0], timeout=30) as response:  # the download link works
            with zipfile.ZipFile(io.BytesIO(response.read())) as z:
                assert z.namelist() == ["frames/00000.png"]
        status = driver.find_element(By.ID, "status").text
        assert "done: 1 frame(s) at 128 px" in status, status
        print(f"\nbrowser: one 128 px frame (4 views, eager, model load included) played {seconds:.1f} s after "
              f"the click; {status}")
    finally:
        driver.quit()


def test_server_stops_cleanly_and_removes_its_files(server):
    """Runs after the browser test (module order): SIGTERM ends it with status 0 and no temporary files."""
    log = server["log"].read_text()
    work = next(line.split(": ", 1)[1].split(" (")[0] for line in log.splitlines()
                if line.startswith("temporary files: "))
    assert Path(work).is_dir()
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert not Path(work).exists()
