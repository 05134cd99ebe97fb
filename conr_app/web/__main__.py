"""`python -m conr_app.web [--weights DIR] [--torch-weights DIR] [--host H] [--port P] [--cache-dir DIR]`: the web app,
the same command as `python -m conr_app serve` (same flags, exit statuses and one-line errors)."""
from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from conr_app.cli import main as conr_paddle_main

    return conr_paddle_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
