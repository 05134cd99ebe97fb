"""The web app's answer to a request naming a file that was never uploaded (issue #23, finding 18): the one line
`stage_uploads` gives ("<name>: not a file uploaded to this server"), not Gradio's `{"error": null}`. Called
directly: the page's preprocessing step, as Gradio's queue calls it, and the function that finds the file."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest





def _file(path: Path | str) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def test_never_uploaded_finds_the_first_foreign_file(web_ctx, tmp_path):
    from conr_app.web.uploads import never_uploaded

    uploaded = web_ctx.upload_root / "u0" / "view.png"
    uploaded.write_bytes(b"x")
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    assert never_uploaded([[_file(uploaded)], True], web_ctx.upload_root) is None
    assert never_uploaded([[_file(uploaded), _file(outside)]], web_ctx.upload_root) == \
        "secret.png: not a file uploaded to this server"
    assert never_uploaded([_file(web_ctx.upload_root / "u0" / "gone.png")], web_ctx.upload_root) == \
        "gone.png: not a file uploaded to this server"
    assert never_uploaded([_file(web_ctx.upload_root / ".." / "uploads" / ".." / "secret.png")],
                          web_ctx.upload_root) == "secret.png: not a file uploaded to this server"


@pytest.mark.slow  # importing Gradio and building the page: about 20 s on 2 cores
def test_page_answers_a_file_never_uploaded_with_its_own_line(web_ctx, tmp_path, monkeypatch):
    """What Gradio's queue runs before `check_views` is called: its refusal used to reach the browser and the API
    as `{"error": null}` (show_error is off, as it should be for internal errors)."""
    from gradio.context import LocalContext
    from gradio.utils import error_payload

    from conr_app.web.app import build_app

    app = build_app(web_ctx)
    monkeypatch.setattr(app, "has_launched", True)  # Gradio checks upload paths only in a launched app
    (check_views,) = [fn for fn in app.fns.values() if fn.name == "check_views"]
    outside = tmp_path / "passwd.png"
    outside.write_bytes(b"x")
    token = LocalContext.blocks.set(app)
    try:
        with pytest.raises(Exception) as info:
            asyncio.run(app.preprocess_data(check_views, [[_file(outside)]], None))
    finally:
        LocalContext.blocks.reset(token)
    answer = error_payload(info.value, show_error=False)
    assert answer["error"] == "passwd.png: not a file uploaded to this server", answer
