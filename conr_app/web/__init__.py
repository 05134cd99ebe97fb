"""The local web app of the CoNR Paddle port (`python -m conr_app serve`).

- `conr_app.web.serve`: the command (arguments, the server's private folder, start and stop);
- `conr_app.web.app`: the Gradio page (Gradio is imported there and nowhere else);
- the work behind it, with no web framework: `conr_app.web.context` (what the server holds: weights, work folder,
  the one-job lock, `Limits`), `conr_app.web.uploads` (staging and checking uploads, thumbnails), `conr_app.web.jobs`
  (the thread-based `Job` runner and the render job) and `conr_app.web.parity` (the parity job).

It builds on `conr_app.rendering` (the renderer and the demo's seeded weights) and, for the parity tab,
`convert.verify`; neither imports it. The command line above it (`conr_app.cli`) dispatches `serve` here.
"""
