"""What every command line of the toolkit shares: one-line errors with exit status 2."""
from __future__ import annotations

import argparse

EXIT_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit status 2, like every other input error."""

    def error(self, message: str):
        self.exit(EXIT_INPUT, f"error: {message} (see {self.prog} --help)\n")


def one_line(text: object) -> str:
    """A message folded onto one line (an exception text may carry newlines)."""
    return " ".join(str(text).split())
