"""The local web app of the CoNR Paddle port (`python -m conr_web`, also `python -m conr_paddle serve`).

- `conr_web.serve`: the command (arguments, the server's private folder, start and stop);
- `conr_web.app`: the Gradio page (Gradio is imported there and nowhere else);
- the work behind it, with no web framework: `conr_web.context` (what the server holds: weights, work folder,
  the one-job lock, `Limits`), `conr_web.uploads` (staging and checking uploads, thumbnails), `conr_web.jobs`
  (the thread-based `Job` runner and the render job) and `conr_web.parity` (the parity job).

It builds on `conr_paddle` (the renderer) and, for the parity tab, `convert.verify`; neither imports it (except
conr_paddle's command line front door, which dispatches `serve` here).
"""
