"""The local web app of the CoNR Paddle port (`python -m conr_web`, also `python -m conr_paddle serve`).

- `conr_web.serve`: the command (arguments, the server's private folder, start and stop);
- `conr_web.app`: the Gradio page (Gradio is imported there and nowhere else);
- `conr_web.jobs`: the work behind it (uploads, render jobs, parity reports), with no web framework.

It builds on `conr_paddle` (the renderer) and, for the parity tab, `convert.verify`; neither imports it (except
conr_paddle's command line front door, which dispatches `serve` here).
"""
