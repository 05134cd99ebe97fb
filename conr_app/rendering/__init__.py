"""Rendering: plan -> decode -> run -> write (`render`), frames, videos, resume, distributed runs, the demo."""
