"""The application (issue 24): the command line (`cli`, `python -m conr_app` = `conr-paddle`), the renderer and
what it writes (`rendering`: render, frames, video, resume, distributed runs, the demo) and the web app (`web`).
"""
