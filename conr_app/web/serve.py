"""`python -m conr_app.web` = `python -m conr_app serve` (`make serve`): the local web app (conr_app.web.app) on
127.0.0.1:7860.

Without --weights the server builds (once, cached) the demo's seeded official-format weights and their Paddle
conversion, and the page says so. Everything the server writes while it runs (uploads, job folders, the sample,
Gradio's cache) lives in one private temporary folder, removed when it stops.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from conr_common.platform.errors import ConrInputError

__all__ = ["add_serve_arguments", "serve", "make_context", "run_serve_from_args", "DEFAULT_PORT", "SERVE_HELP",
           "SERVE_DESCRIPTION"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
SEEDED_FOLDER = "serve_seeded_weights"  # under the cache root: official/ and paddle/
SERVE_HELP = "local web app: upload a character sheet and poses, watch the animation render, download it"
SERVE_DESCRIPTION = (
    "Start the web app (Gradio) on http://127.0.0.1:7860: character sheet and poses uploaded or the built-in sample, "
    "a progress bar while frames render, MP4 + WebM with alpha + a zip of the frames, and a parity tab running "
    "`python -m convert verify`. Without --weights it uses the demo's seeded random weights. Ctrl-C stops it."
)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in 1..65535, got {text!r}")
    return value


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", type=Path,
                   help="folder with the four <network>.pdparams (default: the demo's seeded random weights)")
    p.add_argument("--torch-weights", type=Path,
                   help="the official .pth files of the same weights, for the parity tab (default: next to "
                   "--weights if there, else --weights converted back with paddle2torch)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--cache-dir", type=Path,
                   help="exported graphs and the seeded weights (default $CONR_PADDLE_CACHE or ~/.cache/conr_paddle)")


def _official_next_to(weights: Path) -> Path | None:
    """The official .pth folder of converted weights: the README's layout puts them in weights/ and the
    conversion in weights/paddle."""
    from conr_common.weights.checkpoints import holds_networks

    return next((folder for folder in (weights, weights.parent) if holds_networks(folder, "torch")), None)


def make_context(weights: Path | None, torch_weights: Path | None, cache_dir: Path | None, work_root: Path,
                 upload_root: Path):
    """The server's AppContext: the given weights, or the seeded ones built (once) under the cache."""
    from conr_engines.export.cache import cache_root

    from conr_app.web.context import AppContext

    seeded = weights is None
    if seeded:
        from conr_app.rendering.demo import prepare_weights

        root = cache_root(cache_dir) / SEEDED_FOLDER
        print(f"no --weights: using the demo's seeded random weights ({root}; built on first use)", flush=True)
        torch_weights, weights = prepare_weights(root)
    elif torch_weights is None:
        torch_weights = _official_next_to(Path(weights))
    if torch_weights is not None and _official_next_to(Path(torch_weights)) != Path(torch_weights):
        raise ConrInputError(f"--torch-weights {torch_weights}: needs the four official .pth files")
    return AppContext(Path(weights), work_root, upload_root, torch_dir=torch_weights, seeded=seeded,
                      cache_dir=cache_dir)


def serve(weights: Path | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
          torch_weights: Path | None = None, cache_dir: Path | None = None) -> int:
    """Start the web app and block until Ctrl-C; the private work folder is removed on the way out."""
    started = time.perf_counter()
    work_root = Path(tempfile.mkdtemp(prefix="conr-serve-"))
    try:
        upload_root = work_root / "gradio"
        # Gradio reads these when it is imported: uploads and its output cache go into our private folder
        os.environ["GRADIO_TEMP_DIR"] = str(upload_root)
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        ctx = make_context(weights, torch_weights, cache_dir, work_root, upload_root)
        from conr_app.web.app import build_app

        app = build_app(ctx)
        app.queue(default_concurrency_limit=1, max_size=32)
        if not _is_loopback(host):
            print(f"warning: listening on {host}: anyone who can reach this address can use the app", flush=True)
        try:
            app.launch(server_name=host, server_port=port, max_file_size=ctx.limits.max_file_bytes, share=False,
                       inbrowser=False, show_error=False, ssr_mode=False, quiet=True, prevent_thread_lock=True,
                       theme="default", css=_css())
        except OSError as e:  # Gradio says "Cannot find empty port" and names its own settings
            reason = "the port is in use" if "empty port" in str(e) else " ".join(str(e).split())
            raise ConrInputError(f"--host {host} --port {port}: cannot listen there ({reason}); "
                                 "choose another with --port") from e
        shown = f"[{host}]" if ":" in host else host
        print(f"temporary files: {work_root} (removed when the server stops)", flush=True)
        print(f"CoNR web app ready in {time.perf_counter() - started:.1f} s: http://{shown}:{port} "
              "(Ctrl-C to stop)", flush=True)
        previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)  # `kill` stops it as cleanly as Ctrl-C
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", flush=True)
        finally:
            signal.signal(signal.SIGTERM, previous)
            app.close()
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    return 0


def _stop_on_sigterm(signum: int, frame) -> None:
    raise KeyboardInterrupt


def _css() -> str:
    from conr_app.web.app import CSS

    return CSS


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve_from_args(args: argparse.Namespace) -> int:
    return serve(args.weights, args.host, args.port, torch_weights=args.torch_weights, cache_dir=args.cache_dir)

